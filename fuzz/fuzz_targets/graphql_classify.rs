//! Fuzzes the GraphQL classifier with arbitrary bodies: as JSON, as an `application/graphql`
//! document, and as a `?query=` on GET. It must never panic, whatever it accepts must name at
//! least one operation, and every engine (the memo, the fast reader, apollo-parser alone, and the
//! gateway's `classify_request`, whose memo is keyed by the request digest) must give the same
//! answer: the fast reader never accepts what the parser refuses, nor reads other root fields.
#![no_main]

use std::sync::LazyLock;

use blastwall_policy::{
    Catalog, Classification, ClassifyError, Engine, Profile, classify_request, classify_with,
};
use libfuzzer_sys::fuzz_target;

static CATALOG: LazyLock<Option<Catalog>> = LazyLock::new(|| Catalog::builtin().ok());

/// Classifies with every engine, checks they agree, and returns the answer.
fn agreed(
    profile: &Profile,
    method: &str,
    target: &str,
    content_type: &'static [u8],
    body: &[u8],
) -> Result<Classification, ClassifyError> {
    let headers = [("content-type", content_type)];
    let [memo, fast, reference] = [Engine::Memoized, Engine::Fast, Engine::Reference]
        .map(|e| classify_with(e, profile, method, target, headers, body));
    assert_eq!(fast, reference, "fast reader vs parser: {body:?}");
    assert_eq!(memo, reference, "memo vs parser: {body:?}");
    let (_, request) = classify_request(profile, "railway", method, target, headers, body);
    assert_eq!(request, reference, "gateway's memo vs parser: {body:?}");
    reference
}

fuzz_target!(|data: &[u8]| {
    let Some(railway) = CATALOG.as_ref().and_then(|c| c.profile("railway")) else {
        return;
    };
    if let Ok(c) = agreed(railway, "POST", "/graphql/v2", b"application/json", data) {
        assert!(!c.ops.is_empty());
    }
    if let Ok(c) = agreed(railway, "POST", "/graphql/v2", b"application/graphql", data) {
        assert!(!c.ops.is_empty());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut target = String::from("/graphql/v2?query=");
        for b in text.bytes() {
            target.push_str(&format!("%{b:02X}"));
        }
        let _ = agreed(railway, "GET", &target, b"text/plain", b"");
    }
});
