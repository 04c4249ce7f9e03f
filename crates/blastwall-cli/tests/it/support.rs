//! Running the binary in a temporary folder.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// A temporary folder with a `blastwall` to run in it.
pub struct Bw {
    pub dir: tempfile::TempDir,
    pub extra_env: Vec<(String, String)>,
}

impl Bw {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            extra_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = match std::env::var_os("BLASTWALL_TEST_BIN") {
            Some(bin) => Command::new(bin),
            None => Command::cargo_bin("blastwall").unwrap(),
        };
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "tester")
            .env("BLASTWALL_LOG", "debug")
            .current_dir(self.path());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// A plain `std::process::Command` with the same environment, for long-running children.
    pub fn std_cmd(&self) -> std::process::Command {
        let bin = std::env::var_os("BLASTWALL_TEST_BIN")
            .map_or_else(|| assert_cmd::cargo::cargo_bin("blastwall"), PathBuf::from);
        let mut c = std::process::Command::new(bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "tester")
            .env("BLASTWALL_LOG", "debug")
            .current_dir(self.path());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs and returns the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs with stdin.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.cmd().args(args).write_stdin(stdin).output().unwrap()
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "blastwall {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `--json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }
}

/// The arguments that seal a credential, read from stdin, for a generic REST upstream `api` in
/// environment `env`.
pub fn add_api_upstream(env: &str) -> [&str; 10] {
    [
        "upstream",
        "add",
        "api",
        "--profile",
        "rest",
        "--base-url",
        "https://api.example.com",
        "--env",
        env,
        "--secret-stdin",
    ]
}

/// Every file under `dir`, recursively, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
