//! Keeps the injected credential from coming back to the agent.
//!
//! An upstream may echo what it received (a debug endpoint, an error page that quotes the
//! request). Every response header value and the streamed body are searched for the credential
//! (and the whole injected header value), and each occurrence is overwritten with `*` of the same
//! length, so `Content-Length` stays right. Matches that straddle two chunks are found by keeping
//! the last `longest - 1` bytes of each chunk back until the next one arrives (always that many,
//! whatever they are: holding back only what could begin a secret would tell an agent, by the
//! timing of an echo it chose, how a secret begins).
//!
//! An upstream may also echo the credential encoded: [`encoded_forms`] adds its percent-encoded
//! and JSON-escaped forms and the parts of its base64 encodings that do not depend on the bytes
//! around it, so those are masked too.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use self_cell::self_cell;
use zeroize::Zeroizing;

/// The forms an echo of `secret` may take besides its own bytes, each wiped when dropped: the
/// percent-encoded form (RFC 3986 unreserved characters kept), the JSON-escaped form (with `/`
/// escaped too, as some encoders do), and, for each base64 alphabet (standard and URL-safe) and
/// each of the three offsets the secret can start at within an encoded stream, the characters
/// that encode only the secret's bits. A form equal to the secret, or under 16 bytes (it would
/// match ordinary text), is left out.
pub(crate) fn encoded_forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut add = |form: Zeroizing<Vec<u8>>| {
        if form.len() >= 16 && form.as_slice() != secret && !forms.contains(&form) {
            forms.push(form);
        }
    };
    add(Zeroizing::new(
        percent_encoding::percent_encode(secret, UNRESERVED)
            .flat_map(str::bytes)
            .collect(),
    ));
    let mut json = Zeroizing::new(Vec::with_capacity(secret.len() + 8));
    for &b in secret {
        match b {
            b'"' | b'\\' | b'/' => json.extend_from_slice(&[b'\\', b]),
            _ => json.push(b),
        }
    }
    add(json);
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for offset in 0..3usize {
            // The secret after `offset` bytes of something else: the characters that mix those
            // bytes' bits, or the bits of whatever follows, are left out.
            let mut stream = Zeroizing::new(vec![0u8; offset]);
            stream.extend_from_slice(secret);
            let encoded = Zeroizing::new(engine.encode(stream.as_slice()).into_bytes());
            let start = [0, 2, 3][offset];
            let end = encoded.len() - usize::from(stream.len() % 3 != 0);
            if let Some(inner) = encoded.get(start..end) {
                add(Zeroizing::new(inner.to_vec()));
            }
        }
    }
    forms
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
        let pct = percent_encoding::percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%2E", ".")
            .replace("%5F", "_")
            .replace("%7E", "~");
        let json = serde_json::to_string(std::str::from_utf8(secret).unwrap())
            .unwrap()
            .replace('/', "\\/");
        for echo in [pct, json] {
            let masked = s.scrub_all(echo.as_bytes()).expect("found");
            assert!(masked.iter().filter(|&&b| b == b'*').count() >= secret.len());
        }
        // A plain token has no percent or JSON form of its own; short forms are left out.
        assert!(
            encoded_forms(b"abcdefgh0123456789")
                .iter()
                .all(|f| f.len() >= 16)
        );
        assert!(encoded_forms(b"short").is_empty());
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
