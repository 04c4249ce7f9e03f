//! A throwaway PostgreSQL cluster for tests.
//!
//! [`PgCluster::start`] finds the server binaries (`pg_config --bindir`, else the highest
//! `/usr/lib/postgresql/*/bin`, else `PATH`), runs `initdb` in a temporary folder (trust auth,
//! superuser `postgres`, no fsync), starts it with `pg_ctl` on a free loopback port with its
//! socket in that folder, and creates a database. Dropping it stops the server
//! (`pg_ctl stop -m immediate`) and removes the folder.
//!
//! `initdb` refuses to run as root, and tests (CI too) do: then the cluster runs as an
//! unprivileged user, `blastwall-pg` (which `.ci/run` creates), else `postgres`, else `nobody`,
//! through `runuser` (or `setpriv`), and the folder is handed to that user.
//!
//! [`PgCluster::shared`] starts one cluster per test binary, on first use; each test then takes a
//! database of its own with [`PgCluster::fresh_database`]. A static is never dropped, so every
//! cluster also has a watchdog process that stops it and removes its folder once the test process
//! is gone, however it ended.
//!
//! All of this is blocking (`std::process`), so it is usable from plain and `#[tokio::test]`
//! tests alike (it blocks the calling thread for the second or two a start takes).

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

/// The database [`PgCluster::start`] creates.
pub const DEFAULT_DB: &str = "blastwall";
/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";
/// The unprivileged users tried, in order, when running as root.
pub const RUN_AS_CANDIDATES: [&str; 3] = ["blastwall-pg", "postgres", "nobody"];

/// A running throwaway cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    root: TempDir,
    bindir: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    watchdog: Option<Child>,
    next_db: AtomicU32,
}

/// How to run a command as the unprivileged user.
#[derive(Debug, Clone)]
struct RunAs {
    user: String,
    uid: u32,
    gid: u32,
    tool: SwitchTool,
}

#[derive(Debug, Clone)]
enum SwitchTool {
    Runuser(PathBuf),
    Setpriv(PathBuf),
}

static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();

impl PgCluster {
    /// Starts a new cluster with a database [`DEFAULT_DB`].
    pub fn start() -> anyhow::Result<Self> {
        let bindir = find_bindir()?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let base = if run_as.is_some() && Path::new("/tmp").is_dir() {
            // Every folder above the cluster must be traversable by the unprivileged user.
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("blastwall-pg-")
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a folder in `{}`", base.display()))?;
        if let Some(r) = &run_as {
            std::os::unix::fs::chown(root.path(), Some(r.uid), Some(r.gid)).with_context(|| {
                format!(
                    "cannot give `{}` to user `{}`",
                    root.path().display(),
                    r.user
                )
            })?;
        }
        let mut cluster = Self {
            root,
            bindir,
            port: 0,
            run_as,
            watchdog: None,
            next_db: AtomicU32::new(0),
        };
        cluster.initdb()?;
        cluster.start_server()?;
        cluster.spawn_watchdog()?;
        cluster.create_database(DEFAULT_DB)?;
        Ok(cluster)
    }

    /// The cluster shared by every test of this test binary, started on first use.
    pub fn shared() -> anyhow::Result<&'static Self> {
        match SHARED.get_or_init(|| Self::start().map_err(|e| format!("{e:#}"))) {
            Ok(c) => Ok(c),
            Err(e) => Err(anyhow!("{e}")),
        }
    }

    /// The URL of the default database: `postgres://postgres@127.0.0.1:PORT/blastwall`.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DB)
    }

    /// The URL of database `db` on this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` (lowercase letters, digits and `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database name `{name}`: use lowercase letters, digits and `_`");
        }
        let createdb = self.client_bin("createdb");
        let out = Command::new(&createdb)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .arg(name)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", createdb.display()))?;
        if !out.status.success() {
            bail!(
                "createdb `{name}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(self.url_for(name))
    }

    /// Creates a database with a name not used before in this cluster and returns its URL.
    pub fn fresh_database(&self) -> anyhow::Result<String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t{}_{n}", std::process::id()))
    }

    /// The cluster's folder (data in `data/`, server log in `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    fn client_bin(&self, name: &str) -> PathBuf {
        let p = self.bindir.join(name);
        if p.is_file() { p } else { PathBuf::from(name) }
    }

    /// A command for a server binary, run as the unprivileged user when we are root.
    fn server_command(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        let mut cmd = match &self.run_as {
            None => Command::new(program),
            Some(r) => {
                let mut c = match &r.tool {
                    SwitchTool::Runuser(tool) => {
                        let mut c = Command::new(tool);
                        c.args(["-u", &r.user, "--"]);
                        c
                    }
                    SwitchTool::Setpriv(tool) => {
                        let mut c = Command::new(tool);
                        c.arg(format!("--reuid={}", r.uid))
                            .arg(format!("--regid={}", r.gid))
                            .arg("--clear-groups");
                        c
                    }
                };
                c.arg(program);
                c
            }
        };
        cmd.current_dir(self.root.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("cannot run `initdb`")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("cannot read `{}`", conf.display()))?;
        text.push_str(&format!(
            "\n# blastwall-test\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n",
            self.root.path().display()
        ));
        std::fs::write(&conf, text).with_context(|| format!("cannot write `{}`", conf.display()))
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let mut last_error = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            let out = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("cannot run `pg_ctl start`")?;
            if out.status.success() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            last_error = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
            );
            // Another process took the port between our probe and the server's bind: retry.
            if !log.contains("could not bind") && !log.contains("already in use") {
                break;
            }
        }
        bail!("pg_ctl start failed: {last_error}")
    }

    /// Starts a process that stops the cluster and removes its folder once this process is gone
    /// (the shared cluster is a static and is never dropped).
    fn spawn_watchdog(&mut self) -> anyhow::Result<()> {
        let stop = self.server_command("pg_ctl");
        let mut args: Vec<OsString> = vec![stop.get_program().to_owned()];
        args.extend(stop.get_args().map(ToOwned::to_owned));
        args.extend(["-D".into(), self.data_dir().into(), "stop".into()]);
        args.extend(["-m".into(), "immediate".into()]);
        let script = "trap '' INT HUP; pid=$1; root=$2; shift 2; \
                      while kill -0 \"$pid\" 2>/dev/null; do sleep 1; done; \
                      \"$@\" >/dev/null 2>&1; rm -rf \"$root\"";
        let child = Command::new("sh")
            .args(["-c", script, "blastwall-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.root.path())
            .args(args)
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the cluster's watchdog (`sh`)")?;
        self.watchdog = Some(child);
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The TempDir removes the folder after this.
    }
}

/// Finds the folder holding `initdb` and `pg_ctl`.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let version: Option<Vec<u32>> =
                        name.split('.').map(|p| p.parse().ok()).collect();
                    version.map(|v| (v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, dir)) = versions.into_iter().rev().find(|(_, d)| has_server(d)) {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_server(d))
    {
        return Ok(dir);
    }
    bail!(
        "no PostgreSQL server binaries (`initdb` and `pg_ctl`) found under `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin or PATH; hint: install them (Debian: `apt-get install postgresql`)"
    )
}

/// Whether this process runs with effective uid 0.
fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
    {
        // Uid: real effective saved filesystem
        return line.split_whitespace().nth(2) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The first of [`RUN_AS_CANDIDATES`] that exists, with a tool to switch to it.
fn unprivileged_user() -> anyhow::Result<RunAs> {
    let tool = if let Some(p) = find_tool("runuser") {
        SwitchTool::Runuser(p)
    } else if let Some(p) = find_tool("setpriv") {
        SwitchTool::Setpriv(p)
    } else {
        bail!(
            "running as root, and neither `runuser` nor `setpriv` is installed to run PostgreSQL \
             as an unprivileged user; hint: install util-linux"
        );
    };
    for user in RUN_AS_CANDIDATES {
        if let (Some(uid), Some(gid)) = (id_of(user, "-u"), id_of(user, "-g")) {
            return Ok(RunAs {
                user: user.to_owned(),
                uid,
                gid,
                tool,
            });
        }
    }
    bail!(
        "running as root, and none of the users {} exists to run PostgreSQL (initdb refuses root); \
         hint: `useradd --system blastwall-pg`",
        RUN_AS_CANDIDATES.join(", ")
    )
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free on loopback right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_server_binaries() {
        let dir = find_bindir().unwrap();
        assert!(dir.join("initdb").is_file());
    }

    #[test]
    fn starts_serves_and_stops() {
        let cluster = PgCluster::start().unwrap();
        let url = cluster.fresh_database().unwrap();
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
        let dir = cluster.dir().to_path_buf();
        let port = cluster.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(cluster);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn the_shared_cluster_is_shared() {
        let a = PgCluster::shared().unwrap();
        let b = PgCluster::shared().unwrap();
        assert_eq!(a.port(), b.port());
        assert_ne!(a.fresh_database().unwrap(), b.fresh_database().unwrap());
    }
}
