//! Property tests of the classifiers: renaming never changes what a document does, adding never
//! lowers the class, normalizing is transparent, and nothing panics.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use blastwall_core::operation::OperationClass;
use blastwall_policy::{
    Catalog, Classification, ClassifyError, Engine, Profile, classify, classify_request,
    classify_with,
};
use proptest::prelude::*;

/// Parsed once for all cases.
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::builtin().unwrap());

/// Root fields to draw from: known mutations of each class, and one the catalog does not know.
const FIELDS: &[&str] = &[
    "volumeDelete",
    "customDomainCreate",
    "serviceDelete",
    "variableUpsert",
    "deploymentRestart",
    "apiTokenCreate",
    "__typename",
    "notInTheCatalog",
];

/// One root selection of a generated mutation.
#[derive(Debug, Clone)]
enum Sel {
    Field { field: usize, alias: bool },
    Inline(Vec<usize>),
    Spread(usize),
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        (0..FIELDS.len(), any::<bool>()).prop_map(|(field, alias)| Sel::Field { field, alias }),
        prop::collection::vec(0..FIELDS.len(), 1..3).prop_map(Sel::Inline),
        (0..3usize).prop_map(Sel::Spread),
    ]
}

/// A document: root selections, and three fragments (each a list of fields).
fn document() -> impl Strategy<Value = (Vec<Sel>, Vec<Vec<usize>>)> {
    (
        prop::collection::vec(sel(), 1..6),
        prop::collection::vec(prop::collection::vec(0..FIELDS.len(), 1..3), 3),
    )
}

/// Renders the document with a naming scheme for aliases and fragments.
fn render(sels: &[Sel], frags: &[Vec<usize>], prefix: &str) -> String {
    let field = |i: usize| FIELDS.get(i).copied().unwrap_or("x");
    let mut out = String::from("mutation Op {");
    for (n, s) in sels.iter().enumerate() {
        match s {
            Sel::Field { field: f, alias } => {
                if *alias {
                    out.push_str(&format!(" {prefix}a{n}: "));
                }
                out.push_str(&format!(" {}", field(*f)));
            }
            Sel::Inline(fs) => {
                out.push_str(" ... {");
                for f in fs {
                    out.push_str(&format!(" {prefix}i{f}: {}", field(*f)));
                }
                out.push_str(" }");
            }
            Sel::Spread(k) => out.push_str(&format!(" ...{prefix}F{k}")),
        }
    }
    out.push_str(" }");
    for (k, fs) in frags.iter().enumerate() {
        if sels.iter().any(|s| matches!(s, Sel::Spread(j) if *j == k)) {
            out.push_str(&format!(" fragment {prefix}F{k} on Mutation {{"));
            for f in fs {
                out.push_str(&format!(" {}", field(*f)));
            }
            out.push_str(" }");
        }
    }
    out
}

fn run(profile: &Profile, query: &str) -> Result<Classification, ClassifyError> {
    let body = serde_json::json!({ "query": query }).to_string();
    classify(profile, "POST", "/graphql/v2", [], body.as_bytes())
}

fn op_set(c: &Classification) -> BTreeSet<String> {
    c.names().map(ToString::to_string).collect()
}

/// Every engine's answer for one request to Railway's endpoint, and last the gateway's
/// (`classify_request`, whose memo is keyed by the request's own digest).
fn engines(
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> [Result<Classification, ClassifyError>; 4] {
    let railway = CATALOG.profile("railway").unwrap();
    let headers = [("content-type", content_type.as_bytes())];
    let [memo, fast, reference] = [Engine::Memoized, Engine::Fast, Engine::Reference]
        .map(|e| classify_with(e, railway, method, target, headers, body));
    let (_, request) = classify_request(railway, "railway", method, target, headers, body);
    [memo, fast, reference, request]
}

/// Pieces of GraphQL, valid and not.
fn graphql_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "mutation",
        "query",
        "subscription",
        "fragment",
        "F",
        "on",
        "Mutation",
        "{",
        "}",
        "{",
        "}",
        "(",
        ")",
        "...",
        "volumeDelete",
        "customDomainCreate",
        "a:",
        "a",
        ",",
        ":",
        "@skip(if: true)",
        "$v",
        "\"s\"",
        "\"\"\"b\"\"\"",
        "[",
        "]",
        "1",
        "#c\n",
        "=",
        "!",
        "Int",
        "__typename",
        "x",
    ])
}

fn path_piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/",
        "//",
        "/.",
        "/..",
        "/a",
        "/A",
        "/repos",
        "/REPOS",
        "/o",
        "/r",
        "/git",
        "/refs",
        "/%41",
        "/%2e",
        "/%2F",
        "/%2",
        "/%25",
        "/%00",
        "/x%20y",
        "/releases",
        "/7",
        "?q=1",
        "/é",
        "\\",
        "/%C3%A9",
        "/protection",
        "/branches",
        "/main",
        "/keys",
        "/hooks",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn renaming_aliases_and_fragments_never_changes_the_op_set((sels, frags) in document()) {
        let catalog = &*CATALOG;
        let railway = catalog.profile("railway").unwrap();
        let a = run(railway, &render(&sels, &frags, "p"));
        let b = run(railway, &render(&sels, &frags, "zz_Other"));
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(op_set(&a), op_set(&b));
                prop_assert_eq!(a.strictest, b.strictest);
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }

    #[test]
    fn adding_an_operation_never_lowers_the_class(
        (sels, frags) in document(),
        (extra, _) in document(),
        extra_is_query in any::<bool>(),
    ) {
        let catalog = &*CATALOG;
        let railway = catalog.profile("railway").unwrap();
        let base = render(&sels, &frags, "p");
        let Ok(before) = run(railway, &base) else { return Ok(()) };
        // A second operation with fields only (spreads would need fragments of their own).
        let fields: Vec<Sel> = extra.into_iter().filter(|s| !matches!(s, Sel::Spread(_))).collect();
        let fields = if fields.is_empty() { vec![Sel::Field { field: 0, alias: false }] } else { fields };
        let mut second = render(&fields, &[], "q").replacen("mutation Op", "mutation Op2", 1);
        if extra_is_query {
            second = "query Q2 { me { id } }".to_owned();
        }
        let after = run(railway, &format!("{base} {second}")).unwrap();
        prop_assert!(after.strictest >= before.strictest);
        prop_assert!(op_set(&after).is_superset(&op_set(&before)));
        // The same holds in a batch.
        let batch = serde_json::json!([{ "query": base }, { "query": second }]).to_string();
        let batched = classify(railway, "POST", "/graphql/v2", [], batch.as_bytes()).unwrap();
        prop_assert!(batched.strictest >= before.strictest);
    }

    #[test]
    fn every_engine_gives_the_same_answer_on_generated_documents(
        (sels, frags) in document(),
        name in prop::sample::select(vec![None, Some("Op"), Some("Other")]),
        batch in any::<bool>(),
    ) {
        let doc = render(&sels, &frags, "p");
        let one = serde_json::json!({ "query": doc, "operationName": name });
        let body = if batch {
            serde_json::json!([one, { "query": "{ me { id } }" }])
        } else {
            one
        };
        let body = body.to_string();
        let [memo, fast, reference, request] = engines("POST", "/graphql/v2", "application/json", body.as_bytes());
        prop_assert_eq!(&fast, &reference, "{}", body);
        prop_assert_eq!(&memo, &reference, "{}", body);
        prop_assert_eq!(&request, &reference, "{}", body);
        // Asked again, the memos answer the same.
        let [again, _, _, request_again] = engines("POST", "/graphql/v2", "application/json", body.as_bytes());
        prop_assert_eq!(&again, &reference);
        prop_assert_eq!(&request_again, &reference);
    }

    #[test]
    fn every_engine_gives_the_same_answer_on_token_soup(
        parts in prop::collection::vec(graphql_piece(), 0..30),
        form in 0..3u8,
    ) {
        let doc = parts.join(" ");
        let answers = match form {
            0 => engines("POST", "/graphql/v2", "application/graphql", doc.as_bytes()),
            1 => {
                let q: String = doc.bytes().map(|b| format!("%{b:02X}")).collect();
                engines("GET", &format!("/graphql/v2?query={q}"), "text/plain", b"")
            }
            _ => {
                let body = serde_json::json!({ "query": doc }).to_string();
                engines("POST", "/graphql/v2", "application/json", body.as_bytes())
            }
        };
        let [memo, fast, reference, request] = answers;
        prop_assert_eq!(&fast, &reference, "{}", doc);
        prop_assert_eq!(&memo, &reference, "{}", doc);
        prop_assert_eq!(&request, &reference, "{}", doc);
    }

    #[test]
    fn classify_equals_classify_of_the_normalized_request(
        pieces in prop::collection::vec(path_piece(), 0..8),
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "PURGE"]),
    ) {
        let catalog = &*CATALOG;
        let target: String = pieces.concat();
        for profile in catalog.profiles() {
            let Ok(first) = classify(profile, method, &target, [], b"") else { continue };
            let second = classify(profile, method, &first.target, [], b"").unwrap();
            prop_assert_eq!(&first, &second, "{} {}", profile.name(), target);
        }
    }

    #[test]
    fn classifiers_never_panic_on_arbitrary_input(
        method in "[A-Za-z ]{0,8}",
        target in "\\PC{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..200),
        header in "[A-Za-z-]{1,24}",
    ) {
        let catalog = &*CATALOG;
        for profile in catalog.profiles() {
            let _ = classify(profile, &method, &target, [(header.as_str(), &body[..])], &body);
        }
    }

    #[test]
    fn graphql_classifier_never_panics_on_arbitrary_documents(query in "\\PC{0,120}") {
        let catalog = &*CATALOG;
        let railway = catalog.profile("railway").unwrap();
        let _ = run(railway, &query);
        let _ = classify(railway, "POST", "/graphql/v2", [("content-type", &b"application/graphql"[..])], query.as_bytes());
    }

    #[test]
    fn graphql_fragments_of_documents_never_panic(
        parts in prop::collection::vec(prop::sample::select(vec![
            "mutation", "query", "subscription", "{", "}", "(", ")", "...", "on", "Mutation",
            "fragment", "F", "volumeDelete", "a:", "@skip(if: true)", "\"s\"", "$v", ":", "!",
            "String", "[", "]", "#c\n", ",",
        ]), 0..30),
    ) {
        let catalog = &*CATALOG;
        let railway = catalog.profile("railway").unwrap();
        if let Ok(c) = run(railway, &parts.join(" ")) {
            prop_assert!(!c.ops.is_empty());
            if parts.contains(&"volumeDelete") && parts.first() == Some(&"mutation") {
                prop_assert_eq!(c.strictest, OperationClass::Destructive);
            }
        }
    }
}
