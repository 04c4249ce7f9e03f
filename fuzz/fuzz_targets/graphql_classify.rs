//! Fuzzes the GraphQL classifier with arbitrary bodies: as JSON, as an `application/graphql`
//! document, and as a `?query=` on GET. It must never panic, and whatever it accepts must name
//! at least one operation.
#![no_main]

use std::sync::LazyLock;

use blastwall_policy::{Catalog, classify};
use libfuzzer_sys::fuzz_target;

static CATALOG: LazyLock<Option<Catalog>> = LazyLock::new(|| Catalog::builtin().ok());

fuzz_target!(|data: &[u8]| {
    let Some(railway) = CATALOG.as_ref().and_then(|c| c.profile("railway")) else {
        return;
    };
    let json = [("content-type", &b"application/json"[..])];
    if let Ok(c) = classify(railway, "POST", "/graphql/v2", json, data) {
        assert!(!c.ops.is_empty());
    }
    let doc = [("content-type", &b"application/graphql"[..])];
    if let Ok(c) = classify(railway, "POST", "/graphql/v2", doc, data) {
        assert!(!c.ops.is_empty());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut target = String::from("/graphql/v2?query=");
        for b in text.bytes() {
            target.push_str(&format!("%{b:02X}"));
        }
        let _ = classify(railway, "GET", &target, [], b"");
    }
});
