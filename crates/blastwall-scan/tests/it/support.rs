//! Helpers: deterministic random values, valid checksummed tokens, a scanner with test options.

use blastwall_core::token::base62_checksum;
use blastwall_scan::{Finding, Location, RuleSet, ScanOptions, Scanner};

/// A small deterministic generator, so that fixtures are the same on every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub(crate) fn string(&mut self, alphabet: &str, len: usize) -> String {
        let a = alphabet.as_bytes();
        (0..len)
            .map(|_| char::from(a[(self.next() % a.len() as u64) as usize]))
            .collect()
    }

    pub(crate) fn alnum(&mut self, len: usize) -> String {
        self.string(
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            len,
        )
    }

    pub(crate) fn hex(&mut self, len: usize) -> String {
        self.string("0123456789abcdef", len)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

/// A GitHub classic token with a correct checksum.
pub(crate) fn github_token(rng: &mut Rng) -> String {
    let random = rng.alnum(30);
    format!("ghp_{random}{}", base62_checksum(random.as_bytes()))
}

/// A Blastwall agent token for `env` with a correct checksum.
pub(crate) fn blastwall_token(rng: &mut Rng, env: &str) -> String {
    let body = format!("bwt_{env}_{}", rng.alnum(30));
    let sum = base62_checksum(body.as_bytes());
    format!("{body}_{sum}")
}

/// Options that make every file cross several chunk boundaries.
pub(crate) fn small_chunks() -> ScanOptions {
    ScanOptions {
        chunk_size: 4096,
        overlap: 2000,
        threads: 2,
        ..ScanOptions::default()
    }
}

pub(crate) fn scanner() -> Scanner {
    Scanner::new(RuleSet::builtin().unwrap())
}

/// `(place relative to root, line, rule)` of each finding, sorted.
pub(crate) fn summarize(
    findings: &[Finding],
    root: &std::path::Path,
) -> Vec<(String, u64, String)> {
    let mut out: Vec<(String, u64, String)> = findings
        .iter()
        .map(|f| {
            let line = match &f.location {
                Location::File { line, .. } => *line,
                _ => 0,
            };
            let key = f.location.group_key();
            let root = format!("{}/", root.display());
            let rel = key.strip_prefix(&root).unwrap_or(&key).to_owned();
            (rel, line, f.rule.clone())
        })
        .collect();
    out.sort();
    out
}
