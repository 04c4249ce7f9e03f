//! Checks a rule applies to a candidate value after its regex matched: known placeholders,
//! Shannon entropy, and the structural validators (checksums, PEM, JWT).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use blastwall_core::token::check_shape;
use serde::{Deserialize, Serialize};

/// A structural check that a matched value must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validator {
    /// GitHub's token checksum: the last 6 characters are the CRC32 of the 30 before them, in
    /// base62 (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`).
    Github,
    /// npm's token checksum (`npm_`), the same scheme as GitHub's.
    Npm,
    /// Blastwall's own credential checksum, checked by `blastwall_core::token::check_shape`.
    Blastwall,
    /// A PEM or armored key body: base64 lines of plausible length.
    Pem,
    /// A JSON Web Token: base64url header and payload that are JSON objects, the header with `alg`.
    Jwt,
    /// A generic token value: not an identifier path, URL or file path; has letters and digits
    /// (or is long and mixed-case).
    Generic,
    /// A generic password value: not a variable reference, call or identifier path; at least 6
    /// characters; letters-only only when long and mixed-case.
    Password,
}

impl Validator {
    /// Whether a passing value counts as checksum-validated (rather than structure-checked).
    pub fn is_checksum(self) -> bool {
        matches!(self, Self::Github | Self::Npm | Self::Blastwall)
    }

    /// Whether a passing value counts only as an entropy-backed guess.
    pub fn is_generic(self) -> bool {
        matches!(self, Self::Generic | Self::Password)
    }
}

/// What a validator learned from a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Validated {
    /// The environment a Blastwall credential names.
    pub(crate) token_env: Option<String>,
}

/// Runs `validator` on `value`: `Some` when it passes.
pub(crate) fn validate(validator: Validator, value: &[u8]) -> Option<Validated> {
    match validator {
        Validator::Github | Validator::Npm => base62_crc_token(value).then(Validated::default),
        Validator::Blastwall => {
            let text = std::str::from_utf8(value).ok()?;
            let shape = check_shape(text).ok()?;
            Some(Validated {
                token_env: Some(shape.env.as_str().to_owned()),
            })
        }
        Validator::Pem => pem_body(value).then(Validated::default),
        Validator::Jwt => jwt(value).then(Validated::default),
        Validator::Generic => generic_value(value).then(Validated::default),
        Validator::Password => password_value(value).then(Validated::default),
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC32 (IEEE) as 6 base62 characters, most significant first, zero-padded.
pub(crate) fn crc32_base62(data: &[u8]) -> [u8; 6] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    out
}

/// `<prefix>_<30 base62><6 base62 CRC32 of the 30>`, as GitHub and npm write them.
fn base62_crc_token(value: &[u8]) -> bool {
    let Some(pos) = value.iter().rposition(|&b| b == b'_') else {
        return false;
    };
    let Some(tail) = value.get(pos + 1..) else {
        return false;
    };
    if tail.len() != 36 || !tail.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, checksum) = tail.split_at(30);
    crc32_base62(random) == checksum
}

const B64_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64URL_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A key body between `-----BEGIN …-----` and `-----END …-----`, possibly with escaped `\n`
/// (as in JSON), armor headers (`Proc-Type:`, `Version:`) and a PGP CRC line (`=abcd`).
fn pem_body(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value)
        .replace("\\r", "\n")
        .replace("\\n", "\n");
    let mut b64 = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.contains(':') {
            continue;
        }
        if line.starts_with('=') && line.len() <= 6 {
            continue; // PGP armor checksum
        }
        b64.push_str(line);
    }
    if b64.len() < 64 {
        return false;
    }
    B64_INDIFFERENT.decode(b64.as_bytes()).is_ok()
}

/// Three dot-separated base64url parts; header and payload decode to JSON objects, the header
/// names an `alg`.
fn jwt(value: &[u8]) -> bool {
    let mut parts = value.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header) = B64URL_INDIFFERENT.decode(header) else {
        return false;
    };
    let Ok(payload) = B64URL_INDIFFERENT.decode(payload) else {
        return false;
    };
    let header: Result<serde_json::Map<String, serde_json::Value>, _> =
        serde_json::from_slice(&header);
    let payload: Result<serde_json::Map<String, serde_json::Value>, _> =
        serde_json::from_slice(&payload);
    matches!((header, payload), (Ok(h), Ok(_)) if h.contains_key("alg"))
}

/// `a.b.c`, `self.x`, `$X`, `os.getenv(…)`, paths and URLs: code, not a secret.
fn looks_like_code(text: &str) -> bool {
    let ident = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            && p.bytes().next().is_some_and(|b| !b.is_ascii_digit())
    };
    let dotted = text.contains('.') && text.split('.').all(ident);
    let call = text.contains('(') && text.ends_with(')');
    dotted
        || call
        || text.contains("::")
        || text.contains("->")
        || text.contains("=>")
        || text.starts_with(':')
        || text.contains("://")
        || text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("~/")
        || text.starts_with(['$', '%', '{', '[', '@', '&', '*'])
}

/// Placeholder parts that only generic values are checked for: a generated secret never holds
/// them, an example in documentation or a test often does.
const STRICT_PLACEHOLDER_PARTS: &[&str] = &[
    "secret",
    "passw",
    "foobar",
    "hunter2",
    "correct horse",
    "correct%20horse",
    "correcthorse",
    "qwerty",
    "letmein",
    "test",
];

/// Values that are only the usual example words.
const STRICT_PLACEHOLDER_VALUES: &[&str] = &["foo", "bar", "baz", "qux", "user", "pass", "pwd"];

fn strict_placeholder(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    STRICT_PLACEHOLDER_PARTS.iter().any(|p| lower.contains(p))
        || STRICT_PLACEHOLDER_VALUES.contains(&lower.as_str())
}

/// A name in code rather than a value: `CONSTANT_CASE` or `snake_case` of words; with `camel`,
/// also `CamelCase` made mostly of word runs (random base62 has short same-case runs).
fn looks_like_identifier(text: &str, camel: bool) -> bool {
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let has_underscore = bytes.contains(&b'_');
    let constant = has_underscore && !bytes.iter().any(u8::is_ascii_lowercase);
    let snake = has_underscore
        && text
            .split('_')
            .filter(|p| !p.is_empty())
            .all(|p| p.len() >= 2 && p.bytes().all(|b| b.is_ascii_lowercase()));
    constant || snake || (camel && word_runs(text) >= 0.75)
}

/// The share of letters in runs of at least 3 lowercase or 4 uppercase letters.
fn word_runs(text: &str) -> f64 {
    let letters = text.bytes().filter(u8::is_ascii_alphabetic).count();
    if letters == 0 || text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return 0.0;
    }
    let mut in_runs = 0;
    let mut run = 0;
    let mut upper = false;
    for b in text.bytes().chain(std::iter::once(b' ')) {
        let (letter, is_upper) = (b.is_ascii_alphabetic(), b.is_ascii_uppercase());
        if letter && run > 0 && is_upper == upper {
            run += 1;
            continue;
        }
        if (!upper && run >= 3) || (upper && run >= 4) {
            in_runs += run;
        }
        run = usize::from(letter);
        upper = is_upper;
    }
    in_runs as f64 / letters as f64
}

fn generic_value(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    if looks_like_code(text)
        || is_uuid(text)
        || strict_placeholder(text)
        || looks_like_identifier(text, true)
    {
        return false;
    }
    let digit = text.bytes().any(|b| b.is_ascii_digit());
    let upper = text.bytes().any(|b| b.is_ascii_uppercase());
    let lower = text.bytes().any(|b| b.is_ascii_lowercase());
    if !(upper || lower) {
        return false;
    }
    digit || (text.len() >= 24 && upper && lower)
}

/// UUIDs have their own rule (`generic.uuid-secret-assignment`) with a floor fit for hex.
fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn password_value(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    if text.chars().count() < 6 || looks_like_code(&text) || strict_placeholder(&text) {
        return false;
    }
    // Letters only is a type or a word (`String`, `SecretString`, `required`) far more often
    // than a password; so is an identifier in CONSTANT_CASE or snake_case.
    let letters_only = text
        .chars()
        .all(|c| c.is_alphabetic() || c == '_' || c == '-');
    !letters_only && !looks_like_identifier(&text, false)
}

/// Shannon entropy of `value` in bits per byte.
pub fn shannon_entropy(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in value {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Substrings that mark a value as a placeholder wherever they appear (compared lowercase).
const PLACEHOLDER_PARTS: &[&str] = &[
    "example",
    "changeme",
    "change_me",
    "change-me",
    "changethis",
    "placeholder",
    "your_",
    "your-",
    "yourtoken",
    "yourkey",
    "yoursecret",
    "yourpassword",
    "redacted",
    "dummy",
    "sample",
    "xxxx",
    "****",
    "....",
    "…",
    "<",
    ">",
    "${",
    "{{",
    "$(",
    "%(",
    "0123456789",
    "abcdefghij",
    "insert",
    "replace",
    "_here",
    "-here",
    "notreal",
    "not_real",
    "not-a-real",
    "fake",
];

/// Whole values that are placeholders (compared lowercase).
const PLACEHOLDER_VALUES: &[&str] = &[
    "password",
    "passw0rd",
    "secret",
    "token",
    "null",
    "none",
    "nil",
    "true",
    "false",
    "undefined",
    "empty",
    "admin",
    "root",
    "test",
    "testing",
    "pass",
    "default",
    "required",
    "optional",
    "string",
    "value",
    "foobar",
    "secretkey",
    "apikey",
    "mysecret",
    "mypassword",
    "letmein",
];

/// Whether `value` is a known placeholder rather than a secret: `AKIAIOSFODNN7EXAMPLE`,
/// `changeme`, `xxxxx`, `<token>`, `${VAR}`, a value made of one or two repeated characters, …
pub fn is_placeholder(value: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(value).to_ascii_lowercase();
    let trimmed = lower.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
    if trimmed.starts_with('$') || trimmed.starts_with('%') && trimmed.ends_with('%') {
        return true;
    }
    if PLACEHOLDER_VALUES.contains(&trimmed) {
        return true;
    }
    if PLACEHOLDER_PARTS.iter().any(|p| trimmed.contains(p)) {
        return true;
    }
    let mut seen = [false; 256];
    let mut distinct = 0;
    for &b in trimmed.as_bytes() {
        if let Some(s) = seen.get_mut(usize::from(b))
            && !*s
        {
            *s = true;
            distinct += 1;
        }
    }
    trimmed.len() >= 6 && distinct <= 2
}

#[cfg(test)]
mod tests {
    use blastwall_core::token::base62_checksum;

    use super::*;

    #[test]
    fn our_crc32_base62_matches_core() {
        let body = b"bwt_staging_0123456789ABCDEFGHIJabcdefghij";
        assert_eq!(
            std::str::from_utf8(&crc32_base62(body)).unwrap(),
            base62_checksum(body)
        );
    }

    #[test]
    fn github_checksum_accepts_a_correct_token_and_refuses_a_typo() {
        let random = b"Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY";
        let mut token = b"ghp_".to_vec();
        token.extend_from_slice(random);
        token.extend_from_slice(&crc32_base62(random));
        assert!(validate(Validator::Github, &token).is_some());
        let i = 10;
        token[i] = if token[i] == b'a' { b'b' } else { b'a' };
        assert!(validate(Validator::Github, &token).is_none());
    }

    #[test]
    fn placeholders_are_recognised() {
        for p in [
            "AKIAIOSFODNN7EXAMPLE",
            "changeme",
            "xxxxxxxxxxxx",
            "<token>",
            "${GITHUB_TOKEN}",
            "aaaaaaaaaaaa",
            "your_api_key_here",
            "%API_KEY%",
        ] {
            assert!(is_placeholder(p.as_bytes()), "{p}");
        }
        for s in ["Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY", "hunter2-Vq9z"] {
            assert!(!is_placeholder(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn identifiers_are_told_from_random_values() {
        for id in [
            "X509CertificateTemplatePrivateKeyFlag",
            "TLS13_CHACHA20_POLY1305_SHA256_INTERNAL",
            "FTS5_MAX_TOKEN_SIZE",
            "settings_key_value",
            "SecretString",
        ] {
            assert!(looks_like_identifier(id, true), "{id}");
        }
        for random in [
            "Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY",
            "d41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(!looks_like_identifier(random, true), "{random}");
        }
        assert!(validate(Validator::Password, b"Summer2024!").is_some());
        assert!(validate(Validator::Password, b"SecretString").is_none());
        assert!(validate(Validator::Password, b"DB_PASSWORD_VALUE").is_none());
    }

    #[test]
    fn entropy_of_random_is_higher_than_of_words() {
        assert!(shannon_entropy(b"Qx7Lm2Rb9TcV4nW8pZ1sK6dF3hJ5gY") > 4.0);
        assert!(shannon_entropy(b"aaaaaaaaaaaa") < 0.1);
    }

    #[test]
    fn jwt_structure() {
        let jwt = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(validate(Validator::Jwt, jwt).is_some());
        assert!(validate(Validator::Jwt, b"eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ").is_none());
    }
}
