//! Keeps the injected credential from coming back to the agent.
//!
//! An upstream may echo what it received (a debug endpoint, an error page that quotes the
//! request). Every response header value and the streamed body are searched for the credential
//! (and the whole injected header value), and each occurrence is overwritten with `*` of the same
//! length, so `Content-Length` stays right. Matches that straddle two chunks are found by keeping
//! the last `longest - 1` bytes of each chunk back until the next one arrives (always that many,
//! whatever they are: holding back only what could begin a secret would tell an agent, by the
//! timing of an echo it chose, how a secret begins). For the same reason the count held back
//! does not depend on which characters the credential holds: for a credential some encoder
//! would change, it is a bound that depends on its length alone ([`longest_form`]); for one
//! none would ([`escapes_nothing`]), the longest of its forms, whose lengths follow from its
//! length.
//!
//! An upstream may also echo the credential encoded: [`encoded_forms`] adds its percent-encoded
//! and JSON-escaped forms, as the common encoders write them, and the parts of its base64
//! encodings that do not depend on the bytes around it, so those are masked too.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use self_cell::self_cell;
use zeroize::Zeroizing;

/// The shortest form kept: every sealed credential is at least 8 bytes, and the base64 forms
/// of 8 bytes are 10 characters; anything shorter would match ordinary text.
const SHORTEST_FORM: usize = 10;

/// The forms an echo of `secret` may take besides its own bytes, each wiped when dropped:
///
/// - percent-encoded, as common encoders write it: RFC 3986 unreserved characters kept (Python's
///   `quote(s, safe="")`), `/` kept too (Python's `quote`), JavaScript's `encodeURIComponent`,
///   form encoding with a space as `+` (WHATWG's, Python's `quote_plus` and Go's `QueryEscape`,
///   PHP's `urlencode`), each with upper- and lower-case hex digits;
/// - JSON-escaped (`"`, `\` and a tab always), with and without `/` escaped, and with and
///   without `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026` (Go's `encoding/json`);
/// - for each base64 alphabet (standard and URL-safe) and each of the three offsets the secret
///   can start at within an encoded stream, the characters that encode only the secret's bits.
///
/// A form equal to the secret, or under [`SHORTEST_FORM`] bytes, is left out. Each form is
/// built in a buffer of its final capacity, so no partial copy is left behind in a freed one.
/// No form is longer than [`longest_form`] of the secret's length.
pub(crate) fn encoded_forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut add = |form: Zeroizing<Vec<u8>>| {
        if form.len() >= SHORTEST_FORM && form.as_slice() != secret && !forms.contains(&form) {
            forms.push(form);
        }
    };
    for (set, space_as_plus) in [
        (percent::UNRESERVED, false),
        (percent::PATH, false),
        (percent::COMPONENT, false),
        (percent::FORM, true),
        (percent::UNRESERVED, true),
        (percent::PHP_FORM, true),
    ] {
        let upper = percent::encode(secret, set, space_as_plus);
        let mut lower = Zeroizing::new(Vec::with_capacity(upper.len()));
        let mut hex_left = 0;
        for &b in upper.iter() {
            if hex_left > 0 {
                lower.push(b.to_ascii_lowercase());
                hex_left -= 1;
            } else {
                lower.push(b);
                hex_left = if b == b'%' { 2 } else { 0 };
            }
        }
        add(upper);
        add(lower);
    }
    for (escape_slash, escape_html) in [(true, false), (false, false), (false, true), (true, true)]
    {
        let mut json = Zeroizing::new(Vec::with_capacity(longest_form(secret.len())));
        for &b in secret {
            match b {
                b'"' | b'\\' => json.extend_from_slice(&[b'\\', b]),
                b'\t' => json.extend_from_slice(b"\\t"),
                b'/' if escape_slash => json.extend_from_slice(b"\\/"),
                b'<' if escape_html => json.extend_from_slice(b"\\u003c"),
                b'>' if escape_html => json.extend_from_slice(b"\\u003e"),
                b'&' if escape_html => json.extend_from_slice(b"\\u0026"),
                _ => json.push(b),
            }
        }
        add(json);
    }
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for offset in 0..3usize {
            add(base64_inner(&engine, secret, offset));
        }
    }
    forms
}

/// An upper bound on the length of any form of a secret of `len` bytes (every byte written as
/// `\u00XX`), which depends on nothing but the length.
pub(crate) fn longest_form(len: usize) -> usize {
    len.saturating_mul(6)
}

/// Whether no encoder above would change `secret` (letters, digits, `-`, `.`, `_` only): its
/// only other forms are the base64 ones, whose lengths depend on its length alone.
pub(crate) fn escapes_nothing(secret: &[u8]) -> bool {
    secret
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The characters of the base64 encoding of `secret`, after `offset` bytes of something else,
/// that encode only the secret's bits (those that mix in the bits of what comes before or after
/// are left out).
fn base64_inner(
    engine: &base64::engine::GeneralPurpose,
    secret: &[u8],
    offset: usize,
) -> Zeroizing<Vec<u8>> {
    use base64::Engine as _;
    let mut stream = Zeroizing::new(Vec::with_capacity(offset + secret.len()));
    stream.resize(offset, 0);
    stream.extend_from_slice(secret);
    let Some(size) = base64::encoded_len(stream.len(), false) else {
        return Zeroizing::new(Vec::new());
    };
    let mut encoded = Zeroizing::new(vec![0u8; size]);
    let Ok(written) = engine.encode_slice(stream.as_slice(), encoded.as_mut_slice()) else {
        return Zeroizing::new(Vec::new());
    };
    let start = [0, 2, 3].get(offset).copied().unwrap_or(0);
    let end = written - usize::from(stream.len() % 3 != 0);
    Zeroizing::new(
        encoded
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    )
}

/// Percent-encoding as the common encoders do it.
mod percent {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
    use zeroize::Zeroizing;

    /// RFC 3986 unreserved characters kept.
    pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    /// Python's `urllib.parse.quote` with its default `safe="/"`.
    pub(super) const PATH: &AsciiSet = &UNRESERVED.remove(b'/');
    /// JavaScript's `encodeURIComponent`.
    pub(super) const COMPONENT: &AsciiSet = &UNRESERVED
        .remove(b'!')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    /// The WHATWG `application/x-www-form-urlencoded` serializer (a space becomes `+`).
    pub(super) const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    /// PHP's `urlencode` (a space becomes `+`; `~` and `*` are encoded).
    pub(super) const PHP_FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

    /// `secret` encoded with `set`, upper-case hex, in a buffer of its final capacity.
    pub(super) fn encode(
        secret: &[u8],
        set: &'static AsciiSet,
        space_as_plus: bool,
    ) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(super::longest_form(secret.len())));
        for piece in percent_encoding::percent_encode(secret, set) {
            if space_as_plus && piece == "%20" {
                out.push(b'+');
            } else {
                out.extend_from_slice(piece.as_bytes());
            }
        }
        out
    }
}

/// Searchers borrowing the secrets they search for.
type Finders<'a> = Vec<Finder<'a>>;

self_cell!(
    /// Copies of the secrets, wiped when dropped, and a searcher over each (a searcher built
    /// from an owned needle would keep a copy of its own that nothing wipes).
    struct Searchers {
        owner: Vec<Zeroizing<Vec<u8>>>,
        #[covariant]
        dependent: Finders,
    }
);

/// The secrets to scrub, each with its searcher built once (a linear-time search, where
/// comparing a window at every offset cost the needle's length per byte of a large body).
/// Shared by every response that scrubs the same secrets.
pub(crate) struct Needles {
    searchers: Searchers,
    /// The longest secret, or more (see [`Needles::holding_back`]): a streamed body's last
    /// `longest - 1` bytes are held back until the next chunk.
    longest: usize,
}

impl Needles {
    /// The searchers for these secrets (empty ones are ignored).
    pub(crate) fn new(needles: &[&[u8]]) -> Self {
        let secrets: Vec<Zeroizing<Vec<u8>>> = needles
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| Zeroizing::new(n.to_vec()))
            .collect();
        let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        let searchers = Searchers::new(secrets, |secrets| {
            secrets.iter().map(|s| Finder::new(s.as_slice())).collect()
        });
        Self { searchers, longest }
    }

    /// Holds back as if the longest secret were `at_least` bytes: with a length that depends
    /// only on what the agent already knows (the credential's length and the header template),
    /// not on which of its forms happen to be longer (a percent-encoded form is longer by two
    /// bytes per reserved character), the hold-back an agent can time tells it nothing more.
    pub(crate) fn holding_back(mut self, at_least: usize) -> Self {
        self.longest = self.longest.max(at_least);
        self
    }

    /// How many bytes of a streamed body are held back between chunks.
    #[cfg(test)]
    pub(crate) fn held_back(&self) -> usize {
        self.longest.saturating_sub(1)
    }

    fn finders(&self) -> &[Finder<'_>] {
        self.searchers.borrow_dependent()
    }

    /// Whether `data` holds any of the secrets.
    fn any_in(&self, data: &[u8]) -> bool {
        self.finders().iter().any(|f| f.find(data).is_some())
    }

    /// Overwrites every occurrence of each secret with `*`, secret by secret in order, leftmost
    /// first and without overlaps; returns whether anything was found.
    fn mask(&self, buf: &mut [u8]) -> bool {
        let mut found = false;
        for f in self.finders() {
            let len = f.needle().len();
            let mut start = 0;
            while let Some(pos) = buf.get(start..).and_then(|hay| f.find(hay)) {
                let at = start + pos;
                if let Some(slot) = buf.get_mut(at..at + len) {
                    slot.fill(b'*');
                }
                found = true;
                start = at + len;
            }
        }
        found
    }
}

/// The secrets are never printed.
impl std::fmt::Debug for Needles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Needles")
            .field("count", &self.finders().len())
            .finish_non_exhaustive()
    }
}

/// What to scrub, and the bytes held back between chunks.
pub(crate) struct Scrubber {
    needles: Arc<Needles>,
    carry: BytesMut,
}

impl Scrubber {
    /// A scrubber for one response.
    pub(crate) fn new(needles: Arc<Needles>) -> Self {
        Self {
            needles,
            carry: BytesMut::new(),
        }
    }

    /// Scrubs one value completely (a header): `None` when it holds no secret.
    pub(crate) fn scrub_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        // Most values hold no secret: look before copying.
        if !self.needles.any_in(data) {
            return None;
        }
        let mut buf = data.to_vec();
        self.needles.mask(&mut buf).then_some(buf)
    }

    /// Takes the next chunk; returns what can be sent now.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.needles.longest == 0 {
            return Bytes::copy_from_slice(chunk);
        }
        self.carry.extend_from_slice(chunk);
        self.needles.mask(&mut self.carry);
        let keep = self.needles.longest - 1;
        if self.carry.len() <= keep {
            return Bytes::new();
        }
        let ready = self.carry.len() - keep;
        self.carry.split_to(ready).freeze()
    }

    /// The end of the body: what was held back.
    pub(crate) fn finish(&mut self) -> Bytes {
        self.needles.mask(&mut self.carry);
        self.carry.split().freeze()
    }
}

/// The held-back bytes may begin a secret: only their count is printed.
impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles)
            .field("carry_len", &self.carry.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scrubber(needles: &[&str]) -> Scrubber {
        let needles: Vec<&[u8]> = needles.iter().map(|n| n.as_bytes()).collect();
        Scrubber::new(Arc::new(Needles::new(&needles)))
    }

    fn run(needles: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = scrubber(needles);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&s.push(c));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    /// Issue 4: "the injected credential never comes back to the agent", also when the upstream
    /// echoes it encoded: base64 at any offset within a longer encoded text, percent-encoded,
    /// JSON-escaped.
    #[test]
    fn encoded_echoes_are_masked() {
        use base64::Engine as _;
        let secret = b"sk_live/51H+x9Qa\"Zt~0123456789abcdef";
        let mut needles: Vec<Vec<u8>> = vec![secret.to_vec()];
        needles.extend(encoded_forms(secret).iter().map(|f| f.to_vec()));
        let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
        let s = Scrubber::new(Arc::new(Needles::new(&refs)));
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
        ] {
            for before in 0..7 {
                for after in 0..4 {
                    let mut plain = vec![b'a'; before];
                    plain.extend_from_slice(secret);
                    plain.extend(std::iter::repeat_n(b'z', after));
                    let text = engine.encode(&plain);
                    let masked = s.scrub_all(text.as_bytes()).expect("found");
                    // What survives, decoded, no longer holds the secret.
                    let back: Vec<u8> = masked
                        .iter()
                        .map(|&b| if b == b'*' { b'A' } else { b })
                        .collect();
                    let decoded = engine.decode(&back).unwrap();
                    assert!(
                        !decoded.windows(secret.len()).any(|w| w == secret),
                        "{before}/{after}"
                    );
                }
            }
        }
        // A plain token has no percent or JSON form of its own; short forms are left out.
        assert!(
            encoded_forms(b"abcdefgh0123456789")
                .iter()
                .all(|f| f.len() >= SHORTEST_FORM)
        );
        assert!(encoded_forms(b"short").is_empty());
    }

    /// Issue 4: the echo of a credential with reserved characters, as other languages' encoders
    /// write it (each literal below is what that encoder printed for `SECRET`), is masked whole.
    #[test]
    fn percent_and_json_echoes_as_common_encoders_write_them_are_masked() {
        const SECRET: &[u8] = br#"sk/51H+x9"Qa Zt~0(1)*!'\ab"#;
        let echoes = [
            // Python urllib.parse.quote(s, safe="")
            "sk%2F51H%2Bx9%22Qa%20Zt~0%281%29%2A%21%27%5Cab",
            // the same with lower-case hex digits
            "sk%2f51H%2bx9%22Qa%20Zt~0%281%29%2a%21%27%5cab",
            // Python urllib.parse.quote(s) (keeps `/`)
            "sk/51H%2Bx9%22Qa%20Zt~0%281%29%2A%21%27%5Cab",
            // Python urllib.parse.quote_plus(s, safe=""), Go url.QueryEscape
            "sk%2F51H%2Bx9%22Qa+Zt~0%281%29%2A%21%27%5Cab",
            // PHP urlencode(s)
            "sk%2F51H%2Bx9%22Qa+Zt%7E0%281%29%2A%21%27%5Cab",
            // JavaScript encodeURIComponent(s)
            "sk%2F51H%2Bx9%22Qa%20Zt~0(1)*!'%5Cab",
            // JavaScript new URLSearchParams({a: s}).toString() (WHATWG form encoding)
            "sk%2F51H%2Bx9%22Qa+Zt%7E0%281%29*%21%27%5Cab",
            // Python json.dumps(s), serde_json
            r#""sk/51H+x9\"Qa Zt~0(1)*!'\\ab""#,
            // PHP json_encode(s), which escapes `/`
            r#""sk\/51H+x9\"Qa Zt~0(1)*!'\\ab""#,
        ];
        let mut needles: Vec<Vec<u8>> = vec![SECRET.to_vec()];
        needles.extend(encoded_forms(SECRET).iter().map(|f| f.to_vec()));
        let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
        let s = Scrubber::new(Arc::new(Needles::new(&refs)));
        for echo in echoes {
            let text = format!("you sent {echo}, ok");
            let masked = s.scrub_all(text.as_bytes()).expect(echo);
            let stars = "*".repeat(echo.trim_matches('"').len());
            assert_eq!(
                String::from_utf8(masked).unwrap(),
                text.replace(echo.trim_matches('"'), &stars),
                "{echo}"
            );
        }
        // Tabs, and Go's escaping of `<`, `>` and `&` (each literal as that encoder wrote it).
        const HTML: &[u8] = b"a<b>&c\tX/y\"z0123";
        let forms = encoded_forms(HTML);
        let mut needles: Vec<&[u8]> = vec![HTML];
        needles.extend(forms.iter().map(|f| f.as_slice()));
        let s = Scrubber::new(Arc::new(Needles::new(&needles)));
        for echo in [
            // Go json.Marshal(s)
            r#""a\u003cb\u003e\u0026c\tX/y\"z0123""#,
            // Python json.dumps(s)
            r#""a<b>&c\tX/y\"z0123""#,
        ] {
            let masked = s.scrub_all(echo.as_bytes()).expect(echo);
            let inner = echo.trim_matches('"');
            assert_eq!(
                String::from_utf8(masked).unwrap(),
                echo.replace(inner, &"*".repeat(inner.len())),
                "{echo}"
            );
        }
        // Every form fits the hold-back bound, which depends on the length alone.
        assert!(
            encoded_forms(SECRET)
                .iter()
                .all(|f| f.len() <= longest_form(SECRET.len()))
        );
        assert!(encoded_forms(&[b'<'; 12]).iter().any(|f| f.len() == 72));
    }

    /// Issue 4: the shortest credential the gateway injects (8 bytes) is masked when echoed in
    /// base64 too, at every offset.
    #[test]
    fn a_short_credential_echoed_in_base64_is_masked() {
        use base64::Engine as _;
        let secret = b"k3y!Zq9w";
        let mut needles: Vec<Vec<u8>> = vec![secret.to_vec()];
        needles.extend(encoded_forms(secret).iter().map(|f| f.to_vec()));
        let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
        let s = Scrubber::new(Arc::new(Needles::new(&refs)));
        for before in 0..3 {
            let mut plain = b"user:".to_vec();
            plain.extend(std::iter::repeat_n(b'x', before));
            plain.extend_from_slice(secret);
            let text = base64::engine::general_purpose::STANDARD.encode(&plain);
            let masked = s.scrub_all(text.as_bytes()).expect("found");
            assert!(
                masked.iter().filter(|&&b| b == b'*').count() >= 10,
                "{before}"
            );
        }
    }

    /// The hold-back is the bound given, whatever the secrets' own lengths.
    #[test]
    fn the_hold_back_is_the_bound_not_the_longest_form() {
        let needles = |secret: &[u8]| {
            let forms = encoded_forms(secret);
            let mut refs: Vec<&[u8]> = vec![secret];
            refs.extend(forms.iter().map(|f| f.as_slice()));
            Scrubber::new(Arc::new(
                Needles::new(&refs).holding_back(longest_form(secret.len())),
            ))
        };
        // Same length, one with many reserved characters (longer percent form), one with none.
        let held = |secret: &[u8]| {
            let mut s = needles(secret);
            let out = s.push(&[b'.'; 200]);
            200 - out.len()
        };
        assert_eq!(held(b"a/b/c/d/e/f/g/h/"), held(b"abcdefghijklmnop"));
        assert_eq!(held(b"abcdefghijklmnop"), 6 * 16 - 1);
    }

    #[test]
    fn across_chunk_boundaries() {
        let out = run(&["SECRET"], &[b"you sent SE", b"CR", b"ET, ok"]);
        assert_eq!(out, b"you sent ******, ok");
    }

    #[test]
    fn headers() {
        let s = scrubber(&["tok"]);
        assert_eq!(s.scrub_all(b"Bearer tok").unwrap(), b"Bearer ***");
        assert!(s.scrub_all(b"nothing").is_none());
    }

    /// The byte-by-byte definition the searchers must agree with.
    fn reference_mask(needles: &[&[u8]], buf: &mut [u8]) {
        for n in needles.iter().filter(|n| !n.is_empty()) {
            let mut start = 0;
            while let Some(pos) = buf[start..].windows(n.len()).position(|w| w == *n) {
                let at = start + pos;
                buf[at..at + n.len()].fill(b'*');
                start = at + n.len();
            }
        }
    }

    #[test]
    fn a_large_body_in_uneven_chunks() {
        let secret = b"rw_live_0123456789abcdef";
        let mut body = Vec::with_capacity(4 << 20);
        let mut x: u32 = 7;
        while body.len() < 4 << 20 {
            // Filler that is never the secret but often begins like it.
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            body.extend_from_slice(if x.is_multiple_of(3) {
                b"rw_live_0123"
            } else {
                b"abc "
            });
        }
        // Chunks of 1 to 16 KiB (uneven), and a secret across each of the first boundaries.
        let mut cuts = Vec::new();
        let mut at = 0;
        let mut step = 1;
        while at < body.len() {
            step = (step * 7919 + 13) % 16_384 + 1;
            at = (at + step).min(body.len());
            cuts.push(at);
        }
        for (i, &c) in cuts.iter().take(64).enumerate() {
            let start = (c.saturating_sub(i % secret.len() + 1)).min(body.len() - secret.len());
            body[start..start + secret.len()].copy_from_slice(secret);
        }
        let tail = body.len() - secret.len();
        body[tail..].copy_from_slice(secret);
        let planted = body.windows(secret.len()).filter(|w| w == secret).count();
        assert!(planted > 32, "only {planted} secrets planted");
        let mut expected = body.clone();
        reference_mask(&[secret], &mut expected);
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in cuts {
            chunks.push(&body[last..c]);
            last = c;
        }
        let out = run(&["rw_live_0123456789abcdef"], &chunks);
        assert_eq!(out.len(), body.len());
        assert!(!out.windows(secret.len()).any(|w| w == secret));
        assert!(out == expected, "differs from the byte-by-byte masking");
    }

    #[test]
    fn empty_needles_are_ignored() {
        assert_eq!(run(&["", ""], &[b"as ", b"is"]), b"as is");
        assert_eq!(run(&["", "ab"], &[b"xa", b"bx"]), b"x**x");
    }

    #[test]
    fn the_searchers_search_the_wiped_copies_and_keep_none_of_their_own() {
        let needles = Needles::new(&[b"s3cret", b"", b"Bearer s3cret"]);
        let owned = needles.searchers.borrow_owner();
        let finders = needles.finders();
        assert_eq!(owned.len(), 2);
        for (secret, finder) in owned.iter().zip(finders) {
            assert_eq!(finder.needle().as_ptr(), secret.as_ptr());
        }
    }

    proptest! {
        #[test]
        fn masks_as_the_byte_by_byte_definition(
            needles in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..5), 0..4),
            body in proptest::collection::vec(0u8..4, 0..200),
        ) {
            let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            let mut expected = body.clone();
            reference_mask(&refs, &mut expected);
            let n = Needles::new(&refs);
            let mut got = body.clone();
            n.mask(&mut got);
            prop_assert_eq!(&got, &expected);
            let s = Scrubber::new(Arc::new(n));
            prop_assert_eq!(s.scrub_all(&body).unwrap_or_else(|| body.clone()), expected);
        }


        #[test]
        fn never_leaks_whatever_the_chunking(
            prefix in proptest::collection::vec(any::<u8>(), 0..64),
            suffix in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let secret = b"rw_live_0123456789abcdef";
            let mut body = prefix.clone();
            body.extend_from_slice(secret);
            body.extend_from_slice(&suffix);
            body.extend_from_slice(secret);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&body[last..c]); last = c; }
            chunks.push(&body[last..]);
            let out = run(&["rw_live_0123456789abcdef"], &chunks);
            prop_assert_eq!(out.len(), body.len());
            prop_assert!(!out.windows(secret.len()).any(|w| w == secret));
        }
    }
}
