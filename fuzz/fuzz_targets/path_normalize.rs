//! Fuzzes the path normalizer and REST classification: never a panic, normalization is
//! idempotent, and classifying the normalized target gives the same answer.
#![no_main]

use std::sync::LazyLock;

use blastwall_policy::{Catalog, PathCase, classify, normalize_path};
use libfuzzer_sys::fuzz_target;

static CATALOG: LazyLock<Option<Catalog>> = LazyLock::new(|| Catalog::builtin().ok());

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    for case in [PathCase::Sensitive, PathCase::Insensitive] {
        if let Ok(once) = normalize_path(target, case) {
            let twice = normalize_path(&once.target(), case);
            assert_eq!(
                twice.as_ref().ok(),
                Some(&once),
                "not idempotent: {target:?}"
            );
        }
    }
    let Some(catalog) = CATALOG.as_ref() else {
        return;
    };
    for profile in catalog.profiles() {
        for method in ["GET", "DELETE"] {
            if let Ok(first) = classify(profile, method, target, [], b"") {
                let second = classify(profile, method, &first.target, [], b"");
                assert_eq!(second.as_ref().ok(), Some(&first), "{target:?}");
            }
        }
    }
});
