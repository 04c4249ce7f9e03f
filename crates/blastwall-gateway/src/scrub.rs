//! Keeps the injected credential from coming back to the agent.
//!
//! An upstream may echo what it received (a debug endpoint, an error page that quotes the
//! request). Every response header value and the streamed body are searched for the credential
//! (and the whole injected header value), and each occurrence is overwritten with `*` of the same
//! length, so `Content-Length` stays right. Matches that straddle two chunks are found by keeping
//! the last `longest - 1` bytes of each chunk back until the next one arrives.

use bytes::{Bytes, BytesMut};

/// What to scrub, and the bytes held back between chunks.
#[derive(Debug)]
pub(crate) struct Scrubber {
    needles: Vec<Vec<u8>>,
    longest: usize,
    carry: BytesMut,
}

impl Scrubber {
    /// A scrubber for these secrets (empty ones are ignored).
    pub(crate) fn new(needles: Vec<Vec<u8>>) -> Self {
        let needles: Vec<Vec<u8>> = needles.into_iter().filter(|n| !n.is_empty()).collect();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            needles,
            longest,
            carry: BytesMut::new(),
        }
    }

    /// Scrubs one value completely (a header): `None` when it holds no secret.
    pub(crate) fn scrub_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        // Most values hold no secret: look before copying.
        if !self
            .needles
            .iter()
            .any(|n| data.windows(n.len()).any(|w| w == n.as_slice()))
        {
            return None;
        }
        let mut buf = data.to_vec();
        mask(&self.needles, &mut buf).then_some(buf)
    }

    /// Takes the next chunk; returns what can be sent now.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.longest == 0 {
            return Bytes::copy_from_slice(chunk);
        }
        self.carry.extend_from_slice(chunk);
        mask(&self.needles, &mut self.carry);
        let keep = self.longest - 1;
        if self.carry.len() <= keep {
            return Bytes::new();
        }
        let ready = self.carry.len() - keep;
        self.carry.split_to(ready).freeze()
    }

    /// The end of the body: what was held back.
    pub(crate) fn finish(&mut self) -> Bytes {
        mask(&self.needles, &mut self.carry);
        self.carry.split().freeze()
    }
}

/// Overwrites every occurrence of each needle with `*`; returns whether anything was found.
fn mask(needles: &[Vec<u8>], buf: &mut [u8]) -> bool {
    let mut found = false;
    for n in needles {
        let mut start = 0;
        while start + n.len() <= buf.len() {
            let Some(pos) = buf
                .get(start..)
                .and_then(|hay| hay.windows(n.len()).position(|w| w == n.as_slice()))
            else {
                break;
            };
            let at = start + pos;
            if let Some(slot) = buf.get_mut(at..at + n.len()) {
                slot.fill(b'*');
            }
            found = true;
            start = at + n.len();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(needles: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Scrubber::new(needles.iter().map(|n| n.as_bytes().to_vec()).collect());
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&s.push(c));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    #[test]
    fn across_chunk_boundaries() {
        let out = run(&["SECRET"], &[b"you sent SE", b"CR", b"ET, ok"]);
        assert_eq!(out, b"you sent ******, ok");
    }

    #[test]
    fn headers() {
        let s = Scrubber::new(vec![b"tok".to_vec()]);
        assert_eq!(s.scrub_all(b"Bearer tok").unwrap(), b"Bearer ***");
        assert!(s.scrub_all(b"nothing").is_none());
    }

    proptest! {
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
