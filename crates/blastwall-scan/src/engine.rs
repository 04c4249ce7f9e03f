//! The engine: runs the rules and the fingerprints over one buffer, in one pass, and merges what
//! overlaps into one hit per secret.
//!
//! For a buffer it (1) runs the Aho-Corasick keyword prefilter and then the regex of each rule
//! whose keyword appeared; (2) walks the buffer line by line, extracting fingerprint candidates
//! (token runs, assignment values, quoted strings, URL passwords) and testing them against every
//! loaded wall file; (3) decodes base64 runs and scans the decoded text again with the rules that
//! ask for it, and the fingerprints. Offsets in hits are offsets in the buffer; the callers map
//! them to lines, variables or processes.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use blastwall_core::Tier;
use sha2::{Digest, Sha256};

use crate::finding::{Confidence, Severity, redact};
use crate::fingerprint::{MAX_SECRET_LEN, MIN_SECRET_LEN, WallFile, tier_of_env};
use crate::rules::{RuleMatch, RuleSet, Validator};

/// Base64 runs shorter than this are not decoded.
const MIN_BASE64_RUN: usize = 24;

/// One secret found in a buffer.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// Byte range of the value in the buffer (of the encoded run, for a base64-wrapped value).
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Index of the rule in the rule set, `None` for a fingerprint-only hit.
    pub(crate) rule: Option<usize>,
    pub(crate) confidence: Confidence,
    pub(crate) severity: Severity,
    pub(crate) wall_env: Option<String>,
    pub(crate) token_env: Option<String>,
    pub(crate) encoding: Option<&'static str>,
    /// Redacted prefix of the (decoded) value.
    pub(crate) redacted: String,
    /// SHA-256 of the (decoded) value, for the finding's identity.
    pub(crate) digest: [u8; 32],
}

/// Rules plus wall files, ready to scan buffers.
pub(crate) struct Engine<'a> {
    rules: &'a RuleSet,
    walls: &'a [WallFile],
    any_base64_rule: bool,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(rules: &'a RuleSet, walls: &'a [WallFile]) -> Self {
        let any_base64_rule = rules.rules().iter().any(|r| r.spec().base64);
        Self {
            rules,
            walls,
            any_base64_rule,
        }
    }

    /// Every secret in `text`, one hit per secret, sorted by offset.
    pub(crate) fn scan(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.scan_into(text, 0, &mut hits);
        merge(hits, self.rules)
    }

    fn scan_into(&self, text: &[u8], depth: u32, hits: &mut Vec<Hit>) {
        let mut matches: Vec<RuleMatch> = Vec::new();
        for (index, positions) in self.rules.keyword_hits(text).iter().enumerate() {
            if positions.is_empty() {
                continue;
            }
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            if depth > 0 && !rule.spec().base64 {
                continue;
            }
            matches.clear();
            rule.find_near(text, positions, &mut matches);
            for m in matches.drain(..) {
                let Some(value) = text.get(m.start..m.end) else {
                    continue;
                };
                hits.push(self.rule_hit(index, m, value));
            }
        }
        let want_fp = !self.walls.is_empty();
        let want_b64 = depth == 0 && self.any_base64_rule;
        if !want_fp && !want_b64 {
            return;
        }
        if want_fp {
            let mut spans = Vec::new();
            for (start, end) in lines(text) {
                let Some(line) = text.get(start..end) else {
                    continue;
                };
                spans.clear();
                line_candidates(line, &mut spans);
                spans.sort_unstable();
                spans.dedup();
                for &(s, e) in &spans {
                    if let Some(value) = line.get(s..e) {
                        self.test_fingerprints(value, start + s, start + e, hits);
                    }
                }
            }
        }
        if want_b64 {
            for (s, e) in base64_runs(text) {
                let Some(run) = text.get(s..e) else {
                    continue;
                };
                let Some(decoded) = decode_base64_text(run) else {
                    continue;
                };
                let mut inner = Vec::new();
                self.scan_into(&decoded, depth + 1, &mut inner);
                for mut h in inner {
                    h.start = s;
                    h.end = e;
                    h.encoding = Some("base64");
                    hits.push(h);
                }
            }
        }
    }

    fn rule_hit(&self, index: usize, m: RuleMatch, value: &[u8]) -> Hit {
        let rule_severity = self
            .rules
            .get(index)
            .map_or(Severity::Medium, |r| r.spec().severity);
        let is_blastwall = self
            .rules
            .get(index)
            .is_some_and(|r| r.spec().validator == Some(Validator::Blastwall));
        let mut hit = Hit {
            start: m.start,
            end: m.end,
            rule: Some(index),
            confidence: m.confidence,
            severity: rule_severity,
            wall_env: None,
            token_env: m.validated.token_env.clone(),
            encoding: None,
            redacted: redact(value),
            digest: Sha256::digest(value).into(),
        };
        if let Some(env) = &m.validated.token_env
            && tier_of_env(env, self.walls) == Tier::Prod
        {
            hit.severity = Severity::Critical;
        }
        if is_blastwall && let Some(wall) = self.walls.iter().find(|w| w.matches_token(value)) {
            hit.confidence = Confidence::Fingerprint;
            hit.wall_env = Some(wall.env().as_str().to_owned());
            hit.severity = hit.severity.max(wall_severity(wall));
        }
        hit
    }

    fn test_fingerprints(&self, value: &[u8], start: usize, end: usize, hits: &mut Vec<Hit>) {
        let decoded = percent_decode(value);
        for wall in self.walls {
            let matched = wall.matches_secret(value)
                || decoded.as_deref().is_some_and(|d| wall.matches_secret(d));
            if matched {
                hits.push(Hit {
                    start,
                    end,
                    rule: None,
                    confidence: Confidence::Fingerprint,
                    severity: wall_severity(wall),
                    wall_env: Some(wall.env().as_str().to_owned()),
                    token_env: None,
                    encoding: None,
                    redacted: redact(value),
                    digest: Sha256::digest(value).into(),
                });
            }
        }
    }
}

/// A fingerprint of a prod-tier wall is critical; of another tier, high.
fn wall_severity(wall: &WallFile) -> Severity {
    match wall.tier() {
        Tier::Prod => Severity::Critical,
        Tier::Nonprod => Severity::High,
    }
}

/// Merges hits whose ranges overlap into one: the highest severity, fingerprint confidence if any
/// fingerprint matched, and the most specific rule.
fn merge(mut hits: Vec<Hit>, rules: &RuleSet) -> Vec<Hit> {
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
    let mut group_end = 0;
    for h in hits {
        match out.last_mut() {
            Some(last) if h.start < group_end => {
                group_end = group_end.max(h.end);
                combine(last, h, rules);
            }
            _ => {
                group_end = h.end;
                out.push(h);
            }
        }
    }
    out
}

fn rank(h: &Hit, rules: &RuleSet) -> (bool, bool, Severity, Confidence) {
    let rule = h.rule.and_then(|i| rules.get(i));
    let has_rule = rule.is_some();
    let specific = rule.is_some_and(|r| r.spec().provider != "generic");
    (has_rule, specific, h.severity, h.confidence)
}

fn combine(keep: &mut Hit, other: Hit, rules: &RuleSet) {
    let severity = keep.severity.max(other.severity);
    let fingerprint =
        keep.confidence == Confidence::Fingerprint || other.confidence == Confidence::Fingerprint;
    let wall_env = keep.wall_env.take().or_else(|| other.wall_env.clone());
    let token_env = keep.token_env.take().or_else(|| other.token_env.clone());
    if rank(&other, rules) > rank(keep, rules) {
        *keep = other;
    }
    keep.severity = severity;
    keep.wall_env = wall_env;
    keep.token_env = token_env;
    if fingerprint {
        keep.confidence = Confidence::Fingerprint;
    }
}

/// `(start, end)` of each line of `text`, without the line break.
pub(crate) fn lines(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let start = pos;
        let end = memchr::memchr(b'\n', text.get(start..).unwrap_or(&[]))
            .map_or(text.len(), |i| start + i);
        pos = end + 1;
        let trimmed = if end > start && text.get(end - 1) == Some(&b'\r') {
            end - 1
        } else {
            end
        };
        Some((start, trimmed))
    })
}

fn is_field_break(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`')
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=' | b'.' | b'~')
}

fn is_word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

fn push_span(line: &[u8], s: usize, e: usize, out: &mut Vec<(usize, usize)>) {
    // Trim punctuation that closes or separates values, but is rarely part of them.
    let mut s = s;
    let mut e = e;
    while s < e && matches!(line.get(s), Some(b'(' | b'[' | b'{' | b'<')) {
        s += 1;
    }
    while e > s
        && matches!(
            line.get(e - 1),
            Some(b',' | b';' | b')' | b']' | b'}' | b'>')
        )
    {
        e -= 1;
    }
    let len = e - s;
    if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        out.push((s, e));
    }
}

/// Runs of bytes in `line` for which `keep` holds, as `(start, end)`.
fn runs<F: Fn(u8) -> bool>(
    line: &[u8],
    keep: F,
) -> impl Iterator<Item = (usize, usize)> + use<'_, F> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < line.len() && !line.get(pos).is_some_and(|&b| keep(b)) {
            pos += 1;
        }
        if pos >= line.len() {
            return None;
        }
        let start = pos;
        while pos < line.len() && line.get(pos).is_some_and(|&b| keep(b)) {
            pos += 1;
        }
        Some((start, pos))
    })
}

/// The fingerprint candidates of one line: whitespace- and quote-separated fields; the value after
/// the first `=` or `:` of a field; the password of a URL's userinfo; runs of token characters and
/// of word characters; quoted strings; and the value of an assignment up to the end of the line.
fn line_candidates(line: &[u8], out: &mut Vec<(usize, usize)>) {
    for (fs, fe) in runs(line, |b| !is_field_break(b)) {
        push_span(line, fs, fe, out);
        let field = line.get(fs..fe).unwrap_or(&[]);
        if let Some(p) = field.iter().position(|&b| b == b'=' || b == b':') {
            push_span(line, fs + p + 1, fe, out);
        }
        if let Some(scheme) = memchr::memmem::find(field, b"://") {
            let after = scheme + 3;
            let rest = field.get(after..).unwrap_or(&[]);
            if let Some(at) = rest.iter().position(|&b| b == b'@') {
                let userinfo = rest.get(..at).unwrap_or(&[]);
                if let Some(colon) = userinfo.iter().position(|&b| b == b':') {
                    push_span(line, fs + after + colon + 1, fs + after + at, out);
                }
            }
        }
        for (s, e) in runs(field, is_token_char) {
            push_span(line, fs + s, fs + e, out);
        }
        for (s, e) in runs(field, is_word_char) {
            push_span(line, fs + s, fs + e, out);
        }
    }
    // Quoted strings, which may hold spaces (passphrases).
    let mut i = 0;
    while i < line.len() {
        let q = line.get(i).copied().unwrap_or(0);
        if matches!(q, b'"' | b'\'')
            && let Some(close) = line
                .get(i + 1..)
                .and_then(|rest| rest.iter().position(|&b| b == q))
        {
            push_span(line, i + 1, i + 1 + close, out);
            i += close + 2;
            continue;
        }
        i += 1;
    }
    // The value of `key = value with spaces` / `key: value` to the end of the line.
    if let Some(p) = line.iter().position(|&b| b == b'=' || b == b':') {
        let mut s = p + 1;
        let mut e = line.len();
        while s < e
            && line
                .get(s)
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\'')
        {
            s += 1;
        }
        while e > s
            && line
                .get(e - 1)
                .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b';' | b','))
        {
            e -= 1;
        }
        push_span(line, s, e, out);
    }
}

/// `%XX`-decoded `value`, if it has any escape.
fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    if !value.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value.get(i).copied().unwrap_or(0);
        if b == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(n) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which bytes are base64 (standard or URL-safe) characters.
const BASE64_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-');
        i += 1;
    }
    t
};

/// Runs of base64 (standard or URL-safe) characters long enough to be worth decoding.
///
/// Probes one byte in every [`MIN_BASE64_RUN`]: a long enough run must cover a probe, so only
/// the neighbourhood of probes that land on a base64 character is looked at byte by byte.
fn base64_runs(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_b64 = |i: usize| text.get(i).is_some_and(|&b| BASE64_CHAR[usize::from(b)]);
    let mut probe = MIN_BASE64_RUN - 1;
    std::iter::from_fn(move || {
        while probe < text.len() {
            if !is_b64(probe) {
                probe += MIN_BASE64_RUN;
                continue;
            }
            let mut start = probe;
            while start > 0 && is_b64(start - 1) {
                start -= 1;
            }
            let mut end = probe + 1;
            while is_b64(end) {
                end += 1;
            }
            probe = end + MIN_BASE64_RUN;
            if end - start >= MIN_BASE64_RUN {
                return Some((start, end));
            }
        }
        None
    })
}

/// The decoded text of a base64 run, if it decodes to mostly printable text.
fn decode_base64_text(run: &[u8]) -> Option<Vec<u8>> {
    let url = run.iter().any(|&b| b == b'-' || b == b'_');
    let run: Cow<'_, [u8]> = if run.contains(&b'=') {
        // Padding only at the end; a `=` inside means this is not one base64 value.
        let trimmed = run
            .iter()
            .rposition(|&b| b != b'=')
            .map_or(&run[..0], |p| run.get(..=p).unwrap_or(&[]));
        if trimmed.contains(&b'=') {
            return None;
        }
        Cow::Borrowed(trimmed)
    } else {
        Cow::Borrowed(run)
    };
    let decoded = if url {
        B64URL.decode(run.as_ref()).ok()?
    } else {
        B64.decode(run.as_ref()).ok()?
    };
    if decoded.len() < 12 {
        return None;
    }
    let printable = decoded
        .iter()
        .filter(|&&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    (printable * 100 >= decoded.len() * 95).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use blastwall_core::EnvName;

    use super::*;
    use crate::rules::crc32_base62;

    fn gh_token() -> String {
        let random = "Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY";
        let sum = crc32_base62(random.as_bytes());
        format!("ghp_{random}{}", std::str::from_utf8(&sum).unwrap())
    }

    fn rule_ids(rules: &RuleSet, hits: &[Hit]) -> Vec<String> {
        hits.iter()
            .map(|h| {
                h.rule
                    .and_then(|i| rules.get(i))
                    .map_or("wall.fingerprint".to_owned(), |r| r.id().to_owned())
            })
            .collect()
    }

    #[test]
    fn a_github_token_in_an_assignment_is_one_checksum_hit() {
        let rules = RuleSet::builtin().unwrap();
        let engine = Engine::new(&rules, &[]);
        let text = format!("GITHUB_TOKEN={}\n", gh_token());
        let hits = engine.scan(text.as_bytes());
        assert_eq!(rule_ids(&rules, &hits), ["github.pat-classic"]);
        assert_eq!(hits[0].confidence, Confidence::Checksum);
        assert_eq!(hits[0].redacted, "ghp_Qx***");
    }

    #[test]
    fn a_base64_wrapped_token_is_found() {
        let rules = RuleSet::builtin().unwrap();
        let engine = Engine::new(&rules, &[]);
        let wrapped = STANDARD.encode(format!("token={}", gh_token()));
        let text = format!("data:\n  token: {wrapped}\n");
        let hits = engine.scan(text.as_bytes());
        let ids = rule_ids(&rules, &hits);
        assert!(ids.contains(&"github.pat-classic".to_owned()), "{ids:?}");
        let h = hits.iter().find(|h| h.encoding == Some("base64")).unwrap();
        assert_eq!(&text.as_bytes()[h.start..h.end], wrapped.as_bytes());
    }

    #[test]
    fn a_fingerprinted_secret_with_no_format_is_critical() {
        let rules = RuleSet::builtin().unwrap();
        let env = EnvName::new("production").unwrap();
        let secret: &[u8] = b"pl41n-pr0d-s3cret-with-no-format";
        let walls = [WallFile::build(&env, Tier::Prod, [secret]).unwrap()];
        let engine = Engine::new(&rules, &walls);
        for text in [
            "notes: pl41n-pr0d-s3cret-with-no-format",
            "x = \"pl41n-pr0d-s3cret-with-no-format\";",
            "postgres://app:pl41n-pr0d-s3cret-with-no-format@db/app",
            "psql --password pl41n-pr0d-s3cret-with-no-format",
        ] {
            let hits = engine.scan(text.as_bytes());
            assert_eq!(hits.len(), 1, "{text}: {hits:?}");
            assert_eq!(hits[0].confidence, Confidence::Fingerprint, "{text}");
            assert_eq!(hits[0].severity, Severity::Critical, "{text}");
            assert_eq!(hits[0].wall_env.as_deref(), Some("production"));
        }
        assert!(engine.scan(b"pl41n-pr0d-s3cret-with-no-formaT").is_empty());
    }

    #[test]
    fn a_prod_blastwall_token_is_critical_and_a_staging_one_high() {
        let rules = RuleSet::builtin().unwrap();
        let engine = Engine::new(&rules, &[]);
        let make = |env: &str| {
            let body = format!("bwt_{env}_Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY");
            let sum = blastwall_core::token::base62_checksum(body.as_bytes());
            format!("{body}_{sum}")
        };
        let prod = engine.scan(make("production").as_bytes());
        assert_eq!(prod[0].severity, Severity::Critical);
        assert_eq!(prod[0].token_env.as_deref(), Some("production"));
        let staging = engine.scan(make("staging").as_bytes());
        assert_eq!(staging[0].severity, Severity::High);
    }

    #[test]
    fn base64_runs_are_found_wherever_they_sit() {
        let run = "QmFzZTY0IHJ1biBvZiBzb21lIGxlbmd0aA==";
        for pad in 0..30 {
            let text = format!("{}{run} tail", " ".repeat(pad));
            let runs: Vec<(usize, usize)> = base64_runs(text.as_bytes()).collect();
            assert_eq!(runs, [(pad, pad + run.len())], "pad {pad}");
        }
        let short = "a b c QmFzZTY0IHJ1biBvZ short words only";
        assert_eq!(base64_runs(short.as_bytes()).count(), 0);
    }

    #[test]
    fn candidates_include_url_passwords_and_quoted_phrases() {
        let mut spans = Vec::new();
        let line = br#"url = "https://u:p4ssw0rd-xyz@h/x"; say 'correct horse battery'"#;
        line_candidates(line, &mut spans);
        let texts: Vec<&[u8]> = spans.iter().map(|&(s, e)| &line[s..e]).collect();
        assert!(texts.contains(&&b"p4ssw0rd-xyz"[..]), "{texts:?}");
        assert!(texts.contains(&&b"correct horse battery"[..]));
    }
}
