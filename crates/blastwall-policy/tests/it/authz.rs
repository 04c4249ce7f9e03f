//! Authorization: scopes, the prod guardrail, operator policies, and start-up validation.

use blastwall_core::environment::Tier;
use blastwall_core::operation::{OperationClass, OperationName, OperationPattern};
use blastwall_policy::{Authorizer, Catalog, DecideInput, Verdict, classify};

fn scope(patterns: &[&str]) -> Vec<OperationPattern> {
    patterns
        .iter()
        .map(|p| OperationPattern::new(p).unwrap())
        .collect()
}

fn input<'a>(scope: &'a [OperationPattern], tier: Tier, approved: bool) -> DecideInput<'a> {
    DecideInput {
        token_id: "tok_1",
        scope,
        environment: if tier == Tier::Prod {
            "production"
        } else {
            "staging"
        },
        tier,
        upstream: "railway",
        owner: "jer@pocketos.com",
        holder: "cursor-agent",
        approved,
    }
}

fn ops(body: &str) -> Vec<(OperationName, OperationClass)> {
    let catalog = Catalog::builtin().unwrap();
    let body = serde_json::json!({ "query": body }).to_string();
    classify(
        catalog.profile("railway").unwrap(),
        "POST",
        "/graphql/v2",
        [],
        body.as_bytes(),
    )
    .unwrap()
    .ops
}

fn authorizer() -> Authorizer {
    Authorizer::new(&Catalog::builtin().unwrap(), None).unwrap()
}

#[test]
fn the_pocketos_call_is_denied_outside_a_domain_scope() {
    let a = authorizer();
    let s = scope(&["railway:domain.*"]);
    let v = a.decide(
        &input(&s, Tier::Nonprod, false),
        &ops(r#"mutation { volumeDelete(volumeId: "v") }"#),
    );
    let Verdict::Deny {
        operation,
        reason,
        hint,
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(operation.as_str(), "railway:volume.delete");
    assert_eq!(reason, "outside this token's scope (railway:domain.*)");
    assert!(hint.contains("railway:volume.delete"), "{hint}");
    let v = a.decide(
        &input(&s, Tier::Nonprod, false),
        &ops(r#"mutation { customDomainCreate(input: {}) { id } }"#),
    );
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn a_mix_is_denied_when_one_operation_is_outside_the_scope() {
    let a = authorizer();
    let s = scope(&["railway:domain.*"]);
    let v = a.decide(
        &input(&s, Tier::Nonprod, false),
        &ops(r#"mutation { customDomainCreate(input: {}) { id } volumeDelete(volumeId: "v") }"#),
    );
    assert!(
        matches!(v, Verdict::Deny { ref operation, .. } if operation.as_str() == "railway:volume.delete"),
        "{v:?}"
    );
}

#[test]
fn prod_holds_destructive_operations_in_scope_until_approved() {
    let a = authorizer();
    let s = scope(&["railway:*"]);
    let delete = ops(r#"mutation { volumeDelete(volumeId: "v") }"#);
    assert_eq!(
        a.decide(&input(&s, Tier::Nonprod, false), &delete),
        Verdict::Allow
    );
    let v = a.decide(&input(&s, Tier::Prod, false), &delete);
    assert_eq!(
        v,
        Verdict::Hold {
            operations: vec![OperationName::new("railway:volume.delete").unwrap()]
        }
    );
    assert_eq!(
        a.decide(&input(&s, Tier::Prod, true), &delete),
        Verdict::Allow
    );
    // Writes pass in prod without approval.
    let write = ops(r#"mutation { customDomainCreate(input: {}) { id } }"#);
    assert_eq!(
        a.decide(&input(&s, Tier::Prod, false), &write),
        Verdict::Allow
    );
}

#[test]
fn prod_denies_rather_than_holds_what_the_scope_does_not_cover() {
    let a = authorizer();
    let s = scope(&["railway:domain.*"]);
    let v = a.decide(
        &input(&s, Tier::Prod, false),
        &ops(r#"mutation { volumeDelete(volumeId: "v") }"#),
    );
    assert!(matches!(v, Verdict::Deny { .. }), "{v:?}");
}

#[test]
fn unknown_needs_an_explicit_scope() {
    let a = authorizer();
    let unknown = vec![(
        OperationName::unknown("railway"),
        OperationClass::Destructive,
    )];
    let s = scope(&["railway:*"]);
    assert!(matches!(
        a.decide(&input(&s, Tier::Nonprod, false), &unknown),
        Verdict::Deny { .. }
    ));
    let s = scope(&["railway:*", "railway:unknown"]);
    assert_eq!(
        a.decide(&input(&s, Tier::Nonprod, false), &unknown),
        Verdict::Allow
    );
    assert!(matches!(
        a.decide(&input(&s, Tier::Prod, false), &unknown),
        Verdict::Hold { .. }
    ));
}

#[test]
fn a_scope_matching_nothing_is_refused() {
    let a = authorizer();
    let s = scope(&["railway:nothing.*"]);
    assert!(a.check_scope(&s).is_err());
    let v = a.decide(&input(&s, Tier::Nonprod, false), &ops("{ me { id } }"));
    let Verdict::Deny { reason, .. } = v else {
        panic!("{v:?}")
    };
    assert!(
        reason.contains("`railway:nothing.*` matches no operation"),
        "{reason}"
    );
    assert!(a.check_scope(&scope(&["github:*.read"])).unwrap().len() > 5);
}

#[test]
fn no_operations_is_a_deny() {
    let a = authorizer();
    let s = scope(&["railway:*"]);
    assert!(matches!(
        a.decide(&input(&s, Tier::Nonprod, false), &[]),
        Verdict::Deny { .. }
    ));
}

#[test]
fn operator_policies_forbid_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("no-deploys.cedar"),
        "// cursor-agent never deploys\n\n@id(\"no-agent-deploys\")\nforbid (principal, action == Action::\"railway:service.deploy\", resource)\nwhen { context.holder == \"cursor-agent\" };\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let a = Authorizer::new(&Catalog::builtin().unwrap(), Some(dir.path())).unwrap();
    let s = scope(&["railway:*"]);
    let v = a.decide(
        &input(&s, Tier::Nonprod, false),
        &ops(r#"mutation { serviceInstanceDeploy(serviceId: "s", environmentId: "e") }"#),
    );
    let Verdict::Deny { reason, .. } = v else {
        panic!("{v:?}")
    };
    assert!(
        reason.contains("`no-agent-deploys`") && reason.contains("no-deploys.cedar` line 3"),
        "{reason}"
    );
}

#[test]
fn operator_policies_can_use_class_and_profile_groups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("groups.cedar"),
        "forbid (principal, action in Action::\"class:destructive\", resource) when { context.environment == \"staging\" && context.upstream == \"railway\" };\n",
    )
    .unwrap();
    let a = Authorizer::new(&Catalog::builtin().unwrap(), Some(dir.path())).unwrap();
    let s = scope(&["railway:*"]);
    let v = a.decide(
        &input(&s, Tier::Nonprod, false),
        &ops(r#"mutation { volumeDelete(volumeId: "v") }"#),
    );
    assert!(matches!(v, Verdict::Deny { .. }), "{v:?}");
}

#[test]
fn a_policy_that_does_not_parse_stops_start_up_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit (principal, action, resource);\n\nforbid (principal action, resource);\n",
    )
    .unwrap();
    let e = Authorizer::new(&Catalog::builtin().unwrap(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.cedar` line 3"), "{e}");
}

#[test]
fn a_policy_naming_an_unknown_operation_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.cedar"),
        "// typo\nforbid (principal, action == Action::\"railway:volume.delet\", resource);\n",
    )
    .unwrap();
    let e = Authorizer::new(&Catalog::builtin().unwrap(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("typo.cedar` line 2"), "{e}");
    std::fs::write(
        dir.path().join("typo.cedar"),
        "forbid (principal, action, resource) when { context.aproved };\n",
    )
    .unwrap();
    let e = Authorizer::new(&Catalog::builtin().unwrap(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("typo.cedar` line 1"), "{e}");
}

#[test]
fn decisions_are_cached_per_scope_and_stay_correct() {
    let a = authorizer();
    let s1 = scope(&["railway:domain.*"]);
    let s2 = scope(&["railway:volume.*"]);
    let delete = ops(r#"mutation { volumeDelete(volumeId: "v") }"#);
    for _ in 0..3 {
        assert!(matches!(
            a.decide(&input(&s1, Tier::Nonprod, false), &delete),
            Verdict::Deny { .. }
        ));
        assert_eq!(
            a.decide(&input(&s2, Tier::Nonprod, false), &delete),
            Verdict::Allow
        );
    }
}
