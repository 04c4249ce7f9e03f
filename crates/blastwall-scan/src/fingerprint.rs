//! Wall files: keyed fingerprints of an environment's secrets, so that a scan elsewhere can tell
//! that a string *is* one of them without ever holding the secrets.
//!
//! `blastwall wall export --env production` builds a [`WallFile`] from every secret the gateway
//! holds for that environment: each unsealed upstream credential, and the digest of each token
//! (the gateway never has the token itself). The file holds a random salt and
//! `HMAC-SHA256(salt, secret)` of each one, the environment's name and tier, and the set of secret
//! lengths (so that the scan hashes only candidates of a length that can match).
//!
//! What a fingerprint can find: any exact copy of a listed secret, whatever its format, wherever
//! the scanner extracts it as a candidate (a run of token characters, the value of an assignment,
//! a quoted string, a URL password, a whole environment variable value, a line of a PEM key body).
//! What it cannot: a secret that was transformed (re-encoded other than base64, split, truncated,
//! rotated), or one embedded in a way no candidate boundary isolates. And what it does not protect
//! against: the salt is in the file, so a weak secret (a dictionary password) can be recovered
//! from its fingerprint by brute force. Treat a wall file like a password hash file.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use blastwall_core::{EnvName, Tier};
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

use crate::error::ScanError;

/// The `format` field of every wall file.
pub const WALL_FORMAT: &str = "blastwall-wall";
/// The version of the wall file format this crate writes. Version 1 files (without
/// `trimmed_ends`) are read too.
pub const WALL_VERSION: u32 = 2;
/// Secrets shorter than this are not fingerprinted: they would match ordinary text.
pub const MIN_SECRET_LEN: usize = 8;
/// Candidates longer than this are not tested.
pub const MAX_SECRET_LEN: usize = 4096;
/// Lines of a multi-line secret (a PEM body) at least this long are fingerprinted on their own.
const MIN_PART_LEN: usize = 32;

/// A set of fingerprints. They are HMAC outputs, uniformly distributed already: the set hashes
/// them by their first eight bytes instead of running SipHash over all 32 (a scan looks up every
/// new candidate).
type FingerprintSet = HashSet<[u8; 32], BuildHasherDefault<FirstWord>>;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repr {
    format: String,
    version: u32,
    env: String,
    tier: Tier,
    algorithm: String,
    salt: String,
    lengths: Vec<usize>,
    secrets: Vec<String>,
    #[serde(default)]
    token_digests: Vec<String>,
    /// Whether some secret starts or ends with a byte candidates are trimmed of (version 2;
    /// absent in version 1, read as `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trimmed_ends: Option<bool>,
}

/// Keyed fingerprints of one environment's secrets.
#[derive(Clone)]
pub struct WallFile {
    env: EnvName,
    tier: Tier,
    salt: [u8; 32],
    mac: KeyedSha256,
    lengths: Vec<bool>,
    secrets: FingerprintSet,
    token_digests: FingerprintSet,
    skipped_short: usize,
    /// Whether some fingerprinted value starts with `( [ { <` or ends with `, ; ) ] } >`: only
    /// then must a scan also test its candidates untrimmed of those bytes.
    trimmed_ends: bool,
}

/// Bytes a candidate is trimmed of at its start, and at its end (see the candidate extractor):
/// a secret that starts or ends with one is found only by the untrimmed candidate.
pub(crate) const TRIMMED_START: &[u8] = b"([{<";
/// See [`TRIMMED_START`].
pub(crate) const TRIMMED_END: &[u8] = b",;)]}>";

impl std::fmt::Debug for WallFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WallFile")
            .field("env", &self.env)
            .field("tier", &self.tier)
            .field("secrets", &self.secrets.len())
            .field("token_digests", &self.token_digests.len())
            .finish_non_exhaustive()
    }
}

impl WallFile {
    /// Fingerprints `secrets` of environment `env` under a fresh random salt.
    ///
    /// Each secret is trimmed of surrounding ASCII whitespace (a trailing newline from a file is
    /// not part of a credential). Secrets shorter than [`MIN_SECRET_LEN`] are skipped and counted
    /// ([`WallFile::skipped_short`]). A multi-line secret (a PEM key, a service-account JSON) is
    /// also fingerprinted line by line, and a JSON secret by its long string values, so that a
    /// copy of its key body is found on its own.
    ///
    /// For a Blastwall token the gateway holds only as a digest, use
    /// [`WallFile::add_token_digests`].
    pub fn build<'a>(
        env: &EnvName,
        tier: Tier,
        secrets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, ScanError> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| ScanError::Random(e.to_string()))?;
        let mut wall = Self::empty(env.clone(), tier, salt)?;
        for secret in secrets {
            wall.add_secret(secret);
        }
        Ok(wall)
    }

    /// Adds the SHA-256 digests of Blastwall credentials (as the store keeps them:
    /// `TokenDigest::as_bytes`). The scan hashes every valid-looking Blastwall credential it
    /// finds and tests the digest.
    pub fn add_token_digests<'a>(&mut self, digests: impl IntoIterator<Item = &'a [u8; 32]>) {
        for d in digests {
            let fp = self.fingerprint(d);
            self.token_digests.insert(fp);
        }
    }

    /// The environment whose secrets these are.
    pub fn env(&self) -> &EnvName {
        &self.env
    }

    /// The environment's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The number of fingerprints (secrets, their parts, and token digests).
    pub fn len(&self) -> usize {
        self.secrets.len() + self.token_digests.len()
    }

    /// Whether the file holds no fingerprint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many secrets [`WallFile::build`] skipped for being shorter than [`MIN_SECRET_LEN`].
    pub fn skipped_short(&self) -> usize {
        self.skipped_short
    }

    /// The wall file as JSON (no secret in it: salt, fingerprints, lengths, env and tier).
    pub fn to_json(&self) -> String {
        let mut secrets: Vec<String> = self.secrets.iter().map(hex::encode).collect();
        secrets.sort();
        let mut token_digests: Vec<String> = self.token_digests.iter().map(hex::encode).collect();
        token_digests.sort();
        let lengths = self
            .lengths
            .iter()
            .enumerate()
            .filter_map(|(i, &on)| on.then_some(i))
            .collect();
        let repr = Repr {
            format: WALL_FORMAT.into(),
            version: WALL_VERSION,
            env: self.env.as_str().into(),
            tier: self.tier,
            algorithm: "hmac-sha256".into(),
            salt: hex::encode(self.salt),
            lengths,
            secrets,
            token_digests,
            trimmed_ends: Some(self.trimmed_ends),
        };
        // INVARIANT: a struct of strings, numbers and vectors always serializes.
        serde_json::to_string_pretty(&repr).unwrap_or_default() + "\n"
    }

    /// Reads a wall file from JSON; `name` says where it came from, for errors.
    pub fn from_json(text: &str, name: &str) -> Result<Self, ScanError> {
        let bad = |message: String| ScanError::WallFormat {
            name: name.to_owned(),
            message,
        };
        let repr: Repr = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if repr.format != WALL_FORMAT {
            return Err(bad(format!(
                "format is `{}`, not `{WALL_FORMAT}`",
                repr.format
            )));
        }
        if !(1..=WALL_VERSION).contains(&repr.version) {
            return Err(bad(format!(
                "version {} is not supported (this scanner reads versions 1 to {WALL_VERSION})",
                repr.version
            )));
        }
        if repr.algorithm != "hmac-sha256" {
            return Err(bad(format!(
                "algorithm `{}` is not supported",
                repr.algorithm
            )));
        }
        let env = EnvName::new(&repr.env).map_err(|_| ScanError::WallEnv(repr.env.clone()))?;
        let mut salt = [0u8; 32];
        hex::decode_to_slice(&repr.salt, &mut salt)
            .map_err(|_| bad("salt is not 64 hex digits".into()))?;
        let mut wall = Self::empty(env, repr.tier, salt)?;
        // Unknown (version 1): assume the worst, and test untrimmed candidates too.
        wall.trimmed_ends = repr.trimmed_ends.unwrap_or(true);
        for &len in &repr.lengths {
            if len > MAX_SECRET_LEN {
                return Err(bad(format!("length {len} exceeds {MAX_SECRET_LEN}")));
            }
            wall.mark_length(len);
        }
        let parse = |h: &String| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .map(|()| out)
                .map_err(|_| bad("a fingerprint is not 64 hex digits".into()))
        };
        for h in &repr.secrets {
            wall.secrets.insert(parse(h)?);
        }
        for h in &repr.token_digests {
            wall.token_digests.insert(parse(h)?);
        }
        Ok(wall)
    }

    /// Writes the wall file.
    pub fn save(&self, path: &Path) -> Result<(), ScanError> {
        fs::write(path, self.to_json()).map_err(|source| ScanError::WallIo {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a wall file.
    pub fn load(path: &Path) -> Result<Self, ScanError> {
        let text = fs::read_to_string(path).map_err(|source| ScanError::WallIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Whether `candidate` is, byte for byte, one of the fingerprinted secrets (or parts).
    pub fn matches_secret(&self, candidate: &[u8]) -> bool {
        if !self.lengths.get(candidate.len()).copied().unwrap_or(false) {
            return false;
        }
        self.secrets.contains(&self.fingerprint(candidate))
    }

    /// Whether some fingerprinted secret (or part) starts or ends with a byte candidates are
    /// trimmed of, so that untrimmed candidates must be tested too.
    pub(crate) fn trimmed_ends(&self) -> bool {
        self.trimmed_ends
    }

    /// Whether some fingerprinted secret (or part) is `len` bytes long.
    pub(crate) fn has_length(&self, len: usize) -> bool {
        self.lengths.get(len).copied().unwrap_or(false)
    }

    /// Whether `credential` (the text of a Blastwall credential) has a fingerprinted digest.
    pub fn matches_token(&self, credential: &[u8]) -> bool {
        if self.token_digests.is_empty() {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(credential).into();
        self.token_digests.contains(&self.fingerprint(&digest))
    }

    fn empty(env: EnvName, tier: Tier, salt: [u8; 32]) -> Result<Self, ScanError> {
        Ok(Self {
            env,
            tier,
            salt,
            mac: KeyedSha256::new(&salt),
            lengths: vec![false; MAX_SECRET_LEN + 1],
            secrets: FingerprintSet::default(),
            token_digests: FingerprintSet::default(),
            skipped_short: 0,
            trimmed_ends: false,
        })
    }

    fn fingerprint(&self, data: &[u8]) -> [u8; 32] {
        self.mac.mac(data)
    }

    fn mark_length(&mut self, len: usize) {
        if let Some(slot) = self.lengths.get_mut(len) {
            *slot = true;
        }
    }

    fn add_one(&mut self, value: &[u8]) -> bool {
        if value.len() < MIN_SECRET_LEN || value.len() > MAX_SECRET_LEN {
            return false;
        }
        let fp = self.fingerprint(value);
        self.secrets.insert(fp);
        self.mark_length(value.len());
        self.trimmed_ends |= value.first().is_some_and(|b| TRIMMED_START.contains(b))
            || value.last().is_some_and(|b| TRIMMED_END.contains(b));
        true
    }

    fn add_secret(&mut self, secret: &[u8]) {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_LEN {
            self.skipped_short += 1;
            return;
        }
        self.add_one(secret);
        let mut parts = BTreeSet::new();
        collect_parts(secret, &mut parts);
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(secret) {
            collect_json_parts(&json, &mut parts);
        }
        for part in parts {
            if part.as_slice() != secret {
                self.add_one(&part);
            }
        }
    }
}

/// The hasher of [`FingerprintSet`]: the first eight bytes of what it is given (the length
/// prefix of the array, a constant, then the fingerprint itself).
#[derive(Default)]
struct FirstWord(u64);

impl Hasher for FirstWord {
    fn write(&mut self, bytes: &[u8]) {
        let mut w = [0u8; 8];
        for (d, s) in w.iter_mut().zip(bytes) {
            *d = *s;
        }
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(w);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// HMAC-SHA256 (RFC 2104) under one key, keyed once: the SHA-256 states after the key's inner
/// and outer pad blocks are kept, so that a candidate costs only its own blocks plus one outer
/// block (two compressions for a candidate of up to 55 bytes), with no re-keying, no allocation
/// and no buffering. The compression function is sha2's, which uses the CPU's SHA extensions
/// when it has them. Tested against the `hmac` crate.
#[derive(Clone)]
struct KeyedSha256 {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl KeyedSha256 {
    fn new(key: &[u8; 32]) -> Self {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = SHA256_IV;
        compress(&mut inner, &ipad);
        let mut outer = SHA256_IV;
        compress(&mut outer, &opad);
        Self { inner, outer }
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        // Inner hash: the key block is already absorbed; `data` follows it.
        let mut state = self.inner;
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            compress(&mut state, block);
        }
        let rest = blocks.remainder();
        let bits = ((64 + data.len()) as u64).wrapping_mul(8);
        let mut tail = [0u8; 128];
        if let Some(d) = tail.get_mut(..rest.len()) {
            d.copy_from_slice(rest);
        }
        if let Some(b) = tail.get_mut(rest.len()) {
            *b = 0x80;
        }
        // INVARIANT: rest.len() < 64, so the padding fits in one block or two.
        let used = if rest.len() < 56 { 64 } else { 128 };
        if let Some(d) = tail.get_mut(used - 8..used) {
            d.copy_from_slice(&bits.to_be_bytes());
        }
        for block in tail.get(..used).unwrap_or(&[]).chunks_exact(64) {
            compress(&mut state, block);
        }
        // Outer hash: the outer key block is absorbed; the inner digest and padding make one block.
        let mut block = [0u8; 64];
        for (d, w) in block.chunks_exact_mut(4).zip(state) {
            d.copy_from_slice(&w.to_be_bytes());
        }
        if let Some(b) = block.get_mut(32) {
            *b = 0x80;
        }
        if let Some(d) = block.get_mut(56..) {
            d.copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        }
        let mut outer = self.outer;
        compress(&mut outer, &block);
        let mut out = [0u8; 32];
        for (d, w) in out.chunks_exact_mut(4).zip(outer) {
            d.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// One SHA-256 compression of a 64-byte block.
fn compress(state: &mut [u32; 8], block: &[u8]) {
    if block.len() == 64 {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// Lines (split on real or escaped newlines) of a multi-line secret that look like key material:
/// at least [`MIN_PART_LEN`] bytes of base64/token characters.
fn collect_parts(secret: &[u8], out: &mut BTreeSet<Vec<u8>>) {
    let text = String::from_utf8_lossy(secret).replace("\\n", "\n");
    if !text.contains('\n') {
        return;
    }
    for line in text.lines() {
        let line = line.trim();
        let keyish = line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'));
        if line.len() >= MIN_PART_LEN && keyish && !line.starts_with("-----") {
            out.insert(line.as_bytes().to_vec());
        }
    }
}

/// String values of a JSON secret that look like key material, and their lines.
fn collect_json_parts(value: &serde_json::Value, out: &mut BTreeSet<Vec<u8>>) {
    match value {
        serde_json::Value::String(s) => {
            let keyish = s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
            });
            if s.len() >= MIN_PART_LEN && keyish {
                out.insert(s.as_bytes().to_vec());
            }
            collect_parts(s.as_bytes(), out);
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_json_parts(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_json_parts(v, out)),
        _ => {}
    }
}

/// The tier of environment `name`: from a loaded wall file naming it, else `prod` for the names
/// `prod`, `production`, `prd` and `live` (alone or as a `-`-separated part, like `prod-eu`),
/// else `nonprod`.
pub fn tier_of_env(name: &str, walls: &[WallFile]) -> Tier {
    if let Some(w) = walls.iter().find(|w| w.env.as_str() == name) {
        return w.tier;
    }
    let prod = name
        .split('-')
        .any(|part| matches!(part, "prod" | "production" | "prd" | "live"));
    if prod { Tier::Prod } else { Tier::Nonprod }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap()
    }

    #[test]
    fn a_wall_file_round_trips_and_matches_only_its_secrets() {
        let secrets: [&[u8]; 3] = [
            b"s3cr3t-pr0d-db-passw0rd",
            b"short",
            b"  tok_live_abcdefgh12  \n",
        ];
        let wall = WallFile::build(&env("production"), Tier::Prod, secrets).unwrap();
        assert_eq!(wall.skipped_short(), 1);
        let json = wall.to_json();
        assert!(!json.contains("s3cr3t"), "{json}");
        let back = WallFile::from_json(&json, "<test>").unwrap();
        assert_eq!(back.env().as_str(), "production");
        assert_eq!(back.tier(), Tier::Prod);
        assert!(back.matches_secret(b"s3cr3t-pr0d-db-passw0rd"));
        assert!(back.matches_secret(b"tok_live_abcdefgh12"));
        assert!(!back.matches_secret(b"s3cr3t-pr0d-db-passw0rD"));
        assert!(!back.matches_secret(b"short"));
    }

    #[test]
    fn the_keyed_hmac_is_hmac_sha256() {
        use hmac::{Hmac, Mac};
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        let keyed = KeyedSha256::new(&key);
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let mut reference = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            reference.update(&data[..len]);
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(keyed.mac(&data[..len]), expected, "length {len}");
        }
    }

    #[test]
    fn token_digests_match_the_credential_text() {
        let token = b"bwt_production_abcdefghijabcdefghijabcdefghij_AAAAAA";
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut wall = WallFile::build(&env("production"), Tier::Prod, []).unwrap();
        wall.add_token_digests([&digest]);
        let back = WallFile::from_json(&wall.to_json(), "<test>").unwrap();
        assert!(back.matches_token(token));
        assert!(!back.matches_token(b"bwt_production_other"));
    }

    #[test]
    fn pem_lines_are_fingerprinted_on_their_own() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nAbCdEfGh\n-----END PRIVATE KEY-----\n";
        let wall = WallFile::build(&env("production"), Tier::Prod, [&key[..]]).unwrap();
        assert!(wall.matches_secret(b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"));
        assert!(!wall.matches_secret(b"AbCdEfGh"));
    }

    #[test]
    fn a_bad_wall_file_is_refused_with_a_reason() {
        let err = WallFile::from_json(r#"{"format":"x"}"#, "w.json").unwrap_err();
        assert!(err.to_string().contains("`w.json`"), "{err}");
        let wall = WallFile::build(&env("production"), Tier::Prod, []).unwrap();
        let future = wall.to_json().replace("\"version\": 2", "\"version\": 9");
        let err = WallFile::from_json(&future, "w.json").unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    /// Untrimmed candidates are tested only when some secret needs them; a version 1 file,
    /// which does not say, gets them.
    #[test]
    fn the_file_says_whether_a_secret_has_trimmed_ends() {
        let plain = WallFile::build(
            &env("production"),
            Tier::Prod,
            [&b"tok_live_abcdefgh12"[..]],
        )
        .unwrap();
        assert!(!plain.trimmed_ends());
        let back = WallFile::from_json(&plain.to_json(), "w").unwrap();
        assert!(!back.trimmed_ends());
        for secret in [
            &b"Xk9#mQ2$vL7&pR4;"[..],
            b"(parenthesised-secret",
            b"ends-with-comma,",
        ] {
            let wall = WallFile::build(&env("production"), Tier::Prod, [secret]).unwrap();
            assert!(wall.trimmed_ends(), "{}", String::from_utf8_lossy(secret));
            assert!(
                WallFile::from_json(&wall.to_json(), "w")
                    .unwrap()
                    .trimmed_ends()
            );
        }
        let v1 = plain
            .to_json()
            .replace("\"version\": 2", "\"version\": 1")
            .replace(",\n  \"trimmed_ends\": false", "");
        assert!(!v1.contains("trimmed_ends"), "{v1}");
        let old = WallFile::from_json(&v1, "w").unwrap();
        assert!(old.trimmed_ends());
        assert!(old.matches_secret(b"tok_live_abcdefgh12"));
    }

    #[test]
    fn tiers_come_from_walls_then_names() {
        let wall = WallFile::build(&env("main"), Tier::Prod, []).unwrap();
        assert_eq!(tier_of_env("main", std::slice::from_ref(&wall)), Tier::Prod);
        assert_eq!(tier_of_env("production", &[]), Tier::Prod);
        assert_eq!(tier_of_env("prod-eu", &[]), Tier::Prod);
        assert_eq!(tier_of_env("staging", &[]), Tier::Nonprod);
        assert_eq!(tier_of_env("productive", &[]), Tier::Nonprod);
    }
}
