//! Issue 6, the S3 Object Lock backend: the real binary against moto's S3 on loopback, with a
//! bucket in COMPLIANCE mode and IAM enforced. Production holds only a writer key (PutObject and
//! lists); the drill host holds a reader key (in an AWS profile) and the age identity.

use std::path::Path;

use blastwall_test::MotoServer;
use serde_json::Value;

use crate::support::{Bw, contains, stderr, stdout};

/// A `Bw` whose AWS settings come only from what the test gives (never the machine's `~/.aws`).
fn aws_bw(moto: &MotoServer) -> Bw {
    let mut bw = Bw::new();
    let home = bw.path().join("aws");
    std::fs::create_dir_all(&home).unwrap();
    bw.extra_env = vec![
        (
            "AWS_CONFIG_FILE".into(),
            home.join("config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            home.join("credentials").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("HOME".into(), bw.path().display().to_string()),
    ];
    let _ = moto;
    bw
}

/// Keys from the drill host's vault folder: (recipient, identity file).
fn age_keys(bw: &Bw) -> (String, String) {
    let data = bw.path().join("keys-vault");
    bw.ok(&[
        "vault",
        "init",
        "--data",
        data.to_str().unwrap(),
        "--min-retention",
        "1d",
    ]);
    let r = bw
        .ok(&["vault", "recipient", "--data", data.to_str().unwrap()])
        .trim()
        .to_owned();
    (r, data.join("keys/backup.key").display().to_string())
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    let mut x: u32 = 99;
    let noise: Vec<u8> = (0..50_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(root.join("uploads/noise.bin"), noise).unwrap();
    std::fs::write(root.join("README"), "customer files\n").unwrap();
}

#[test]
fn s3_backup_drill_restore_and_check_immutability_on_moto() {
    let moto = MotoServer::start().unwrap();
    let mut outputs: Vec<u8> = Vec::new();
    let mut keep = |o: &std::process::Output| {
        outputs.extend_from_slice(&o.stdout);
        outputs.extend_from_slice(&o.stderr);
    };

    // The drill host: the age identity and a reader key in an AWS profile.
    let host = aws_bw(&moto);
    let (recipient, identity) = age_keys(&host);
    std::fs::write(
        host.path().join("aws/credentials"),
        format!(
            "[drills]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto.reader.id, moto.reader.secret
        ),
    )
    .unwrap();

    // Production: the writer key in the environment, the public key only.
    let mut prod = aws_bw(&moto);
    prod.extra_env.extend([
        ("AWS_ACCESS_KEY_ID".into(), moto.writer.id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), moto.writer.secret.clone()),
    ]);
    let url = moto.s3_url();
    let o = prod.run(&[
        "backup",
        "target",
        "add",
        "offsite",
        "--s3",
        &url,
        "--endpoint",
        &moto.endpoint,
        "--recipient",
        &recipient,
    ]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("Object Lock enabled, default COMPLIANCE for 1 day"),
        "{}",
        stdout(&o)
    );
    let src = prod.path().join("srv/files");
    make_tree(&src);
    prod.ok(&[
        "backup",
        "source",
        "add",
        "files",
        "--kind",
        "dir",
        src.to_str().unwrap(),
    ]);
    let o = prod.run(&["backup", "run", "files", "--part-size", "16K", "--json"]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let run: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(run["parts"].as_u64().unwrap() > 2, "{run}");
    assert!(!run["retain_until"].as_str().unwrap().is_empty(), "{run}");
    let before = blastwall_vault::facts::dir_facts(&src).unwrap();
    std::fs::remove_dir_all(prod.path().join("srv")).unwrap();

    // Production cannot drill (no identity), the drill host can.
    let o = host.run(&[
        "backup",
        "target",
        "add",
        "bucket",
        "--s3",
        &url,
        "--endpoint",
        &moto.endpoint,
        "--profile",
        "drills",
        "--recipient",
        &recipient,
        "--identity",
        &identity,
    ]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let o = host.run(&["backup", "drill", "files", "--json"]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let drills: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(drills[0]["passed"], true, "{drills}");
    assert_eq!(drills[0]["backup"], run["id"], "{drills}");

    // A thief with the writer's `s3:PutObject` writes over the manifest without `If-None-Match`
    // (our client always sends it; S3 does not require it). Under Object Lock the original
    // stays as a noncurrent version; drills and restores read the first version, so the backup
    // still drills and restores as it was written.
    let manifest = format!(
        "{}backups/files/{}/manifest.age",
        moto.prefix,
        run["id"].as_str().unwrap()
    );
    moto.admin_python(
        "import boto3, os, sys\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'])\n\
         s3.put_object(Bucket=os.environ['BUCKET'], Key=sys.argv[1], Body=b'forged')\n",
        &[&manifest],
    )
    .unwrap();
    let o = host.run(&["backup", "drill", "files", "--json"]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let drills: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(drills[0]["passed"], true, "{drills}");

    let out = host.path().join("restored");
    let o = host.run(&[
        "backup",
        "restore",
        run["id"].as_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
        "--json",
    ]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(blastwall_vault::facts::dir_facts(&out).unwrap(), before);

    // Both list the backup; the writer sees the drill from its record's name, the reader reads
    // the retention S3 set from the bucket's default rule.
    let o = prod.run(&["backup", "list", "--json"]);
    keep(&o);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["last_drill"]["passed"], true, "{list}");
    let o = host.run(&["backup", "list", "--json"]);
    keep(&o);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        !list[0]["retain_until"].as_str().unwrap().is_empty(),
        "{list}"
    );

    // check-immutability with the writer key: every delete and every bucket change refused;
    // moto lets retention be rewritten (it maps PutObjectRetention to s3:PutObject and never
    // compares dates or modes), so the check must FAIL and name those probes.
    // On an S3-compatible endpoint (moto here) the bucket-level probes run only when asked:
    // such a server might apply them. Not run, they cannot prove anything: the check fails.
    let o = prod.run(&["backup", "check-immutability", "--json"]);
    keep(&o);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let check: Value = serde_json::from_slice(&o.stdout).unwrap();
    let not_run: Vec<&str> = check["s3"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["answer"].as_str().unwrap().starts_with("not run"))
        .map(|p| {
            assert_eq!(p["refused"], false, "{p}");
            p["probe"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        not_run,
        [
            "suspend versioning",
            "change the bucket's lock configuration",
            "put a bucket policy",
            "put a lifecycle rule"
        ],
        "{check}"
    );
    let o = prod.run(&["backup", "check-immutability"]);
    keep(&o);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("NOT RUN"), "{out}");
    assert!(
        out.contains("not run: suspend versioning, change the bucket's lock configuration, put a bucket policy, put a lifecycle rule"),
        "{out}"
    );
    let o = prod.run(&["backup", "check-immutability", "--bucket-probes", "--json"]);
    keep(&o);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let check: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(check["pass"], false, "{check}");
    assert_eq!(check["s3"]["lock_ok"], true, "{check}");
    let mut through = Vec::new();
    let mut refused = Vec::new();
    for p in check["s3"]["probes"].as_array().unwrap() {
        let name = p["probe"].as_str().unwrap().to_owned();
        if p["refused"] == true {
            assert!(p["answer"].as_str().unwrap().contains("403"), "{p}");
            refused.push(name);
        } else {
            through.push(name);
        }
    }
    assert_eq!(
        through,
        [
            "downgrade the canary from COMPLIANCE to GOVERNANCE",
            "shorten the canary's retention"
        ],
        "{check}"
    );
    assert_eq!(
        refused,
        [
            "delete the canary (a delete marker)",
            "delete a canary version",
            "bypass-governance delete of the canary version",
            "suspend versioning",
            "change the bucket's lock configuration",
            "put a bucket policy",
            "put a lifecycle rule"
        ],
        "{check}"
    );
    let o = prod.run(&["backup", "check-immutability", "--bucket-probes"]);
    keep(&o);
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!("s3_check_immutability_on_moto", stdout(&o));

    // The lock holds even for a key that may do anything: no version of the backup can be
    // deleted while it is retained.
    let deleted = moto
        .admin_python(DELETE_ALL_VERSIONS, &[&format!("{}backups/", moto.prefix)])
        .unwrap();
    let v: Value = serde_json::from_str(deleted.trim()).unwrap();
    assert!(v["tried"].as_u64().unwrap() > 3, "{v}");
    // Every object Blastwall wrote carries its SHA-256; the thief's forged version does not.
    assert_eq!(
        v["with_sha256"].as_u64().unwrap() + 1,
        v["tried"].as_u64().unwrap(),
        "every object carries its SHA-256: {v}"
    );
    assert_eq!(v["deleted"], 0, "{v}");
    let o = host.run(&["backup", "drill", "files", "--json"]);
    keep(&o);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));

    // No AWS secret anywhere: not in any output, not in Blastwall's files.
    for secret in [&moto.writer.secret, &moto.reader.secret] {
        assert!(
            !contains(&outputs, secret.as_bytes()),
            "a secret key leaked"
        );
        for bw in [&prod, &host] {
            assert_eq!(
                blastwall_test::find_in_tree(&bw.data(), secret.as_bytes()).unwrap(),
                None
            );
        }
    }
}

#[test]
fn an_s3_target_needs_a_credential_and_a_compliance_bucket() {
    let moto = MotoServer::start().unwrap();
    let bw = aws_bw(&moto);
    let (recipient, _) = age_keys(&bw);
    let add = |bw: &Bw, url: &str| {
        bw.run(&[
            "backup",
            "target",
            "add",
            "offsite",
            "--s3",
            url,
            "--endpoint",
            &moto.endpoint,
            "--recipient",
            &recipient,
        ])
    };
    // No credential at all: a clear error, nothing saved.
    let o = add(&bw, &moto.s3_url());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no AWS credential for the S3 target"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    // A bucket without Object Lock: refused, even with a key that may do anything.
    moto.admin_python(
        "import os, boto3; boto3.client('s3', endpoint_url=os.environ['ENDPOINT']).create_bucket(Bucket='unlocked')",
        &[],
    )
    .unwrap();
    let mut admin = aws_bw(&moto);
    admin.extra_env.extend([
        ("AWS_ACCESS_KEY_ID".into(), moto.admin.id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), moto.admin.secret.clone()),
    ]);
    let o = add(&admin, "s3://unlocked/prod");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not lock backups in COMPLIANCE mode"),
        "{}",
        stderr(&o)
    );
    assert!(!contains(&o.stderr, moto.admin.secret.as_bytes()));
    // A wrong secret: S3 refuses, and the message does not echo it.
    let mut wrong = aws_bw(&moto);
    wrong.extra_env.extend([
        ("AWS_ACCESS_KEY_ID".into(), moto.writer.id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            "canary-not-the-secret-0451".into(),
        ),
    ]);
    let o = add(&wrong, &moto.s3_url());
    assert!(!o.status.success());
    assert!(
        !contains(&o.stderr, b"canary-not-the-secret-0451"),
        "{}",
        stderr(&o)
    );
    assert!(!contains(&o.stdout, b"canary-not-the-secret-0451"));
    // A bad URL is a usage error.
    let o = add(&bw, "s3://Bad_Bucket/x");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid S3 location"), "{}", stderr(&o));
}

/// Tries to delete every version under a prefix with the admin key; prints what happened.
const DELETE_ALL_VERSIONS: &str = r#"
import json, os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["ENDPOINT"])
b = os.environ["BUCKET"]
vs = s3.list_object_versions(Bucket=b, Prefix=sys.argv[1]).get("Versions", [])
deleted = 0
with_sha256 = 0
for v in vs:
    h = s3.head_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"], ChecksumMode="ENABLED")
    with_sha256 += 1 if h.get("ChecksumSHA256") else 0
    try:
        s3.delete_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)
        deleted += 1
    except Exception:
        pass
print(json.dumps({"tried": len(vs), "deleted": deleted, "with_sha256": with_sha256}))
"#;
