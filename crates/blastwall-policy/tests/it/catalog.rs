//! The built-in catalog: loading, coverage of the reference lists, extra folders, errors.

use std::collections::BTreeSet;

use blastwall_core::operation::{OperationClass, OperationName, OperationPattern};
use blastwall_policy::{Catalog, ProfileKind};

/// Every root field of Railway's `Mutation` (shared/reference/railway-graphql-roots.md).
const RAILWAY_MUTATIONS: &[&str] = &[
    "apiTokenCreate",
    "apiTokenDelete",
    "baseEnvironmentOverride",
    "bucketCreate",
    "bucketCredentialsReset",
    "bucketUpdate",
    "customDomainCreate",
    "customDomainDelete",
    "customDomainUpdate",
    "customerCreateFreePlanSubscription",
    "customerTogglePayoutsToCredits",
    "deploymentApprove",
    "deploymentCancel",
    "deploymentInstanceExecutionCreate",
    "deploymentRedeploy",
    "deploymentRemove",
    "deploymentRestart",
    "deploymentRollback",
    "deploymentStop",
    "deploymentTriggerCreate",
    "deploymentTriggerDelete",
    "deploymentTriggerUpdate",
    "dockerComposeImport",
    "egressGatewayAssociationCreate",
    "egressGatewayAssociationsClear",
    "emailChangeConfirm",
    "emailChangeInitiate",
    "environmentCreate",
    "environmentDelete",
    "environmentPatchCommit",
    "environmentPatchCommitStaged",
    "environmentRename",
    "environmentStageChanges",
    "environmentTriggersDeploy",
    "environmentUnskipService",
    "fairUseAgree",
    "featureFlagAdd",
    "featureFlagRemove",
    "githubRepoDeploy",
    "githubRepoUpdate",
    "herokuImportVariables",
    "integrationCreate",
    "integrationDelete",
    "integrationUpdate",
    "inviteCodeUse",
    "jobApplicationCreate",
    "loginSessionAuth",
    "loginSessionCancel",
    "loginSessionConsume",
    "loginSessionCreate",
    "loginSessionVerify",
    "notificationDeliveriesMarkAsRead",
    "observabilityDashboardCreate",
    "observabilityDashboardReset",
    "observabilityDashboardUpdate",
    "passkeyDelete",
    "pluginCreate",
    "pluginDelete",
    "pluginReset",
    "pluginResetCredentials",
    "pluginRestart",
    "pluginStart",
    "pluginUpdate",
    "preferencesUpdate",
    "privateNetworkCreateOrGet",
    "privateNetworkEndpointCreateOrGet",
    "privateNetworkEndpointDelete",
    "privateNetworkEndpointRename",
    "privateNetworksForEnvironmentDelete",
    "projectClaim",
    "projectCreate",
    "projectDelete",
    "projectFeatureFlagAdd",
    "projectFeatureFlagRemove",
    "projectInvitationAccept",
    "projectInvitationCreate",
    "projectInvitationDelete",
    "projectInvitationResend",
    "projectInviteUser",
    "projectLeave",
    "projectMemberRemove",
    "projectMemberUpdate",
    "projectScheduleDelete",
    "projectScheduleDeleteCancel",
    "projectScheduleDeleteForce",
    "projectTokenCreate",
    "projectTokenDelete",
    "projectTransfer",
    "projectTransferConfirm",
    "projectTransferInitiate",
    "projectTransferToTeam",
    "projectUpdate",
    "providerAuthRemove",
    "recoveryCodeGenerate",
    "recoveryCodeValidate",
    "referralInfoUpdate",
    "serviceConnect",
    "serviceCreate",
    "serviceDelete",
    "serviceDisconnect",
    "serviceDomainCreate",
    "serviceDomainDelete",
    "serviceDomainUpdate",
    "serviceDuplicate",
    "serviceFeatureFlagAdd",
    "serviceFeatureFlagRemove",
    "serviceInstanceDeploy",
    "serviceInstanceDeployV2",
    "serviceInstanceLimitsUpdate",
    "serviceInstanceRedeploy",
    "serviceInstanceUpdate",
    "serviceRemoveUpstreamUrl",
    "serviceUpdate",
    "sessionDelete",
    "sharedVariableConfigure",
    "sshPublicKeyCreate",
    "sshPublicKeyDelete",
    "tcpProxyCreate",
    "tcpProxyDelete",
    "templateClone",
    "templateDelete",
    "templateDeploy",
    "templateDeployV2",
    "templateGenerate",
    "templatePublish",
    "templateServiceSourceEject",
    "templateUnpublish",
    "trustedDomainCreate",
    "trustedDomainDelete",
    "twoFactorInfoCreate",
    "twoFactorInfoDelete",
    "twoFactorInfoSecret",
    "twoFactorInfoValidate",
    "upsertSlackChannel",
    "usageLimitRemove",
    "usageLimitSet",
    "userBetaLeave",
    "userDelete",
    "userDiscordDisconnect",
    "userFlagsRemove",
    "userFlagsSet",
    "userProfileUpdate",
    "userTermsUpdate",
    "variableCollectionUpsert",
    "variableDelete",
    "variableUpsert",
    "volumeCreate",
    "volumeDelete",
    "volumeInstanceBackupCreate",
    "volumeInstanceBackupDelete",
    "volumeInstanceBackupLock",
    "volumeInstanceBackupRestore",
    "volumeInstanceBackupScheduleUpdate",
    "volumeInstanceUpdate",
    "volumeUpdate",
    "workspaceDelete",
    "workspaceInviteCodeCreate",
    "workspaceInviteCodeUse",
    "workspaceLeave",
    "workspacePermissionChange",
    "workspaceTwoFactorEnforcementUpdate",
    "workspaceUpdate",
    "workspaceUpsertSlackChannel",
    "workspaceUserInvite",
    "workspaceUserRemove",
];

/// Mutations that must be destructive: they delete or detach data, or change a credential or a
/// permission.
const RAILWAY_DESTRUCTIVE: &[&str] = &[
    "volumeDelete",
    "serviceDelete",
    "environmentDelete",
    "projectDelete",
    "deploymentRemove",
    "customDomainDelete",
    "serviceDomainDelete",
    "variableDelete",
    "apiTokenCreate",
    "apiTokenDelete",
    "projectTokenCreate",
    "projectTokenDelete",
    "bucketCredentialsReset",
    "volumeInstanceBackupDelete",
    "volumeInstanceBackupRestore",
    "volumeInstanceUpdate",
    "workspacePermissionChange",
    "workspaceUserRemove",
    "workspaceUserInvite",
    "projectMemberUpdate",
    "projectMemberRemove",
    "projectTransfer",
    "pluginDelete",
    "pluginResetCredentials",
    "workspaceDelete",
    "userDelete",
    "twoFactorInfoDelete",
    "sshPublicKeyCreate",
    "projectScheduleDeleteForce",
    "environmentPatchCommit",
];

fn op(s: &str) -> OperationName {
    OperationName::new(s).unwrap()
}

fn railway_mutation_ops(catalog: &Catalog) -> Vec<(String, OperationClass)> {
    let railway = catalog.profile("railway").unwrap();
    RAILWAY_MUTATIONS
        .iter()
        .map(|field| {
            let wanted = format!("mutation {field}");
            let def = railway
                .operations()
                .find(|o| o.requests.contains(&wanted))
                .unwrap_or_else(|| panic!("mutation `{field}` has no operation"));
            ((*field).to_owned(), def.class)
        })
        .collect()
}

#[test]
fn every_railway_mutation_has_an_operation() {
    let catalog = Catalog::builtin().unwrap();
    assert_eq!(railway_mutation_ops(&catalog).len(), 165);
}

#[test]
fn railway_destructive_mutations_are_destructive() {
    let catalog = Catalog::builtin().unwrap();
    let classes = railway_mutation_ops(&catalog);
    for field in RAILWAY_DESTRUCTIVE {
        let class = classes.iter().find(|(f, _)| f == field).unwrap().1;
        assert_eq!(class, OperationClass::Destructive, "{field}");
    }
    // Every mutation whose name says delete or remove is destructive.
    for (field, class) in &classes {
        if field.contains("Delete") || field.contains("Remove") && !field.contains("FlagRemove") {
            assert!(
                *class == OperationClass::Destructive
                    || [
                        "projectScheduleDeleteCancel",
                        "serviceRemoveUpstreamUrl",
                        "usageLimitRemove",
                        "userFlagsRemove"
                    ]
                    .contains(&field.as_str()),
                "{field} is {class}"
            );
        }
    }
}

#[test]
fn no_mutation_is_a_read_and_no_query_is_a_write() {
    let catalog = Catalog::builtin().unwrap();
    for def in catalog.profile("railway").unwrap().operations() {
        if def.requests.iter().any(|r| r.starts_with("mutation ")) {
            assert_ne!(def.class, OperationClass::Read, "{}", def.name);
        }
        if def.requests.iter().any(|r| r.starts_with("query ")) {
            assert_eq!(def.class, OperationClass::Read, "{}", def.name);
        }
    }
}

#[test]
fn profiles_and_kinds() {
    let catalog = Catalog::builtin().unwrap();
    let names: Vec<&str> = catalog.profiles().map(|p| p.name()).collect();
    assert_eq!(names, ["github", "railway", "rest"]);
    assert_eq!(
        catalog.profile("railway").unwrap().kind(),
        ProfileKind::Graphql
    );
    assert_eq!(
        catalog.profile("railway").unwrap().graphql_endpoints(),
        ["/graphql/v2"]
    );
    assert_eq!(catalog.profile("github").unwrap().kind(), ProfileKind::Rest);
    for p in catalog.profiles() {
        assert!(!p.samples().is_empty(), "{} has no samples", p.name());
        let last = p.operations().last().unwrap();
        assert_eq!(last.name, OperationName::unknown(p.name()));
        assert_eq!(last.class, OperationClass::Destructive);
    }
}

#[test]
fn github_covers_the_required_resources() {
    let catalog = Catalog::builtin().unwrap();
    let resources: BTreeSet<String> = catalog
        .profile("github")
        .unwrap()
        .operations()
        .filter_map(|o| {
            o.name
                .as_str()
                .split_once(':')
                .and_then(|(_, r)| r.split_once('.'))
                .map(|(r, _)| r.to_owned())
        })
        .collect();
    for r in [
        "repo",
        "branch",
        "branch_protection",
        "deploy_key",
        "secret",
        "webhook",
        "release",
    ] {
        assert!(resources.contains(r), "{r}");
    }
    for (name, class) in [
        ("github:repo.delete", OperationClass::Destructive),
        ("github:repo.read", OperationClass::Read),
        ("github:release.write", OperationClass::Write),
        ("github:secret.update", OperationClass::Destructive),
        ("github:deploy_key.create", OperationClass::Destructive),
        (
            "github:branch_protection.delete",
            OperationClass::Destructive,
        ),
    ] {
        assert_eq!(catalog.class_of(&op(name)), Some(class), "{name}");
    }
}

#[test]
fn operation_names_are_unique_across_the_catalog() {
    let catalog = Catalog::builtin().unwrap();
    let mut seen = BTreeSet::new();
    for def in catalog.operations() {
        assert!(seen.insert(def.name.clone()), "{}", def.name);
        assert!(!def.summary.is_empty());
    }
}

#[test]
fn expand_and_class_of() {
    let catalog = Catalog::builtin().unwrap();
    let expand = |p: &str| catalog.expand(&OperationPattern::new(p).unwrap());
    assert_eq!(expand("railway:volume.delete").len(), 1);
    assert!(
        expand("github:*.read")
            .iter()
            .all(|o| o.class == OperationClass::Read)
    );
    assert!(expand("railway:nothing.*").is_empty());
    assert_eq!(
        catalog.class_of(&OperationName::unknown("railway")),
        Some(OperationClass::Destructive)
    );
}

const EXTRA: &str = r#"
[profile]
name = "billing"
kind = "rest"
summary = "an internal billing API"
[profile.credential]
header = "X-Api-Key"
template = "{credential}"
[[operation]]
name = "billing:invoice.void"
class = "destructive"
summary = "void an invoice"
routes = ["POST /invoices/{id}/void"]
"#;

#[test]
fn extra_dir_adds_and_replaces_profiles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("billing.toml"), EXTRA).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a profile").unwrap();
    let rest = EXTRA.replace("billing", "rest");
    std::fs::write(dir.path().join("rest.toml"), rest).unwrap();
    let catalog = Catalog::load(Some(dir.path())).unwrap();
    assert_eq!(
        catalog.class_of(&op("billing:invoice.void")),
        Some(OperationClass::Destructive)
    );
    assert_eq!(
        catalog.profile("billing").unwrap().credential().header(),
        "X-Api-Key"
    );
    // The folder's `rest` replaced the built-in one.
    assert!(catalog.class_of(&op("rest:request.read")).is_none());
    assert!(catalog.class_of(&op("rest:invoice.void")).is_some());
    assert!(catalog.profile("railway").is_some());
}

#[test]
fn a_bad_file_in_the_dir_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("billing.toml"),
        EXTRA.replace("\"destructive\"", "\"harmless\""),
    )
    .unwrap();
    let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
    assert!(
        err.contains("billing.toml` line 11: unknown class `harmless`"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn the_same_profile_twice_in_the_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), EXTRA).unwrap();
    std::fs::write(dir.path().join("b.toml"), EXTRA).unwrap();
    let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("already defined"), "{err}");
}

#[test]
fn a_missing_dir_is_an_error() {
    let err = Catalog::load(Some(std::path::Path::new("/nonexistent/catalog"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/catalog"), "{err}");
}
