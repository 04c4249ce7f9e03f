//! A throwaway S3 (and IAM) on loopback: moto's server, from the venv that `scripts/test.sh`
//! creates, with a bucket that has Object Lock in COMPLIANCE mode and three IAM users (admin,
//! writer, reader) whose policies moto enforces once [`MotoServer::start`] has set things up.
//!
//! A missing moto is an error, never a skip: the test that needs it fails with a hint.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The environment variable naming the `moto_server` executable.
pub const MOTO_ENV: &str = "BLASTWALL_TEST_MOTO";

/// An AWS access key pair made by moto's IAM.
#[derive(Debug, Clone)]
pub struct AwsKey {
    /// The access key id.
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

/// A running moto server, set up and enforcing IAM; killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket (Object Lock, default COMPLIANCE retention of one day).
    pub bucket: String,
    /// The key prefix the users' policies are scoped to (`prod/`).
    pub prefix: String,
    /// May do anything (but delete a locked version, which the lock refuses).
    pub admin: AwsKey,
    /// `s3:PutObject` on `prefix/backups/` and `prefix/canary/`, `s3:ListBucket` and
    /// `s3:GetBucketObjectLockConfiguration`.
    pub writer: AwsKey,
    /// The writer's rights plus `s3:GetObject`, `s3:GetObjectVersion` and
    /// `s3:ListBucketVersions`, and `s3:PutObject` on `prefix/drills/` only.
    pub reader: AwsKey,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `moto_server` is: `$BLASTWALL_TEST_MOTO`, else `~/.cache/blastwall/moto-venv/bin/`.
pub fn moto_path() -> PathBuf {
    if let Some(p) = std::env::var_os(MOTO_ENV) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/blastwall/moto-venv/bin/moto_server")
}

impl MotoServer {
    /// Starts moto on a free loopback port, creates the bucket and the users, then turns on
    /// IAM enforcement.
    pub fn start() -> anyhow::Result<Self> {
        let bin = moto_path();
        if !bin.is_file() {
            bail!(
                "moto's server is not at `{}`\nhint: run `scripts/test.sh` (it creates the venv), or `python3 -m venv ~/.cache/blastwall/moto-venv && ~/.cache/blastwall/moto-venv/bin/pip install 'moto[server]==5.2.5'`, or set {MOTO_ENV}",
                bin.display()
            );
        }
        let python = bin.with_file_name("python");
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p0"])
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{}`", bin.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        for out in [
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.split("Running on ").nth(1) {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            });
        }
        let endpoint = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("moto's server did not start within 60s");
            }
        };
        let mut server = Self {
            child,
            endpoint,
            bucket: "blastwall-backups".into(),
            prefix: "prod/".into(),
            admin: AwsKey {
                id: String::new(),
                secret: String::new(),
            },
            writer: AwsKey {
                id: String::new(),
                secret: String::new(),
            },
            reader: AwsKey {
                id: String::new(),
                secret: String::new(),
            },
        };
        let keys = server.python(&python, SETUP)?;
        let v: serde_json::Value =
            serde_json::from_str(keys.trim()).context("moto setup printed no keys")?;
        let key = |who: &str| -> anyhow::Result<AwsKey> {
            Ok(AwsKey {
                id: v[who]["id"].as_str().context("no key id")?.to_owned(),
                secret: v[who]["secret"].as_str().context("no secret")?.to_owned(),
            })
        };
        server.admin = key("admin")?;
        server.writer = key("writer")?;
        server.reader = key("reader")?;
        server.enforce_iam()?;
        Ok(server)
    }

    /// `s3://bucket/prefix`.
    pub fn s3_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }

    /// Runs a Python (boto3) script against the server with the admin's key (or none before
    /// setup); returns its stdout. The script sees `ENDPOINT`, `BUCKET`, `PREFIX` in its
    /// environment and `sys.argv[1:]` as given.
    pub fn admin_python(&self, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let python = moto_path().with_file_name("python");
        let mut cmd = self.python_cmd(&python, script);
        cmd.args(args)
            .env("AWS_ACCESS_KEY_ID", &self.admin.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.admin.secret);
        run(cmd)
    }

    fn python(&self, python: &std::path::Path, script: &str) -> anyhow::Result<String> {
        let mut cmd = self.python_cmd(python, script);
        cmd.env("AWS_ACCESS_KEY_ID", "bootstrap")
            .env("AWS_SECRET_ACCESS_KEY", "bootstrap");
        run(cmd)
    }

    fn python_cmd(&self, python: &std::path::Path, script: &str) -> Command {
        let mut cmd = Command::new(python);
        cmd.arg("-c")
            .arg(script)
            .env("ENDPOINT", &self.endpoint)
            .env("BUCKET", &self.bucket)
            .env("PREFIX", &self.prefix)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        cmd
    }

    /// From now on moto authenticates every request and applies the users' IAM policies
    /// (`POST /moto-api/reset-auth` with 0 actions left unauthenticated).
    fn enforce_iam(&self) -> anyhow::Result<()> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).context("cannot reach moto")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
        )?;
        let mut resp = String::new();
        std::io::Read::read_to_string(&mut s, &mut resp)?;
        if !resp.starts_with("HTTP/1.1 200") && !resp.starts_with("HTTP/1.0 200") {
            bail!(
                "moto refused to turn on IAM: {}",
                resp.lines().next().unwrap_or("")
            );
        }
        Ok(())
    }
}

fn run(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run moto's python")?;
    if !out.status.success() {
        bail!(
            "the moto script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the bucket (Object Lock, default COMPLIANCE for one day) and the three users.
const SETUP: &str = r#"
import json, os, boto3
ep, bucket, prefix = os.environ["ENDPOINT"], os.environ["BUCKET"], os.environ["PREFIX"]
iam = boto3.client("iam", endpoint_url=ep)
s3 = boto3.client("s3", endpoint_url=ep)
s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
    "ObjectLockEnabled": "Enabled",
    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
b = f"arn:aws:s3:::{bucket}"
lists = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"], "Resource": b}
policies = {
    "admin": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    "writer": [{"Effect": "Allow", "Action": "s3:PutObject",
                "Resource": [f"{b}/{prefix}backups/*", f"{b}/{prefix}canary/*"]}, lists],
    "reader": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"], "Resource": f"{b}/{prefix}*"},
               {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{b}/{prefix}drills/*"},
               {"Effect": "Allow", "Action": "s3:ListBucketVersions", "Resource": b}, lists],
}
out = {}
for user, stmts in policies.items():
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=user,
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": stmts}))
    k = iam.create_access_key(UserName=user)["AccessKey"]
    out[user] = {"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}
print(json.dumps(out))
"#;
