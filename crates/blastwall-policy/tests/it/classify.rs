//! Classification: the profiles' own samples, and the ways an agent might hide a mutation.

use blastwall_core::operation::{OperationClass, OperationName};
use blastwall_policy::{Catalog, Classification, ClassifyError, SampleExpect, classify};

fn catalog() -> Catalog {
    Catalog::builtin().unwrap()
}

fn gql(body: &str) -> Result<Classification, ClassifyError> {
    let c = catalog();
    classify(
        c.profile("railway").unwrap(),
        "POST",
        "/graphql/v2",
        [("content-type", &b"application/json"[..])],
        body.as_bytes(),
    )
}

fn doc(query: &str) -> Result<Classification, ClassifyError> {
    gql(&serde_json::json!({ "query": query }).to_string())
}

fn names(c: &Classification) -> Vec<String> {
    let mut v: Vec<String> = c.names().map(ToString::to_string).collect();
    v.sort();
    v
}

#[test]
fn every_sample_of_every_builtin_profile_classifies_as_declared() {
    let c = catalog();
    let mut count = 0;
    for profile in c.profiles() {
        for s in profile.samples() {
            count += 1;
            let headers: Vec<(&str, &[u8])> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            let got = classify(profile, &s.method, &s.path, headers, s.body.as_bytes());
            match (&s.expect, got) {
                (SampleExpect::Refused, Err(_)) => {}
                (SampleExpect::Refused, Ok(c)) => {
                    panic!(
                        "{}: `{}` must be refused, got {:?}",
                        profile.name(),
                        s.name,
                        c.ops
                    )
                }
                (SampleExpect::Classified { .. }, Err(e)) => {
                    panic!("{}: `{}` was refused: {e}", profile.name(), s.name)
                }
                (SampleExpect::Classified { ops, class }, Ok(c)) => {
                    let mut want: Vec<String> = ops.iter().map(ToString::to_string).collect();
                    want.sort();
                    assert_eq!(names(&c), want, "{}: {}", profile.name(), s.name);
                    assert_eq!(c.strictest, *class, "{}: {}", profile.name(), s.name);
                }
            }
        }
    }
    assert!(count >= 40, "only {count} samples");
}

#[test]
fn volume_delete_every_way() {
    let want = ["railway:volume.delete"];
    for query in [
        r#"mutation { volumeDelete(volumeId: "v") }"#,
        r#"mutation Innocent { ok: volumeDelete(volumeId: "v") }"#,
        r#"mutation { ...A } fragment A on Mutation { ...B } fragment B on Mutation { volumeDelete(volumeId: "v") }"#,
        r#"mutation { ... on Mutation { ... { volumeDelete(volumeId: "v") } } }"#,
        r#"mutation { volumeDelete(volumeId: "v") @skip(if: true) }"#,
        r#"mutation($v: String!) @deprecated { volumeDelete(volumeId: $v) }"#,
        "mutation {\n # comment\n volumeDelete(volumeId: \"v\")\n}",
        r#"mutation { volumeDelete(volumeId: "v") volumeDelete(volumeId: "w") }"#,
    ] {
        let c = doc(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(names(&c), want, "{query}");
        assert_eq!(c.strictest, OperationClass::Destructive, "{query}");
    }
}

#[test]
fn volume_delete_in_a_batch_via_get_and_mixed() {
    let c = gql(
        r#"[{"query":"{ me { id } }"},{"query":"mutation { volumeDelete(volumeId: \"v\") }"}]"#,
    )
    .unwrap();
    assert_eq!(c.strictest, OperationClass::Destructive);
    let cat = catalog();
    let railway = cat.profile("railway").unwrap();
    let c = classify(
        railway,
        "GET",
        "/graphql/v2?query=mutation+%7B+volumeDelete%28volumeId%3A+%22v%22%29+%7D",
        [],
        b"",
    )
    .unwrap();
    assert_eq!(names(&c), ["railway:volume.delete"]);
    // A query string on a POST counts as well as the body.
    let c = classify(
        railway,
        "POST",
        "/graphql/v2?query=mutation%7BvolumeDelete(volumeId%3A%22v%22)%7D",
        [],
        br#"{"query":"{ me { id } }"}"#,
    )
    .unwrap();
    assert_eq!(names(&c), ["railway:user.read", "railway:volume.delete"]);
    let c = doc(r#"mutation { customDomainCreate(input: {}) { id } volumeDelete(volumeId: "v") }"#)
        .unwrap();
    assert_eq!(c.ops.len(), 2);
    assert_eq!(c.strictest, OperationClass::Destructive);
}

#[test]
fn application_graphql_bodies() {
    let cat = catalog();
    let c = classify(
        cat.profile("railway").unwrap(),
        "POST",
        "/graphql/v2",
        [("Content-Type", &b"application/graphql"[..])],
        b"mutation { variableDelete(input: {}) }",
    )
    .unwrap();
    assert_eq!(names(&c), ["railway:variable.delete"]);
}

#[test]
fn refusals() {
    for (body, what) in [
        (r#"{"query":"mutation { volumeDelete("}"#, "syntax"),
        (
            r#"{"query":"mutation M { a }","operationName":"N"}"#,
            "operation name",
        ),
        (r#"{"query":"subscription { a }"}"#, "subscription"),
        (r#"{"query":"mutation { ...Missing }"}"#, "missing fragment"),
        (
            r#"{"query":"mutation { ...A } fragment A on Mutation { ...A }"}"#,
            "cycle",
        ),
        (
            r#"{"query":"fragment A on Mutation { a } fragment A on Mutation { b } mutation { ...A }"}"#,
            "duplicate fragment",
        ),
        (r#"{"query":"type Query { a: Int }"}"#, "type system"),
        (
            r#"{"extensions":{"persistedQuery":{"sha256Hash":"ab"}}}"#,
            "persisted",
        ),
        (
            r#"{"query":"{ me }","query":"mutation { volumeDelete }"}"#,
            "duplicate key",
        ),
        (r#"[]"#, "empty batch"),
        (r#"{"query":""}"#, "empty document"),
        ("\u{feff}{\"query\":\"{ me }\"}", "bom"),
    ] {
        assert!(gql(body).is_err(), "{what}: {body}");
    }
}

/// A profile, method, target, headers and body.
type Case<'a> = (
    &'a blastwall_policy::Profile,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a [u8])>,
    &'a str,
);

/// What the upstream would run must be what was classified: path parameters that servlet
/// containers strip, `_method` parameters that web frameworks honour, headers some servers route
/// by, and encoded bodies are refused, on REST and GraphQL profiles alike.
#[test]
fn requests_an_upstream_would_read_differently_are_refused() {
    let c = catalog();
    let rest = c.profile("rest").unwrap();
    let github = c.profile("github").unwrap();
    let railway = c.profile("railway").unwrap();
    let json = ("content-type", &b"application/json"[..]);
    let form = ("content-type", &b"application/x-www-form-urlencoded"[..]);
    let cases: Vec<Case<'_>> = vec![
        (rest, "DELETE", "/cache/..;/users/5", vec![], ""),
        (rest, "GET", "/a/x;jsessionid=1/b", vec![], ""),
        (rest, "GET", "/a/.../b", vec![], ""),
        (rest, "POST", "/items/3?_method=DELETE", vec![], ""),
        (
            rest,
            "POST",
            "/items/3",
            vec![form],
            "name=a&_method=DELETE",
        ),
        (
            rest,
            "POST",
            "/items/3",
            vec![json],
            r#"{"_method":"DELETE"}"#,
        ),
        (
            github,
            "POST",
            "/repos/o/r/issues?_method=DELETE",
            vec![json],
            "{}",
        ),
        (
            rest,
            "GET",
            "/items",
            vec![("X-Original-URL", &b"/admin/delete"[..])],
            "",
        ),
        (
            rest,
            "GET",
            "/items",
            vec![("x-rewrite-url", &b"/admin"[..])],
            "",
        ),
        (
            rest,
            "POST",
            "/items",
            vec![json, ("Content-Encoding", &b"gzip"[..])],
            "x",
        ),
        (
            railway,
            "POST",
            "/graphql/v2?_method=DELETE",
            vec![json],
            r#"{"query":"{ me { id } }"}"#,
        ),
        (
            railway,
            "POST",
            "/graphql/v2",
            vec![json, ("content-encoding", &b"br"[..])],
            "x",
        ),
    ];
    for (profile, method, target, headers, body) in cases {
        let got = classify(profile, method, target, headers, body.as_bytes());
        assert!(got.is_err(), "{method} {target} {body}: {got:?}");
    }
    // The same requests without the trick pass.
    assert!(
        classify(
            rest,
            "POST",
            "/items/3?method=x",
            [json],
            br#"{"name":"_method"}"#
        )
        .is_ok()
    );
    assert!(
        classify(
            rest,
            "POST",
            "/items",
            [("content-encoding", &b"identity"[..])],
            b"x"
        )
        .is_ok()
    );
    let e = classify(rest, "POST", "/items/3?_method=DELETE", [], b"").unwrap_err();
    assert!(e.to_string().contains("`_method` query parameter"), "{e}");
}

#[test]
fn deep_fragment_chains_are_refused_not_overflowed() {
    let mut q = String::from("mutation { ...F0 }");
    for i in 0..200 {
        q.push_str(&format!(" fragment F{i} on Mutation {{ ...F{} }}", i + 1));
    }
    q.push_str(" fragment F200 on Mutation { volumeDelete(volumeId: \"v\") }");
    assert!(matches!(doc(&q), Err(ClassifyError::TooComplex { .. })));
}

#[test]
fn exponential_fragments_are_cheap() {
    // Each fragment spreads the next twice: 2^40 paths, but each fragment is walked once.
    let mut q = String::from("mutation { ...F0 }");
    for i in 0..40 {
        q.push_str(&format!(
            " fragment F{i} on Mutation {{ ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    q.push_str(" fragment F40 on Mutation { volumeDelete(volumeId: \"v\") }");
    assert_eq!(names(&doc(&q).unwrap()), ["railway:volume.delete"]);
}

/// Fragments that each spread many fragments holding many fields: each merge is cheap, but
/// their number times their size is not. Refused within a bounded amount of work, on both
/// readers (a short document goes to the fast one first, a long one straight to the parser).
#[test]
fn fragment_fan_out_is_refused_quickly() {
    fn fan_out(width: usize, levels: usize, unique: usize) -> String {
        let mut q = String::from("query { ...L0 }");
        let per = unique / width;
        for i in 0..width {
            q.push_str(&format!(" fragment B{i} on Query {{"));
            for f in 0..per {
                q.push_str(&format!(" f{i}x{f}"));
            }
            q.push_str(" }");
        }
        for level in 1..=levels {
            for i in 0..width {
                let below = |j: usize| {
                    if level == 1 {
                        format!("B{j}")
                    } else {
                        format!("F{}x{j}", level - 1)
                    }
                };
                q.push_str(&format!(" fragment F{level}x{i} on Query {{"));
                for j in 0..width {
                    q.push_str(&format!(" ...{}", below(j)));
                }
                q.push_str(" }");
            }
        }
        q.replace("...L0", &format!("...F{levels}x0"))
    }
    for (width, levels, unique) in [(10, 10, 1_000), (30, 30, 3_000)] {
        let q = fan_out(width, levels, unique);
        let started = std::time::Instant::now();
        let got = doc(&q);
        assert!(
            matches!(got, Err(ClassifyError::TooComplex { .. })),
            "{} bytes: {got:?}",
            q.len()
        );
        // Generous for a debug build on a busy machine; without the bound this takes minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    // A narrower fan-out of the same shape is classified.
    assert!(doc(&fan_out(3, 3, 30)).is_ok());
}

#[test]
fn typename_in_a_mutation_is_a_read() {
    let c = doc("mutation { __typename }").unwrap();
    assert_eq!(c.strictest, OperationClass::Read);
}

#[test]
fn a_get_to_the_endpoint_without_a_query_is_an_unknown_read() {
    let cat = catalog();
    let c = classify(
        cat.profile("railway").unwrap(),
        "GET",
        "/graphql/v2",
        [],
        b"",
    )
    .unwrap();
    assert_eq!(
        c.ops,
        [(OperationName::unknown("railway"), OperationClass::Read)]
    );
    let e = classify(
        cat.profile("railway").unwrap(),
        "POST",
        "/graphql/v2",
        [],
        b"",
    );
    assert!(e.is_err());
}

#[test]
fn errors_are_written_for_agents() {
    let e = gql(r#"{"query":"mutation M { a }","operationName":"N"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`N`") && e.contains("hint:"), "{e}");
    let cat = catalog();
    let e = classify(
        cat.profile("github").unwrap(),
        "DELETE",
        "/repos/a%2Fb",
        [],
        b"",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("path `/repos/a%2Fb` is ambiguous"), "{e}");
}

#[test]
fn rest_specificity_and_case() {
    let cat = catalog();
    let gh = cat.profile("github").unwrap();
    let op = |m: &str, p: &str| -> String {
        let c = classify(gh, m, p, [], b"").unwrap();
        names(&c).join(",")
    };
    assert_eq!(
        op("GET", "/repos/o/r/git/refs/heads/main"),
        "github:branch.read"
    );
    assert_eq!(op("GET", "/repos/o/r/issues/3"), "github:repo.read");
    assert_eq!(op("DELETE", "/Repos/o/r"), "github:repo.delete");
    assert_eq!(
        op("PUT", "/repos/o/r/contents/a/b/c.txt"),
        "github:content.write"
    );
    assert_eq!(op("DELETE", "/repos/o/r/issues/3"), "github:unknown");
}
