//! A generated tree with secrets planted where they hide (dotfiles, ignored folders, archives,
//! shell history, CLI config, Terraform state, minified JS, UTF-16, binaries, base64 in YAML)
//! and decoys (placeholders, bad checksums, variable references), scanned with default and with
//! tiny chunks: the exact findings are expected, the same on every code path.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use blastwall_core::{EnvName, Tier};
use blastwall_scan::{Confidence, Location, Severity, WallFile};

use crate::support::{Rng, blastwall_token, github_token, scanner, small_chunks, summarize};

struct Planted {
    prod_password: String,
    stripe: String,
}

fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn build_tree(root: &Path) -> Planted {
    let mut rng = Rng::new(5);
    write(
        root,
        ".env",
        format!("# app settings\nGITHUB_TOKEN={}\n", github_token(&mut rng)),
    );
    write(
        root,
        ".env.production",
        format!(
            "DATABASE_URL=postgres://app:{}@db.internal:5432/app\n",
            rng.alnum(20)
        ),
    );
    write(
        root,
        ".bash_history",
        format!(
            "ls -la\nmysql -h db -u root -p{} shop\nexport AWS_SECRET_ACCESS_KEY={}\n",
            rng.alnum(14),
            rng.string(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                40
            )
        ),
    );
    write(
        root,
        ".aws/credentials",
        format!(
            "[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {}\n",
            rng.string("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            rng.string(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                40
            )
        ),
    );
    let uuid = rng.hex(32);
    write(
        root,
        ".config/railway/config.json",
        format!(
            "{{\"user\": {{\"token\": \"{}-{}-{}-{}-{}\"}}}}\n",
            &uuid[..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..]
        ),
    );
    // Hidden from git, not from a wall scan.
    write(root, ".gitignore", "secrets/\n");
    let body = STANDARD.encode(rng.bytes(600));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    write(
        root,
        "secrets/deploy.pem",
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    );
    // An old backup: tar inside gzip.
    let stripe = format!("sk_live_{}", rng.alnum(24));
    {
        let file = fs::File::create(root.join("backup.tar.gz")).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let content = format!("STRIPE_SECRET_KEY={stripe}\n");
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "app/.env", content.as_bytes())
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    {
        let file = fs::File::create(root.join("archive.zip")).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(
            "config/settings.yaml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        write!(
            zip,
            "slack:\n  bot: xoxb-{}-{}-{}\n",
            rng.string("0123456789", 12),
            rng.string("0123456789", 13),
            rng.alnum(24)
        )
        .unwrap();
        zip.finish().unwrap();
    }
    write(
        root,
        "infra/terraform.tfstate",
        format!(
            "{{\n  \"version\": 4,\n  \"resources\": [{{\n    \"attributes\": {{\n      \"password\": \"{}\",\n      \"username\": \"app\"\n    }}\n  }}]\n}}\n",
            rng.alnum(16)
        ),
    );
    write(
        root,
        "infra/prod.tfvars",
        format!("db_password = \"{}\"\n", rng.alnum(12)),
    );
    // Minified JS: one 300 KB line, longer than any chunk.
    let mut js = "var a=1;".repeat(20_000);
    let key = format!("sk-proj-{}T3BlbkFJ{}", rng.alnum(40), rng.alnum(40));
    js.push_str(&format!("const k=\"{key}\";"));
    js.push_str(&"var b=2;".repeat(20_000));
    write(root, "web/app.min.js", js);
    // UTF-16LE with a BOM, as Windows editors write it.
    let text = format!("user=admin\r\npassword={}\r\n", rng.alnum(12));
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    write(root, "win/creds.txt", utf16);
    // A binary with a key inside (no newline bytes, so everything is on line 1).
    let mut bin: Vec<u8> = rng
        .bytes(5000)
        .into_iter()
        .map(|b| if b == b'\n' { 0 } else { b })
        .collect();
    bin.extend_from_slice(
        format!(
            "\0ANTHROPIC=sk-ant-api03-{}AA\0",
            rng.string(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                93
            )
        )
        .as_bytes(),
    );
    bin.extend(
        rng.bytes(3000)
            .into_iter()
            .map(|b| if b == b'\n' { 0 } else { b }),
    );
    bin[10] = 0;
    write(root, "bin/tool.bin", bin);
    // Base64-wrapped in a Kubernetes secret.
    write(
        root,
        "k8s/secret.yaml",
        format!(
            "apiVersion: v1\nkind: Secret\ndata:\n  token: {}\n",
            STANDARD.encode(github_token(&mut rng))
        ),
    );
    // A production secret with no known format, found only by its fingerprint.
    let prod_password = "Mv7#kQ2!pL9zR4wq".to_owned();
    write(
        root,
        "notes/handover.txt",
        format!("handover notes\n\nthe prod db password is {prod_password} (rotate it)\n"),
    );
    write(
        root,
        "scripts/deploy.sh",
        format!(
            "#!/bin/sh\nexport BLASTWALL_TOKEN={}\n",
            blastwall_token(&mut rng, "production")
        ),
    );
    write(
        root,
        "allowed.env",
        format!("API_TOKEN={} # blastwall:allow\n", rng.alnum(32)),
    );
    // Decoys: none of these is a finding.
    write(
        root,
        "docs/README.md",
        format!(
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\
             password: changeme\n\
             token: <token>\n\
             api_key: xxxxxxxxxxxxxxxx\n\
             the old value ghp_{} was revoked\n\
             DATABASE_URL=postgres://user:${{DB_PASSWORD}}@db/app\n\
             SECRET_KEY = settings.SECRET_KEY_VALUE\n\
             password = getpass()\n\
             token: abcdefabcdefabcdef\n\
             -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA...\n-----END RSA PRIVATE KEY-----\n",
            rng.alnum(36)
        ),
    );
    std::os::unix::fs::symlink(".env", root.join("link-to-env")).unwrap();
    Planted {
        prod_password,
        stripe,
    }
}

fn expected() -> Vec<(String, u64, String)> {
    let mut e: Vec<(String, u64, String)> = [
        (".aws/credentials", 2, "aws.access-key-id"),
        (".aws/credentials", 3, "aws.secret-access-key"),
        (".bash_history", 2, "db.cli-password"),
        (".bash_history", 3, "aws.secret-access-key"),
        (
            ".config/railway/config.json",
            1,
            "generic.uuid-secret-assignment",
        ),
        (".env", 2, "github.pat-classic"),
        (".env.production", 1, "db.url-password"),
        ("archive.zip!config/settings.yaml", 2, "slack.bot-token"),
        ("backup.tar.gz!backup.tar!app/.env", 1, "stripe.secret-key"),
        ("bin/tool.bin", 1, "anthropic.api-key"),
        ("infra/prod.tfvars", 1, "db.password-variable"),
        ("infra/terraform.tfstate", 5, "generic.password-assignment"),
        ("k8s/secret.yaml", 4, "github.pat-classic"),
        ("notes/handover.txt", 3, "wall.fingerprint"),
        ("scripts/deploy.sh", 2, "blastwall.credential"),
        ("secrets/deploy.pem", 2, "privkey.rsa"),
        ("web/app.min.js", 1, "openai.api-key"),
        ("win/creds.txt", 2, "generic.password-assignment"),
    ]
    .iter()
    .map(|(p, l, r)| ((*p).to_owned(), *l, (*r).to_owned()))
    .collect();
    e.sort();
    e
}

#[test]
fn planted_secrets_are_found_exactly_and_decoys_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let planted = build_tree(root);
    let wall = WallFile::build(
        &EnvName::new("production").unwrap(),
        Tier::Prod,
        [planted.prod_password.as_bytes(), planted.stripe.as_bytes()],
    )
    .unwrap();
    for options in [blastwall_scan::ScanOptions::default(), small_chunks()] {
        let scanner = scanner()
            .with_walls([wall.clone()])
            .with_options(options.clone());
        let report = scanner.scan_paths(&[root.to_owned()]);
        assert_eq!(
            summarize(&report.findings, root),
            expected(),
            "chunk size {}",
            options.chunk_size
        );
        let s = &report.summary;
        assert_eq!(s.suppressed_inline, 1);
        assert!(s.unreadable.is_empty(), "{:?}", s.unreadable);
        assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
        assert!(s.skipped[0].path.ends_with("link-to-env"));
        assert!(s.is_complete());
        assert_eq!(s.archive_members_scanned, 3);

        let by_rule = |rule: &str| report.findings.iter().find(|f| f.rule == rule).unwrap();
        let fp = by_rule("wall.fingerprint");
        assert_eq!(fp.severity, Severity::Critical);
        assert_eq!(fp.confidence, Confidence::Fingerprint);
        assert_eq!(fp.wall_env.as_deref(), Some("production"));
        // The Stripe key is both a known format and a fingerprinted production secret.
        let stripe = by_rule("stripe.secret-key");
        assert_eq!(stripe.severity, Severity::Critical);
        assert_eq!(stripe.confidence, Confidence::Fingerprint);
        let bw = by_rule("blastwall.credential");
        assert_eq!(bw.severity, Severity::Critical);
        assert_eq!(bw.token_env.as_deref(), Some("production"));
        assert_eq!(
            by_rule("github.pat-classic").confidence,
            Confidence::Checksum
        );
        let wrapped = report
            .findings
            .iter()
            .find(|f| f.location.group_key().ends_with("k8s/secret.yaml"))
            .unwrap();
        assert_eq!(wrapped.encoding.as_deref(), Some("base64"));
        let js = by_rule("openai.api-key");
        let Location::File { column, .. } = js.location else {
            panic!()
        };
        assert_eq!(column, 160_000 + "const k=\"".len() as u64 + 1);
        assert!(report.has_production_secret());
    }
}

#[test]
fn ignore_files_are_respected_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_tree(root);
    let options = blastwall_scan::ScanOptions {
        respect_ignore_files: true,
        ..blastwall_scan::ScanOptions::default()
    };
    let report = scanner()
        .with_options(options)
        .scan_paths(&[root.to_owned()]);
    let places = summarize(&report.findings, root);
    assert!(
        !places.iter().any(|(p, _, _)| p.starts_with("secrets/")),
        "{places:?}"
    );
    assert!(places.iter().any(|(p, _, _)| p == ".env"));
}
