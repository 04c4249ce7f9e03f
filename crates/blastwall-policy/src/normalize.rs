//! Path normalization: one canonical form for a request path, or a refusal when the path could
//! mean two things to two servers.
//!
//! Classification runs on the normalized path, and the gateway forwards the normalized path, so
//! what was classified is what the upstream receives. The rules (RFC 3986 §6.2.2, made strict):
//!
//! - each segment is percent-decoded once; a `%` not followed by two hex digits is refused;
//! - a decoded `/` or `\` (`%2F`, `%5C`), a raw `\`, a decoded segment that still holds a
//!   percent escape (double encoding), a control character (NUL included), or bytes that are not
//!   UTF-8 are refused: servers disagree on what those mean;
//! - an encoded dot segment (`%2e`, `.%2E`) is refused; plain `.` segments are dropped and `..`
//!   removes the previous segment (`..` above the root is refused);
//! - a `;` in a segment (raw or encoded) is refused: Java servlet containers and others strip
//!   `;params` from a segment before routing, so `/cache/..;/users/5` would be classified under
//!   `cache` and run as `/users/5`;
//! - a segment of dots and spaces other than `.` and `..` (`...`, `.. `) is refused: some servers
//!   trim trailing dots and spaces and read it as a dot segment;
//! - empty segments (duplicate slashes) and a trailing slash are dropped;
//! - a `#` fragment is refused (clients do not send one);
//! - the query string is kept as sent.
//!
//! The case rule of a profile does not change the path; it changes how route literals compare.

use crate::catalog::PathCase;
use crate::error::{ClassifyError, bounded};

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// The canonical path: `/` followed by the segments, each percent-encoded the same way, with
    /// no empty, `.` or `..` segment and no trailing slash.
    pub path: String,
    /// The decoded segments (lower-cased for a case-insensitive profile).
    pub segments: Vec<String>,
    /// The query string without its `?`, as sent.
    pub query: Option<String>,
}

impl NormalizedPath {
    /// The canonical path and query, as the gateway should forward it.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Normalizes a request target (`/path?query`), or refuses it when it is ambiguous.
pub fn normalize_path(target: &str, case: PathCase) -> Result<NormalizedPath, ClassifyError> {
    let refuse = |reason: &'static str| ClassifyError::AmbiguousPath {
        path: bounded(target),
        reason,
    };
    if target.contains('#') {
        return Err(refuse("it holds a `#` fragment"));
    }
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if raw_path.is_empty() {
        return Ok(NormalizedPath {
            path: "/".into(),
            segments: Vec::new(),
            query,
        });
    }
    let Some(rest) = raw_path.strip_prefix('/') else {
        return Err(refuse("it does not start with `/`"));
    };
    if raw_path.bytes().any(|b| b == b'\\') {
        return Err(refuse("it holds a backslash"));
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in rest.split('/') {
        let decoded = decode_segment(raw).map_err(refuse)?;
        match decoded.as_str() {
            "" => {}
            "." | ".." if raw.contains('%') => {
                return Err(refuse("it holds an encoded dot segment"));
            }
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(refuse("`..` climbs above the root"));
                }
            }
            d if d.bytes().all(|b| b == b'.' || b == b' ') => {
                return Err(refuse(
                    "it holds a segment of dots and spaces, which some servers read as `..`",
                ));
            }
            _ => segments.push(decoded),
        }
    }
    let mut path = String::with_capacity(raw_path.len());
    for s in &segments {
        path.push('/');
        encode_segment(s, &mut path);
    }
    if path.is_empty() {
        path.push('/');
    }
    if case == PathCase::Insensitive {
        for s in &mut segments {
            s.make_ascii_lowercase();
        }
    }
    Ok(NormalizedPath {
        path,
        segments,
        query,
    })
}

/// Percent-decodes one path segment, strictly.
fn decode_segment(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter().copied();
    while let Some(b) = iter.next() {
        if b == b'%' {
            let (Some(h), Some(l)) = (iter.next().and_then(hex), iter.next().and_then(hex)) else {
                return Err("it holds a `%` that is not followed by two hex digits");
            };
            out.push(h << 4 | l);
        } else {
            out.push(b);
        }
    }
    for (i, &b) in out.iter().enumerate() {
        if b == b'/' || b == b'\\' {
            return Err("it holds an encoded slash or backslash");
        }
        if b.is_ascii_control() {
            return Err("it holds a control character");
        }
        if b == b';' {
            return Err("it holds a `;`, which some servers strip with what follows it");
        }
        if b == b'%'
            && out.get(i + 1).copied().and_then(hex).is_some()
            && out.get(i + 2).copied().and_then(hex).is_some()
        {
            return Err("it is percent-encoded twice");
        }
    }
    String::from_utf8(out).map_err(|_| "it decodes to bytes that are not UTF-8")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `segment` percent-encoded: unreserved characters, sub-delimiters, `:` and `@` stay as
/// they are (RFC 3986 `pchar`), everything else is encoded in upper-case hex.
fn encode_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in segment.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            for nibble in [b >> 4, b & 0xf] {
                if let Some(&h) = HEX.get(usize::from(nibble)) {
                    out.push(char::from(h));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_path(s, PathCase::Sensitive).unwrap().target()
    }

    fn refused(s: &str) -> bool {
        normalize_path(s, PathCase::Sensitive).is_err()
    }

    #[test]
    fn normal_forms() {
        assert_eq!(n("/a/b"), "/a/b");
        assert_eq!(n("//a///b/"), "/a/b");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/r%65pos"), "/repos");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a b"), "/a%20b");
        assert_eq!(n("/é"), "/%C3%A9");
        assert_eq!(n("/a?x=%2F&y"), "/a?x=%2F&y");
        assert_eq!(n(""), "/");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a/%2e/b",
            "/a%00",
            "/a\u{0}",
            "/a%0A",
            "/a%",
            "/a%G1",
            "/a%252F",
            "/a%FF",
            "/..",
            "/a/../..",
            "a/b",
            "/a#frag",
            "/cache/..;/users/5",
            "/a/.;/b",
            "/a/x;y",
            "/a/x%3By",
            "/a/.../b",
            "/a/.. /b",
            "/a/..%20/b",
            "/a/ /b",
        ] {
            assert!(refused(bad), "{bad:?}");
        }
    }

    #[test]
    fn case_rule_lowers_segments_not_path() {
        let p = normalize_path("/REPOS/A", PathCase::Insensitive).unwrap();
        assert_eq!(p.path, "/REPOS/A");
        assert_eq!(p.segments, ["repos", "a"]);
    }

    #[test]
    fn idempotent() {
        for s in ["/a b/%41/c", "/x/./y/../z//", "/%C3%A9?q"] {
            let once = n(s);
            assert_eq!(n(&once), once);
        }
    }
}
