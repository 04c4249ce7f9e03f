//! Classifier and decision benchmarks: µs per GraphQL document of about 1 KB and 10 KB under
//! each engine (`classify` itself, which answers a repeated request from the profile's memo; a
//! memo miss; the fast reader alone; apollo-parser alone), a REST route lookup, and a Cedar
//! decision with and without the verdict memo.
//!
//! Run with `cargo bench -p blastwall-policy --bench classify`; results are in
//! `docs/benchmarks.md` (Policy).
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up on fixed, valid inputs"
)]

use std::hint::black_box;

use blastwall_core::environment::Tier;
use blastwall_core::operation::OperationPattern;
use blastwall_policy::{Authorizer, Catalog, DecideInput, Engine, classify, classify_with};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A JSON body holding a GraphQL mutation of at least `size` bytes: a named operation, aliases,
/// a fragment, and a selection per custom domain created.
fn graphql_body(size: usize) -> Vec<u8> {
    graphql_body_with(size, "env_1")
}

/// [`graphql_body`] with another value of the `env` variable: the same document in a body the
/// memo has not seen.
fn graphql_body_with(size: usize, env: &str) -> Vec<u8> {
    let mut doc = String::from("mutation AddDomains($env: String!) {\n");
    let mut n = 0;
    while doc.len() + 120 < size {
        doc.push_str(&format!(
            "  d{n}: customDomainCreate(input: {{domain: \"app{n}.example.com\", environmentId: $env, serviceId: \"svc_{n}\"}}) {{ ...D }}\n"
        ));
        n += 1;
    }
    doc.push_str(
        "}\nfragment D on CustomDomain { id domain status { dnsRecords { hostlabel } } }\n",
    );
    serde_json::to_vec(&serde_json::json!({
        "query": doc,
        "operationName": "AddDomains",
        "variables": { "env": env },
    }))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let catalog = Catalog::builtin().unwrap();
    let railway = catalog.profile("railway").unwrap();
    let github = catalog.profile("github").unwrap();
    let headers = [("content-type", &b"application/json"[..])];

    let mut group = c.benchmark_group("classify");
    for (name, size) in [("graphql_1kb", 1024), ("graphql_10kb", 10 * 1024)] {
        let body = graphql_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        // `classify` as the gateway calls it: the same body again, answered by the memo.
        group.bench_function(name, |b| {
            b.iter(|| classify(railway, "POST", "/graphql/v2", headers, black_box(&body)).unwrap());
        });
        // A body the memo has not seen: digest, fast reader, remember. Each iteration writes
        // a new counter into the `env` variable.
        let mut fresh = graphql_body_with(size, "env_0000000000");
        let at = fresh.windows(10).position(|w| w == b"0000000000").unwrap();
        let mut n = 0u64;
        group.bench_function(format!("{name}_memo_miss"), |b| {
            b.iter(|| {
                n += 1;
                let mut v = n;
                for d in fresh[at..at + 10].iter_mut().rev() {
                    *d = b'0' + (v % 10) as u8;
                    v /= 10;
                }
                classify(railway, "POST", "/graphql/v2", headers, &fresh).unwrap()
            });
        });
        for (engine, label) in [(Engine::Fast, "fast"), (Engine::Reference, "apollo")] {
            group.bench_function(format!("{name}_{label}"), |b| {
                b.iter(|| {
                    classify_with(
                        engine,
                        railway,
                        "POST",
                        "/graphql/v2",
                        headers,
                        black_box(&body),
                    )
                    .unwrap()
                });
            });
        }
    }
    let doc = serde_json::from_slice::<serde_json::Value>(&graphql_body(1024)).unwrap()["query"]
        .as_str()
        .unwrap()
        .to_owned();
    group.bench_function("apollo_parse_only_1kb", |b| {
        b.iter(|| {
            apollo_parser::Parser::new(black_box(&doc))
                .parse()
                .errors()
                .len()
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("rest_github_route", |b| {
        b.iter(|| {
            classify(
                github,
                "DELETE",
                black_box("/repos/pocketos/api/git/refs/heads/main"),
                [],
                b"",
            )
            .unwrap()
        });
    });
    group.finish();

    let authorizer = Authorizer::new(&catalog, None).unwrap();
    let scope = vec![OperationPattern::new("railway:domain.*").unwrap()];
    let ops = classify(railway, "POST", "/graphql/v2", headers, &graphql_body(1024))
        .unwrap()
        .ops;
    let input = DecideInput {
        token_id: "tok_1",
        scope: &scope,
        environment: "production",
        tier: Tier::Prod,
        upstream: "railway",
        owner: "jer@pocketos.com",
        holder: "cursor-agent",
        approved: false,
    };
    // A repeated request: the verdict memo answers.
    c.bench_function("decide/cached_scope", |b| {
        b.iter(|| authorizer.decide(black_box(&input), black_box(&ops)));
    });
    // Cedar itself, with the scope's policy set compiled (and cached) once.
    c.bench_function("decide/uncached", |b| {
        b.iter(|| authorizer.decide_uncached(black_box(&input), black_box(&ops)));
    });
}

criterion_group!(policy, benches);
criterion_main!(policy);
