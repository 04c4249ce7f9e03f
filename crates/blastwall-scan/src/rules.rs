//! Rules as data: the secret formats the scanner knows, read from `catalog/secrets/*.toml`.
//!
//! Each rule has an id, a provider, a regex whose `secret` group (or first group, or whole match)
//! is the secret, prefilter keywords (one of which must appear in any match: the engine runs a
//! rule's regex only on text where an Aho-Corasick pass found one of its keywords), an optional
//! entropy floor, an optional structural [`Validator`], a severity, and positive and negative
//! examples. The built-in files are embedded at build time and every rule is checked when the set
//! is loaded, examples included: a bad rule stops the scanner with an error naming the rule.

mod keywords;
mod validate;

use std::collections::HashSet;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::error::ScanError;
use crate::finding::{Confidence, Severity};

#[cfg(test)]
pub(crate) use validate::crc32_base62;
pub(crate) use validate::{Validated, validate};
pub use validate::{Validator, is_placeholder, shannon_entropy};

/// The built-in rule files, embedded at build time: `(file name, TOML text)`.
pub const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    ("ai.toml", include_str!("../../../catalog/secrets/ai.toml")),
    (
        "blastwall.toml",
        include_str!("../../../catalog/secrets/blastwall.toml"),
    ),
    (
        "cloud.toml",
        include_str!("../../../catalog/secrets/cloud.toml"),
    ),
    (
        "databases.toml",
        include_str!("../../../catalog/secrets/databases.toml"),
    ),
    (
        "generic.toml",
        include_str!("../../../catalog/secrets/generic.toml"),
    ),
    (
        "hosting.toml",
        include_str!("../../../catalog/secrets/hosting.toml"),
    ),
    (
        "keys.toml",
        include_str!("../../../catalog/secrets/keys.toml"),
    ),
    (
        "messaging.toml",
        include_str!("../../../catalog/secrets/messaging.toml"),
    ),
    (
        "payments.toml",
        include_str!("../../../catalog/secrets/payments.toml"),
    ),
    (
        "source.toml",
        include_str!("../../../catalog/secrets/source.toml"),
    ),
    (
        "tools.toml",
        include_str!("../../../catalog/secrets/tools.toml"),
    ),
];

/// One rule as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id, `provider.kind` (`github.pat-classic`).
    pub id: String,
    /// Who issues the secret (`github`, `aws`).
    pub provider: String,
    /// A one-line human description.
    pub name: String,
    /// The regex (bytes, ASCII classes; Unicode mode off). The secret is the first group whose
    /// name starts with `secret` that took part in the match (`secret`, `secret2`, … for
    /// alternatives), else group 1 if present, else the whole match.
    pub regex: String,
    /// Prefilter keywords, lowercase; at least one appears in every match.
    pub keywords: Vec<String>,
    /// The severity of a finding.
    pub severity: Severity,
    /// Minimum Shannon entropy (bits per byte) of the secret.
    #[serde(default)]
    pub entropy: Option<f64>,
    /// A structural check the secret must pass.
    #[serde(default)]
    pub validator: Option<Validator>,
    /// Whether to look for this rule inside base64-encoded values too.
    #[serde(default)]
    pub base64: bool,
    /// Whether the global placeholder list applies (default yes).
    #[serde(default = "yes")]
    pub placeholders: bool,
    /// How far (bytes) from a keyword a match may reach; the regex runs only that close to
    /// keyword hits. Default 512; key blocks that run for kilobytes set more.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Texts that must produce a finding of this rule.
    pub examples: Vec<String>,
    /// Texts that must not.
    #[serde(default)]
    pub negative: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_window() -> usize {
    512
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

/// A checked, compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    spec: RuleSpec,
    regex: Regex,
    groups: Vec<usize>,
}

/// A match of one rule in a text, after placeholder, entropy and validator checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleMatch {
    /// Byte range of the secret in the text.
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) confidence: Confidence,
    pub(crate) validated: Validated,
}

impl Rule {
    /// Checks and compiles a rule.
    pub fn new(spec: RuleSpec) -> Result<Self, ScanError> {
        let bad = |message: String| ScanError::Rule {
            rule: spec.id.clone(),
            message,
        };
        let id_ok = !spec.id.is_empty()
            && spec
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !id_ok {
            return Err(bad(
                "id must be lowercase letters, digits, `.` and `-`".into()
            ));
        }
        if spec.keywords.is_empty() {
            return Err(bad("needs at least one prefilter keyword".into()));
        }
        for k in &spec.keywords {
            if k.len() < 2 || *k != k.to_ascii_lowercase() {
                return Err(bad(format!(
                    "keyword `{k}` must be lowercase and at least 2 bytes"
                )));
            }
        }
        if let Some(e) = spec.entropy
            && !(0.0..=8.0).contains(&e)
        {
            return Err(bad(format!("entropy floor {e} is outside 0..=8")));
        }
        if spec.examples.is_empty() {
            return Err(bad("needs at least one example".into()));
        }
        let regex = RegexBuilder::new(&spec.regex)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .map_err(|e| bad(format!("regex does not compile: {e}")))?;
        let mut groups: Vec<usize> = regex
            .capture_names()
            .enumerate()
            .filter(|(_, n)| n.is_some_and(|n| n.starts_with("secret")))
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            groups.push(usize::from(regex.captures_len() > 1));
        }
        let rule = Self {
            spec,
            regex,
            groups,
        };
        rule.check_examples()?;
        Ok(rule)
    }

    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The rule as written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Finds this rule's secrets in `text`, placeholders and low-entropy values excluded.
    pub(crate) fn find(&self, text: &[u8], out: &mut Vec<RuleMatch>) {
        self.find_in(text, 0, text.len(), out);
    }

    /// Finds this rule's secrets near keyword hits at `positions` (ascending): only the regions
    /// within [`RuleSpec::window`] bytes of a hit are searched, extended to the end of their line.
    pub(crate) fn find_near(&self, text: &[u8], positions: &[usize], out: &mut Vec<RuleMatch>) {
        let w = self.spec.window;
        let mut regions: Vec<(usize, usize)> = Vec::new();
        for &p in positions {
            let start = p.saturating_sub(w);
            let near_end = p.saturating_add(w).min(text.len());
            let far_end = near_end.saturating_add(w).min(text.len());
            let end = memchr::memchr(b'\n', text.get(near_end..far_end).unwrap_or(&[]))
                .map_or(far_end, |i| near_end + i);
            match regions.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => regions.push((start, end)),
            }
        }
        for (start, end) in regions {
            self.find_in(text, start, end, out);
        }
    }

    /// Matches starting in `start..end`; the bytes before `start` still count as context for
    /// `\b` and `^`.
    fn find_in(&self, text: &[u8], start: usize, end: usize, out: &mut Vec<RuleMatch>) {
        let hay = text.get(..end).unwrap_or(text);
        let mut pos = start;
        while pos <= hay.len() {
            let Some(caps) = self.regex.captures_at(hay, pos) else {
                break;
            };
            let Some(whole) = caps.get(0) else {
                break;
            };
            pos = if whole.end() > whole.start() {
                whole.end()
            } else {
                whole.end() + 1
            };
            let Some(m) = self
                .groups
                .iter()
                .find_map(|&g| caps.get(g))
                .or_else(|| caps.get(0))
            else {
                continue;
            };
            // A capture that starts or ends on a line break (a PEM body) is reported from its
            // first non-blank byte.
            let (mut start, mut end) = (m.start(), m.end());
            while start < end && text.get(start).is_some_and(u8::is_ascii_whitespace) {
                start += 1;
            }
            while end > start && text.get(end - 1).is_some_and(u8::is_ascii_whitespace) {
                end -= 1;
            }
            let Some(secret) = text.get(start..end) else {
                continue;
            };
            if let Some(found) = self.check(secret) {
                out.push(RuleMatch {
                    start,
                    end,
                    confidence: found.0,
                    validated: found.1,
                });
            }
        }
    }

    fn check(&self, secret: &[u8]) -> Option<(Confidence, Validated)> {
        if self.spec.placeholders && is_placeholder(secret) {
            return None;
        }
        if let Some(floor) = self.spec.entropy
            && shannon_entropy(secret) < floor
        {
            return None;
        }
        match self.spec.validator {
            Some(v) => {
                let validated = validate(v, secret)?;
                let confidence = if v.is_checksum() {
                    Confidence::Checksum
                } else if v.is_generic() {
                    Confidence::Entropy
                } else {
                    Confidence::Pattern
                };
                Some((confidence, validated))
            }
            None if self.spec.provider == "generic" => {
                Some((Confidence::Entropy, Validated::default()))
            }
            None => Some((Confidence::Pattern, Validated::default())),
        }
    }

    /// Runs the rule's own examples: each positive must match (and contain a keyword, or the
    /// prefilter would hide it), no negative may.
    fn check_examples(&self) -> Result<(), ScanError> {
        let bad = |message: String| ScanError::Rule {
            rule: self.spec.id.clone(),
            message,
        };
        for (i, ex) in self.spec.examples.iter().enumerate() {
            let lower = ex.to_ascii_lowercase();
            if !self
                .spec
                .keywords
                .iter()
                .any(|k| lower.contains(k.as_str()))
            {
                return Err(bad(format!(
                    "example {} contains none of the keywords",
                    i + 1
                )));
            }
            // Through the same path as a scan: only near keyword hits.
            let mut positions: Vec<usize> = self
                .spec
                .keywords
                .iter()
                .flat_map(|k| lower.match_indices(k.as_str()).map(|(p, _)| p))
                .collect();
            positions.sort_unstable();
            positions.dedup();
            let mut out = Vec::new();
            self.find_near(ex.as_bytes(), &positions, &mut out);
            if out.is_empty() {
                return Err(bad(format!("example {} does not match", i + 1)));
            }
        }
        for (i, ex) in self.spec.negative.iter().enumerate() {
            let mut out = Vec::new();
            self.find(ex.as_bytes(), &mut out);
            if !out.is_empty() {
                return Err(bad(format!("negative example {} matches", i + 1)));
            }
        }
        Ok(())
    }
}

/// The set of rules a scan uses, with its keyword prefilter.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    prefilter: keywords::KeywordSearcher,
    /// For each prefilter pattern, the rules it triggers (its own and those of the keywords it
    /// contains).
    keyword_rules: Vec<Vec<usize>>,
}

impl RuleSet {
    /// The built-in rules from `catalog/secrets/`, checked.
    pub fn builtin() -> Result<Self, ScanError> {
        Self::from_sources(BUILTIN_RULE_FILES.iter().copied())
    }

    /// Rules from `(file name, TOML text)` pairs, checked; ids must be unique across files.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ScanError> {
        let mut rules = Vec::new();
        let mut ids = HashSet::new();
        for (file, text) in sources {
            let parsed: RuleFile = toml::from_str(text).map_err(|e| ScanError::RuleFile {
                file: file.to_owned(),
                message: e.message().to_owned(),
            })?;
            for spec in parsed.rule {
                if !ids.insert(spec.id.clone()) {
                    return Err(ScanError::Rule {
                        rule: spec.id,
                        message: "duplicate id".into(),
                    });
                }
                rules.push(Rule::new(spec)?);
            }
        }
        Self::from_rules(rules)
    }

    /// A set from already checked rules.
    pub fn from_rules(rules: Vec<Rule>) -> Result<Self, ScanError> {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for k in &rule.spec.keywords {
                match keywords.iter().position(|x| x == k) {
                    Some(p) => {
                        if let Some(v) = keyword_rules.get_mut(p) {
                            v.push(i);
                        }
                    }
                    None => {
                        keywords.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        // A keyword found also stands for every keyword it contains ("db_password" for
        // "password"): a rule's search window is placed around where its keyword starts, so the
        // rules of "password" also search around the start of "db_password".
        let direct = keyword_rules.clone();
        for (i, k) in keywords.iter().enumerate() {
            for (j, other) in keywords.iter().enumerate() {
                if i != j && k.contains(other.as_str()) {
                    let extra = direct.get(j).cloned().unwrap_or_default();
                    if let Some(list) = keyword_rules.get_mut(i) {
                        list.extend(extra);
                        list.sort_unstable();
                        list.dedup();
                    }
                }
            }
        }
        let prefilter =
            keywords::KeywordSearcher::new(&keywords).map_err(|message| ScanError::Rule {
                rule: "prefilter".into(),
                message,
            })?;
        Ok(Self {
            rules,
            prefilter,
            keyword_rules,
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule at `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// For each rule, the offsets in `text` where one of its keywords starts (ascending; empty
    /// for rules whose keywords do not appear).
    ///
    /// Every occurrence of every keyword is found (overlapping ones too); a keyword found at a
    /// position also stands there for the shorter keywords it contains ("db_password" for
    /// "password"), as the rules' search windows are placed around keyword starts.
    pub(crate) fn keyword_hits(&self, text: &[u8]) -> Vec<Vec<usize>> {
        let mut found = Vec::new();
        self.prefilter.find_all(text, &mut found);
        found.sort_unstable();
        let mut hits: Vec<Vec<usize>> = vec![Vec::new(); self.rules.len()];
        for (start, keyword) in found {
            let rules = self
                .keyword_rules
                .get(keyword)
                .map_or(&[][..], Vec::as_slice);
            for &r in rules {
                if let Some(list) = hits.get_mut(r)
                    && list.last() != Some(&start)
                {
                    list.push(start);
                }
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_rules_load_and_their_examples_pass() {
        // Every rule on its own first, so that one run lists every failing rule.
        let mut failures = Vec::new();
        for (file, text) in BUILTIN_RULE_FILES {
            let parsed: RuleFile = toml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            for spec in parsed.rule {
                if let Err(e) = Rule::new(spec) {
                    failures.push(e.to_string());
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let set = RuleSet::builtin().unwrap();
        assert!(set.len() >= 60, "only {} rules", set.len());
    }

    #[test]
    fn a_bad_rule_is_an_error_naming_it() {
        let text = r#"
[[rule]]
id = "bad.regex"
provider = "x"
name = "x"
regex = "(unclosed"
keywords = ["xx"]
severity = "high"
examples = ["xx"]
"#;
        let err = RuleSet::from_sources([("t.toml", text)]).unwrap_err();
        assert!(err.to_string().contains("`bad.regex`"), "{err}");
    }

    #[test]
    fn a_failing_example_is_an_error() {
        let text = r#"
[[rule]]
id = "x.y"
provider = "x"
name = "x"
regex = 'xx_[0-9]{4}'
keywords = ["xx_"]
severity = "high"
examples = ["xx_12"]
"#;
        let err = RuleSet::from_sources([("t.toml", text)]).unwrap_err();
        assert!(
            err.to_string().contains("example 1 does not match"),
            "{err}"
        );
    }

    /// The prefilter as it was before the interleaved search: one leftmost-longest search per
    /// start position, the longest keyword there standing for those it contains.
    fn keyword_hits_reference(set: &RuleSet, text: &[u8]) -> Vec<Vec<usize>> {
        let mut keywords: Vec<&str> = Vec::new();
        for rule in set.rules() {
            for k in &rule.spec().keywords {
                if !keywords.contains(&k.as_str()) {
                    keywords.push(k);
                }
            }
        }
        let ac = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&keywords)
            .unwrap();
        let mut hits: Vec<Vec<usize>> = vec![Vec::new(); set.len()];
        let mut pos = 0;
        while let Some(m) = ac.find(aho_corasick::Input::new(text).span(pos..text.len())) {
            for &r in &set.keyword_rules[m.pattern().as_usize()] {
                if hits[r].last() != Some(&m.start()) {
                    hits[r].push(m.start());
                }
            }
            pos = m.start() + 1;
        }
        hits
    }

    /// The built-in set, built once for the property tests.
    fn builtin() -> &'static RuleSet {
        static SET: std::sync::LazyLock<RuleSet> =
            std::sync::LazyLock::new(|| RuleSet::builtin().unwrap());
        &SET
    }

    fn keyword_text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let set = builtin();
        let mut keywords: Vec<String> = set
            .rules()
            .iter()
            .flat_map(|r| r.spec().keywords.clone())
            .collect();
        keywords.sort_unstable();
        keywords.dedup();
        let piece = prop_oneof![
            (prop::sample::select(keywords), any::<bool>()).prop_map(|(k, upper)| {
                if upper { k.to_ascii_uppercase() } else { k }.into_bytes()
            }),
            proptest::collection::vec(any::<u8>(), 0..30),
            proptest::collection::vec(prop::sample::select(b"ab_=: \n-".to_vec()), 0..30),
        ];
        proptest::collection::vec(piece, 0..150).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #[test]
        fn keyword_hits_are_those_of_the_search_per_start_position(text in keyword_text()) {
            let set = builtin();
            proptest::prop_assert_eq!(set.keyword_hits(&text), keyword_hits_reference(set, &text));
        }
    }

    #[test]
    fn prefilter_triggers_only_rules_with_keywords_present() {
        let set = RuleSet::builtin().unwrap();
        let hits = set.keyword_hits(b"nothing to see here at all");
        let on = hits.iter().filter(|h| !h.is_empty()).count();
        assert!(on < set.len() / 4, "{on}");
    }

    #[test]
    fn a_longer_keyword_also_triggers_the_keywords_it_contains() {
        let set = RuleSet::builtin().unwrap();
        let hits = set.keyword_hits(b"DB_PASSWORD=x");
        let id_of = |i: usize| set.rules()[i].id().to_owned();
        let on: Vec<String> = (0..set.len())
            .filter(|&i| !hits[i].is_empty())
            .map(id_of)
            .collect();
        assert!(on.contains(&"db.password-variable".to_owned()), "{on:?}");
        assert!(
            on.contains(&"generic.password-assignment".to_owned()),
            "{on:?}"
        );
    }
}
