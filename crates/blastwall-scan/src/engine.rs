//! The engine: runs the rules and the fingerprints over one buffer, in one pass, and merges what
//! overlaps into one hit per secret.
//!
//! For a buffer it (1) runs the Aho-Corasick keyword prefilter and then the regex of each rule
//! whose keyword appeared; (2) extracts the buffer's fingerprint candidates (token runs, assignment
//! values, quoted strings, URL passwords: see [`candidates`]) and tests them against every loaded
//! wall file; (3) decodes base64 runs and scans the decoded text again with the rules that
//! ask for it, and the fingerprints. Offsets in hits are offsets in the buffer; the callers map
//! them to lines, variables or processes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use blastwall_core::Tier;
use sha2::{Digest, Sha256};

use crate::finding::{Confidence, Severity, redact};
use crate::fingerprint::{MAX_SECRET_LEN, WallFile, tier_of_env};
use crate::rules::{RuleMatch, RuleSet, Validator};

mod candidates;

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
    /// The candidate lengths worth testing: the union of the wall files' lengths.
    lengths: LengthSet,
    /// This engine's identity, for the per-thread caches of strings that matched none of its
    /// walls.
    id: u64,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(rules: &'a RuleSet, walls: &'a [WallFile]) -> Self {
        let any_base64_rule = rules.rules().iter().any(|r| r.spec().base64);
        let mut lengths = LengthSet::default();
        for wall in walls {
            lengths.extend(wall);
        }
        Self {
            rules,
            walls,
            any_base64_rule,
            lengths,
            id: ENGINE_IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Every secret in `text`, one hit per secret, sorted by offset.
    pub(crate) fn scan(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.scan_into(text, 0, &mut hits);
        merge(hits, self.rules)
    }

    /// [`Engine::scan`], with each of `values` (byte ranges of `text`: an environment
    /// variable's value, a command-line argument) also a fingerprint candidate as it is, whatever
    /// it starts or ends with: a value is a whole secret more often than any substring.
    pub(crate) fn scan_with_values(&self, text: &[u8], values: &[(usize, usize)]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.scan_into(text, 0, &mut hits);
        if !self.walls.is_empty() {
            for &(s, e) in values {
                let Some(value) = text.get(s..e) else {
                    continue;
                };
                if self.lengths.contains(value.len()) || memchr::memchr(b'%', value).is_some() {
                    self.test_fingerprints(value, s, e, &mut hits);
                }
            }
        }
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
        // The base64 runs are found before any is decoded and scanned (which uses the same
        // thread's scratch again); with a wall file, in the candidates' pass.
        let mut runs = Vec::new();
        if want_fp {
            self.scan_fingerprints(text, want_b64.then_some(&mut runs), hits);
        } else {
            SEEN.with_borrow_mut(|slot| {
                let cache = slot.get_or_insert_with(Box::default);
                candidates::base64_runs(text, MIN_BASE64_RUN, &mut cache.maps, &mut runs);
            });
        }
        if want_b64 {
            let mut decoded = Vec::new();
            for (s, e) in runs
                .into_iter()
                .flat_map(|(s, e)| base64_values(text, s, e))
            {
                let Some(run) = text.get(s..e) else {
                    continue;
                };
                if !decode_base64_text(run, &mut decoded) {
                    continue;
                }
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

    /// Tests the fingerprint candidates of `text` against the wall files; finds the base64 runs
    /// of `text` into `runs` in the same pass when asked.
    fn scan_fingerprints(
        &self,
        text: &[u8],
        runs: Option<&mut Vec<(usize, usize)>>,
        hits: &mut Vec<Hit>,
    ) {
        SEEN.with_borrow_mut(|slot| {
            let cache = slot.get_or_insert_with(Box::default).for_engine(self.id);
            let mut spans = std::mem::take(&mut cache.spans);
            spans.clear();
            match runs {
                Some(runs) => candidates::candidates_and_base64_runs(
                    text,
                    &self.lengths,
                    MIN_BASE64_RUN,
                    &mut cache.maps,
                    &mut spans,
                    runs,
                ),
                None => candidates::candidates(text, &self.lengths, &mut cache.maps, &mut spans),
            }
            for &(s, e) in &spans {
                let Some(value) = text.get(s..e) else {
                    continue;
                };
                // Text repeats (identifiers, keys of a config file): a candidate that matched no
                // wall is not hashed again.
                if cache.candidates.contains(value) {
                    continue;
                }
                if !self.test_fingerprints(value, s, e, hits) {
                    cache.candidates.insert(value);
                }
            }
            cache.spans = spans;
        });
    }

    /// Tests one candidate (and its percent-decoded form) against every wall file; whether any
    /// matched.
    fn test_fingerprints(
        &self,
        value: &[u8],
        start: usize,
        end: usize,
        hits: &mut Vec<Hit>,
    ) -> bool {
        let decoded = percent_decode(value);
        let mut any = false;
        for wall in self.walls {
            let matched = wall.matches_secret(value)
                || decoded.as_deref().is_some_and(|d| wall.matches_secret(d));
            if matched {
                any = true;
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
        any
    }
}

/// Candidate lengths worth testing (a bitmap over `0..=MAX_SECRET_LEN`).
#[derive(Debug, Clone)]
struct LengthSet {
    on: Vec<bool>,
    min: usize,
    /// Whether candidates are also tested untrimmed (some listed secret starts or ends with a
    /// byte they are trimmed of).
    untrimmed: bool,
}

impl Default for LengthSet {
    fn default() -> Self {
        Self {
            on: vec![false; MAX_SECRET_LEN + 1],
            min: usize::MAX,
            untrimmed: false,
        }
    }
}

impl LengthSet {
    fn extend(&mut self, wall: &WallFile) {
        self.untrimmed |= wall.trimmed_ends();
        for (len, slot) in self.on.iter_mut().enumerate() {
            if wall.has_length(len) {
                *slot = true;
                self.min = self.min.min(len);
            }
        }
    }

    #[cfg(test)]
    fn insert(&mut self, len: usize) {
        if let Some(slot) = self.on.get_mut(len) {
            *slot = true;
            self.min = self.min.min(len);
        }
    }

    #[cfg(test)]
    fn all() -> Self {
        Self {
            on: vec![true; MAX_SECRET_LEN + 1],
            min: 0,
            untrimmed: true,
        }
    }

    /// Whether candidates must be tested untrimmed as well.
    fn untrimmed(&self) -> bool {
        self.untrimmed
    }

    #[cfg(test)]
    fn set_untrimmed(&mut self, on: bool) {
        self.untrimmed = on;
    }

    fn contains(&self, len: usize) -> bool {
        self.on.get(len).copied().unwrap_or(false)
    }

    /// The shortest length in the set (`usize::MAX` when empty).
    fn min(&self) -> usize {
        self.min
    }
}

/// Strings already tested against every wall without a match, per walker thread: a
/// direct-mapped table of `SLOTS` entries keyed by a fast hash, compared byte for byte (so a hash
/// collision costs an HMAC, never a miss, and no crafted input can make the scan skip a string it
/// has not tested). Strings longer than `MAX` bytes are not remembered. The hashes sit in an array
/// of their own, small enough to stay in the core's cache, so that a string not in the table
/// (most lookups) costs no miss in the larger array of bytes. The table's size is fixed, whatever
/// the size of the tree.
struct Seen<const SLOTS: usize, const MAX: usize> {
    /// The hash of each slot's string; 0 for an empty slot.
    tags: Vec<u64>,
    /// `SLOTS` strides of `MAX + 1` bytes: the length, then the string.
    bytes: Vec<u8>,
}

/// Candidates (32 KiB of hashes and 196 KiB of bytes per thread): identifiers and keys repeat.
type SeenCandidates = Seen<{ 1 << 12 }, 48>;
impl<const SLOTS: usize, const MAX: usize> Default for Seen<SLOTS, MAX> {
    fn default() -> Self {
        Self {
            tags: vec![0; SLOTS],
            bytes: vec![0; SLOTS * (MAX + 1)],
        }
    }
}

impl<const SLOTS: usize, const MAX: usize> Seen<SLOTS, MAX> {
    fn slot(value: &[u8]) -> (u64, usize) {
        // 0 marks an empty slot.
        let hash = fx_hash(value).max(1);
        // The high bits of a multiplicative hash are the well-mixed ones.
        (hash, (hash >> 40) as usize % SLOTS)
    }

    fn stride(&self, i: usize) -> Option<&[u8]> {
        self.bytes.get(i * (MAX + 1)..(i + 1) * (MAX + 1))
    }

    fn contains(&self, value: &[u8]) -> bool {
        if value.len() > MAX {
            return false;
        }
        let (hash, i) = Self::slot(value);
        self.tags.get(i) == Some(&hash)
            && self.stride(i).is_some_and(|s| {
                s.first().copied().map(usize::from) == Some(value.len())
                    && s.get(1..=value.len()) == Some(value)
            })
    }

    fn insert(&mut self, value: &[u8]) {
        if value.len() > MAX {
            return;
        }
        let (hash, i) = Self::slot(value);
        let Some(stride) = self.bytes.get_mut(i * (MAX + 1)..(i + 1) * (MAX + 1)) else {
            return;
        };
        if let Some((len, rest)) = stride.split_first_mut()
            && let Some(dst) = rest.get_mut(..value.len())
        {
            dst.copy_from_slice(value);
            // INVARIANT: value.len() <= MAX < 256.
            *len = value.len() as u8;
            if let Some(tag) = self.tags.get_mut(i) {
                *tag = hash;
            }
        }
    }

    fn clear(&mut self) {
        self.tags.fill(0);
    }
}

/// The per-thread caches of one engine. Another engine (other wall files) starts them afresh:
/// what matched no wall of one engine may match a wall of the next.
#[derive(Default)]
struct SeenCache {
    engine: u64,
    candidates: SeenCandidates,
    /// Scratch for the candidate extractor (not tied to an engine).
    maps: candidates::Bitmaps,
    spans: Vec<(usize, usize)>,
}

impl SeenCache {
    fn for_engine(&mut self, engine: u64) -> &mut Self {
        if self.engine != engine {
            self.candidates.clear();
            self.engine = engine;
        }
        self
    }
}

thread_local! {
    static SEEN: RefCell<Option<Box<SeenCache>>> = const { RefCell::new(None) };
}

/// Identities of engines, for [`SeenCache`]; 0 is no engine.
static ENGINE_IDS: AtomicU64 = AtomicU64::new(1);

/// A fast non-cryptographic hash (rustc's Fx hash, a word at a time) for the in-memory cache of
/// tested candidates; nothing it computes leaves the process.
fn fx_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let add = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
    // A whole word is one load; a shorter one is assembled in a register.
    let word = |c: &[u8]| match <[u8; 8]>::try_from(c) {
        Ok(w) => u64::from_le_bytes(w),
        Err(_) => c.iter().rev().fold(0, |a, &b| (a << 8) | u64::from(b)),
    };
    let mut hash = add(0, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        hash = add(hash, word(c));
    }
    if !chunks.remainder().is_empty() {
        // The last eight bytes, overlapping the previous word (the length is hashed already), so
        // that the tail is one load: a partial copy to the stack then a wide load stalls the CPU.
        let tail = match bytes.len().checked_sub(8) {
            Some(from) => bytes.get(from..).map_or(0, word),
            None => word(bytes),
        };
        hash = add(hash, tail);
    }
    hash
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

/// `%XX`-decoded `value`, if it has any escape.
fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    // Only a value with an escape has a decoded form.
    memchr::memchr(b'%', value)?;
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

/// The base64 values of the run `start..end`: split after a `=` that is followed by more base64
/// characters (`KEY=c2VjcmV0…` is a name and a value; `…==` at the end is padding), keeping the
/// parts of at least [`MIN_BASE64_RUN`] bytes.
fn base64_values(
    text: &[u8],
    start: usize,
    end: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = start;
    std::iter::from_fn(move || {
        while pos < end {
            let s = pos;
            let run = text.get(s..end).unwrap_or(&[]);
            let split = run
                .windows(2)
                .position(|w| w.first() == Some(&b'=') && w.get(1) != Some(&b'='));
            let e = split.map_or(end, |i| s + i + 1);
            pos = e;
            if e - s >= MIN_BASE64_RUN {
                return Some((s, e));
            }
        }
        None
    })
}

/// Whether a base64 value can decode to mostly printable text, judged without decoding: the first
/// character of each 4-character group holds the top 6 bits of a decoded byte, and those of a
/// printable byte (`\t`, `\n`, `\r`, `0x20..=0x7e`) are 2, 3 or 8..=31 (`C`, `D`, `I`..`Z`,
/// `a`..`f` in both alphabets). At most 5% of the decoded bytes may be unprintable (see
/// [`decode_base64_text`]), so at most 15% of the groups may start otherwise: this test never
/// refuses a value that decoding would accept, and refuses nearly every identifier.
fn plausible_base64_text(run: &[u8]) -> bool {
    let mut groups = 0usize;
    let mut bad = 0usize;
    for &c in run.iter().step_by(4) {
        if c == b'=' {
            break;
        }
        groups += 1;
        if !matches!(c, b'C' | b'D' | b'I'..=b'Z' | b'a'..=b'f') {
            bad += 1;
        }
    }
    bad * 100 <= groups * 15
}

/// Decodes a base64 run into `out` (cleared first); whether it decoded to mostly printable text.
fn decode_base64_text(run: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    // Padding only at the end; a `=` inside means this is not one base64 value.
    let run = match run.iter().rposition(|&b| b != b'=') {
        Some(p) => run.get(..=p).unwrap_or(&[]),
        None => return false,
    };
    // The cheap test first: it refuses nearly every run.
    if !plausible_base64_text(run) || run.contains(&b'=') {
        return false;
    }
    let url = run.iter().any(|&b| b == b'-' || b == b'_');
    let ok = if url {
        B64URL.decode_vec(run, out).is_ok()
    } else {
        B64.decode_vec(run, out).is_ok()
    };
    if !ok || out.len() < 12 {
        return false;
    }
    let printable = out
        .iter()
        .filter(|&&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    printable * 100 >= out.len() * 95
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
            let mut runs = Vec::new();
            candidates::base64_runs(
                text.as_bytes(),
                MIN_BASE64_RUN,
                &mut Default::default(),
                &mut runs,
            );
            assert_eq!(runs, [(pad, pad + run.len())], "pad {pad}");
        }
        let short = "a b c QmFzZTY0IHJ1biBvZ short words only";
        let mut runs = Vec::new();
        candidates::base64_runs(
            short.as_bytes(),
            MIN_BASE64_RUN,
            &mut Default::default(),
            &mut runs,
        );
        assert!(runs.is_empty());
    }

    #[test]
    fn candidates_include_url_passwords_and_quoted_phrases() {
        let mut spans = Vec::new();
        let line = br#"url = "https://u:p4ssw0rd-xyz@h/x"; say 'correct horse battery'"#;
        candidates::candidates(line, &LengthSet::all(), &mut Default::default(), &mut spans);
        let texts: Vec<&[u8]> = spans.iter().map(|&(s, e)| &line[s..e]).collect();
        assert!(texts.contains(&&b"p4ssw0rd-xyz"[..]), "{texts:?}");
        assert!(texts.contains(&&b"correct horse battery"[..]));
    }

    #[test]
    fn a_base64_value_after_a_name_is_decoded() {
        let rules = RuleSet::builtin().unwrap();
        let engine = Engine::new(&rules, &[]);
        let wrapped = STANDARD.encode(format!("token={}", gh_token()));
        let text = format!("CONFIG_B64={wrapped}\n");
        let hits = engine.scan(text.as_bytes());
        let h = hits.iter().find(|h| h.encoding == Some("base64")).unwrap();
        assert_eq!(&text.as_bytes()[h.start..h.end], wrapped.as_bytes());
        let values: Vec<(usize, usize)> = base64_values(b"a=bb==", 0, 6).collect();
        assert!(values.is_empty(), "{values:?}");
    }

    #[test]
    fn the_base64_precheck_never_refuses_what_decoding_accepts() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut buf = Vec::new();
        for round in 0..2000 {
            let len = 12 + (next() % 80) as usize;
            // Printable text, with an unprintable byte now and then.
            let text: Vec<u8> = (0..len)
                .map(|_| match next() % 40 {
                    0 => (next() % 256) as u8,
                    1 => b'\n',
                    _ => 0x20 + (next() % 95) as u8,
                })
                .collect();
            for encoded in [
                STANDARD.encode(&text),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&text),
            ] {
                let printable = text
                    .iter()
                    .filter(|&&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                    .count();
                let accepted = printable * 100 >= text.len() * 95;
                assert_eq!(
                    decode_base64_text(encoded.as_bytes(), &mut buf),
                    accepted,
                    "round {round}: {encoded}"
                );
                if accepted {
                    assert_eq!(buf, text);
                }
            }
        }
        assert!(!plausible_base64_text(
            b"some_long_snake_case_identifier_name"
        ));
        assert!(!plausible_base64_text(b"SomeLongCamelCaseIdentifierName"));
    }

    #[test]
    fn repeated_candidates_are_still_matched_and_only_listed_lengths_are_candidates() {
        let rules = RuleSet::builtin().unwrap();
        let env = EnvName::new("production").unwrap();
        let secret: &[u8] = b"pl41n-pr0d-s3cret-with-no-format";
        let walls = [WallFile::build(&env, Tier::Prod, [secret]).unwrap()];
        let engine = Engine::new(&rules, &walls);
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!("let value_{i} = some_repeated_identifier_xy(\"pl41n-pr0d-s3cret-with-no-format\");\n"));
        }
        let hits = engine.scan(text.as_bytes());
        assert_eq!(hits.len(), 50, "{hits:?}");
        assert!(hits.iter().all(|h| h.confidence == Confidence::Fingerprint));
        // Only candidates of the one listed length (32), plus those with a `%` escape.
        let mut spans = Vec::new();
        let line =
            b"short words pl41n-pr0d-s3cret-with-no-format x%41yzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
        candidates::candidates(line, &engine.lengths, &mut Default::default(), &mut spans);
        spans.sort_unstable();
        spans.dedup();
        let texts: Vec<&[u8]> = spans.iter().map(|&(s, e)| &line[s..e]).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts.iter().all(|t| t.len() == 32 || t.contains(&b'%')));
    }

    #[test]
    fn what_one_engine_saw_is_tested_again_by_the_next() {
        let rules = RuleSet::builtin().unwrap();
        let env = EnvName::new("production").unwrap();
        let text =
            b"value = pl41n-pr0d-s3cret-with-no-format\nvalue = pl41n-pr0d-s3cret-with-no-format\n";
        let other: &[u8] = b"another-secret-of-32-bytes-xxxxx";
        let walls = [WallFile::build(&env, Tier::Prod, [other]).unwrap()];
        assert!(Engine::new(&rules, &walls).scan(text).is_empty());
        // Same thread, same lines, a wall that lists the secret: both lines are found.
        let secret: &[u8] = b"pl41n-pr0d-s3cret-with-no-format";
        let walls = [WallFile::build(&env, Tier::Prod, [secret]).unwrap()];
        assert_eq!(Engine::new(&rules, &walls).scan(text).len(), 2);
    }

    #[test]
    fn the_seen_cache_compares_bytes_not_hashes() {
        let mut seen = SeenCandidates::default();
        seen.insert(b"candidate-one-xyz");
        assert!(seen.contains(b"candidate-one-xyz"));
        assert!(!seen.contains(b"candidate-one-xyZ"));
        let long = [b'a'; 49];
        seen.insert(&long);
        assert!(!seen.contains(&long));
    }
}
