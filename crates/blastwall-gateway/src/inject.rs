//! The opened upstream credential and what is derived from it once: the header it is sent in and
//! the searchers that scrub it from responses.
//!
//! Both live in the opened credential's cache entry, so they are built again exactly when the
//! credential is opened again (the cache in `server::Inner::credentials`): caching them adds no
//! staleness of its own.

use std::sync::{Arc, OnceLock};

use blastwall_policy::CredentialTemplate;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use crate::scrub::Needles;

/// An upstream credential opened with an environment key this process holds.
pub(crate) struct OpenedCredential {
    secret: SecretBox<Vec<u8>>,
    /// SHA-256 of the sealed record it was opened from: a re-sealed (rotated) credential has
    /// another, and the refresher drops this one then.
    sealed_digest: [u8; 32],
    injection: OnceLock<Arc<Injection>>,
}

/// The credential header of one (upstream, environment), and what scrubs it from responses.
pub(crate) struct Injection {
    /// The profile whose template built it.
    profile: String,
    /// The header name, from the profile's template.
    pub(crate) name: HeaderName,
    /// The rendered value, marked sensitive (its `Debug` prints `Sensitive`; HTTP/2 would never
    /// index it).
    pub(crate) value: HeaderValue,
    /// The credential and the whole header value, for the scrubber.
    pub(crate) needles: Arc<Needles>,
}

impl OpenedCredential {
    /// Wraps a freshly opened credential and the sealed bytes it was opened from.
    pub(crate) fn new(secret: SecretBox<Vec<u8>>, sealed: &[u8]) -> Self {
        Self {
            secret,
            sealed_digest: sealed_digest(sealed),
            injection: OnceLock::new(),
        }
    }

    /// Whether it was opened from exactly these sealed bytes.
    pub(crate) fn opened_from(&self, sealed: &[u8]) -> bool {
        self.sealed_digest == sealed_digest(sealed)
    }

    /// The header for `profile`'s template, rendered on first use and then shared. `None` (the
    /// reason logged) when the credential cannot go in a header: an internal error on every
    /// request, as before, since nothing is cached then.
    pub(crate) fn injection(
        &self,
        profile: &str,
        template: &CredentialTemplate,
    ) -> Option<Arc<Injection>> {
        if let Some(i) = self.injection.get() {
            if i.profile == profile {
                return Some(i.clone());
            }
            // Today an upstream's record (and so its profile) is cached for the process's life
            // like its credential; should it ever change, the header is rendered afresh.
            return self.render(profile, template).map(Arc::new);
        }
        let built = Arc::new(self.render(profile, template)?);
        Some(self.injection.get_or_init(|| built).clone())
    }

    fn render(&self, profile: &str, template: &CredentialTemplate) -> Option<Injection> {
        let Ok(text) = std::str::from_utf8(self.secret.expose_secret()) else {
            tracing::error!("the sealed credential is not UTF-8 text and cannot go in a header");
            return None;
        };
        let rendered = template.render(text);
        // The header value's bytes live in one buffer owned by the value and its clones (each
        // request's copy is a reference, not a copy), wiped when the last one goes: when the
        // credential leaves the cache (rotation) and no request in flight still holds it.
        let bytes = rendered.expose_secret().as_bytes();
        // Visible ASCII, spaces and tabs, as `HeaderValue::from_str` accepts (`from_maybe_shared`
        // would also take other bytes); checked before any copy is made.
        let visible = bytes
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
        let value = visible
            .then(|| {
                HeaderValue::from_maybe_shared(Bytes::from_owner(HeaderBytes(Zeroizing::new(
                    bytes.to_vec(),
                ))))
                .ok()
            })
            .flatten();
        let Some(mut value) = value else {
            tracing::error!("the sealed credential cannot be sent as a header value");
            return None;
        };
        value.set_sensitive(true);
        let name = HeaderName::from_bytes(template.header().as_bytes()).ok()?;
        let encoded = crate::scrub::encoded_forms(self.secret.expose_secret());
        let mut needles: Vec<&[u8]> = vec![
            self.secret.expose_secret(),
            rendered.expose_secret().as_bytes(),
        ];
        needles.extend(encoded.iter().map(|f| f.as_slice()));
        // How much of a streamed body waits for the next chunk must not tell an agent which
        // characters the credential holds. A credential no encoder changes has only forms whose
        // lengths follow from its own (base64), so the longest of them is enough; any other is
        // held back by the bound for every form of its length, so the count says only that it
        // has some character an encoder escapes, not how many.
        let secret = self.secret.expose_secret();
        let hold_back = if crate::scrub::escapes_nothing(secret) {
            0
        } else {
            crate::scrub::longest_form(secret.len())
        };
        let needles = Arc::new(Needles::new(&needles).holding_back(hold_back));
        Some(Injection {
            profile: profile.to_owned(),
            name,
            value,
            needles,
        })
    }
}

/// The bytes of an injected header value, wiped when dropped.
struct HeaderBytes(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for HeaderBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for HeaderBytes {
    fn drop(&mut self) {
        // `Zeroizing` wipes the bytes right after this.
        #[cfg(test)]
        tests::HEADER_BYTES_DROPPED.with(|n| n.set(n.get() + 1));
    }
}

/// The digest of a sealed record (age ciphertext: a public value).
fn sealed_digest(sealed: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(sealed).into()
}

/// The secret is never printed.
impl std::fmt::Debug for OpenedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedCredential").finish_non_exhaustive()
    }
}

/// The value is never printed.
impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("profile", &self.profile)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use blastwall_policy::Catalog;

    use super::*;

    const CANARY: &str = "rw_live_canary_0123456789";

    thread_local! {
        /// How many header value buffers this test thread dropped (and so wiped).
        pub(super) static HEADER_BYTES_DROPPED: std::cell::Cell<usize> =
            const { std::cell::Cell::new(0) };
    }

    #[test]
    fn the_header_value_is_one_wiped_buffer_shared_by_every_request() {
        let catalog = Catalog::builtin().unwrap();
        let template = catalog.profile("railway").unwrap().credential();
        let dropped = || HEADER_BYTES_DROPPED.with(std::cell::Cell::get);
        let before = dropped();
        let c = opened(CANARY.as_bytes());
        let injection = c.injection("railway", template).unwrap();
        // A request's copy is a reference to the same bytes.
        let per_request = injection.value.clone();
        assert_eq!(
            per_request.as_bytes().as_ptr(),
            injection.value.as_bytes().as_ptr()
        );
        // The credential leaves the cache while a request still holds its header: the bytes
        // stay until that request is done, then they are wiped.
        drop(injection);
        drop(c);
        assert_eq!(dropped(), before);
        drop(per_request);
        assert_eq!(dropped(), before + 1);
    }

    fn opened(secret: &[u8]) -> OpenedCredential {
        OpenedCredential::new(SecretBox::new(Box::new(secret.to_vec())), b"sealed")
    }

    #[test]
    fn rendered_once_sensitive_and_never_printed() {
        let catalog = Catalog::builtin().unwrap();
        let template = catalog.profile("railway").unwrap().credential();
        let c = opened(CANARY.as_bytes());
        let first = c.injection("railway", template).unwrap();
        let again = c.injection("railway", template).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.name, http::header::AUTHORIZATION);
        assert_eq!(
            first.value.as_bytes(),
            format!("Bearer {CANARY}").as_bytes()
        );
        assert!(first.value.is_sensitive());
        for printed in [
            format!("{first:?}"),
            format!("{c:?}"),
            format!("{:?}", first.value),
        ] {
            assert!(!printed.contains(CANARY), "{printed}");
        }
        // Both the credential and the whole header value are scrubbed from responses.
        let s = crate::scrub::Scrubber::new(first.needles.clone());
        assert_eq!(
            s.scrub_all(CANARY.as_bytes()).unwrap(),
            vec![b'*'; CANARY.len()]
        );
    }

    /// Issue 4 (walls): how much of a streamed body is held back depends on the credential's
    /// length, the header template and whether an encoder would change it at all, not on how
    /// many of its characters an encoder would escape.
    #[test]
    fn the_hold_back_does_not_count_the_characters_an_encoder_escapes() {
        let catalog = Catalog::builtin().unwrap();
        let template = catalog.profile("railway").unwrap().credential();
        let held = |secret: &[u8]| {
            let c = opened(secret);
            c.injection("railway", template)
                .unwrap()
                .needles
                .held_back()
        };
        let escaped = held(b"rw/live+0123456789\\\"&%#!");
        assert_eq!(escaped, held(b"rw/live_0123456789abcdef"));
        assert_eq!(escaped, 6 * 24 - 1);
        // A credential no encoder changes: the longest of its base64 forms (32 characters for
        // 24 bytes), longer than the injected header ("Bearer " and 24), whatever its
        // characters.
        let plain = held(b"rw_live_0123456789abcdef");
        assert_eq!(plain, held(b"RW-LIVE.0123456789ABCDEF"));
        assert_eq!(plain, 32 - 1);
    }

    #[test]
    fn it_knows_the_sealed_record_it_came_from() {
        let c = opened(CANARY.as_bytes());
        assert!(c.opened_from(b"sealed"));
        assert!(!c.opened_from(b"sealed again"));
    }

    #[test]
    fn a_credential_that_cannot_be_a_header_is_refused_every_time() {
        let catalog = Catalog::builtin().unwrap();
        let template = catalog.profile("railway").unwrap().credential();
        for bad in [
            &b"\xff\xfe"[..],
            b"line\nbreak",
            "p\u{e4}ss".as_bytes(),
            b"del\x7f",
        ] {
            let c = opened(bad);
            assert!(c.injection("railway", template).is_none());
            assert!(c.injection("railway", template).is_none());
            assert!(c.injection.get().is_none());
        }
    }
}
