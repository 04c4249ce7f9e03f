//! Scratch targets for drills: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`, in a
//! temporary folder), stopped and removed when dropped. It listens on a Unix socket in that
//! folder only (mode 0700, owned by the user the cluster runs as), not on TCP: its
//! authentication is `trust`, so no other local user may reach it while a drill runs.
//!
//! `initdb` refuses to run as root; as root the cluster runs as an unprivileged user
//! (`blastwall-pg`, else `postgres`, else `nobody`) through `runuser`. This is product code (the
//! drill runner on the vault host uses it), separate from the test harness's copy.

use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::VaultError;

/// Users a root drill runner runs PostgreSQL as, in order of preference.
pub const RUN_AS: [&str; 3] = ["blastwall-pg", "postgres", "nobody"];

/// The PostgreSQL binary `name`: from `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
pub fn pg_bin(name: &str) -> PathBuf {
    bindir()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").is_file() {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct ScratchPostgres {
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<String>,
    /// The folder's lock ([`hold`]), released after the folder is removed.
    _held: std::fs::File,
}

/// The file in a drill's folder (its work folder, its scratch cluster's) that the drill holds
/// locked while it runs: a folder whose lock nobody holds is a crashed drill's leftovers.
const LOCK_FILE: &str = ".blastwall-drill.lock";

/// The prefix of every folder a drill makes in a temporary folder.
const FOLDER_PREFIX: &str = "blastwall-drill-";

/// The subfolder of a scratch cluster's folder that holds the cluster (owned by the user it
/// runs as).
const CLUSTER: &str = "cluster";

/// Marks `dir` (just made by this process) as a running drill's: an exclusive lock on a file
/// in it, held until the returned file is dropped.
pub(crate) fn hold(dir: &Path) -> Result<std::fs::File, VaultError> {
    // Locked under another name, then renamed: a sweep never sees the lock file unlocked.
    let making = dir.join(format!("{LOCK_FILE}.new"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&making)
        .map_err(|e| VaultError::io("create", &making, e))?;
    f.lock().map_err(|e| VaultError::io("lock", &making, e))?;
    let path = dir.join(LOCK_FILE);
    std::fs::rename(&making, &path).map_err(|e| VaultError::io("rename", &path, e))?;
    Ok(f)
}

/// Removes what crashed drills left in the temporary folders (a drill killed with `kill -9`
/// leaves its decrypted dump and, for PostgreSQL, a running scratch cluster with trust
/// authentication): every `blastwall-drill-*` folder whose lock file this user made and nobody
/// holds. Folders of drills running now (their lock is held), of other users, or without a lock
/// file are left alone.
pub(crate) fn sweep_stale() {
    let mut bases = vec![std::env::temp_dir(), next_base_dir()];
    bases.dedup();
    let me = rustix::process::geteuid().as_raw();
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(FOLDER_PREFIX)
            {
                continue;
            }
            // The folder itself must be this user's: in a sticky temporary folder nobody else
            // can then rename or replace it while the checks below run.
            let ours = std::fs::symlink_metadata(&dir)
                .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == me);
            if !ours {
                continue;
            }
            let lock_path = dir.join(LOCK_FILE);
            // No symbolic link followed, no wait on a FIFO; the open file itself is checked.
            let Ok(lock) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(no_follow_no_block())
                .open(&lock_path)
            else {
                continue;
            };
            let Ok(meta) = lock.metadata() else {
                continue;
            };
            if !meta.is_file() || std::os::unix::fs::MetadataExt::uid(&meta) != me {
                continue;
            }
            if lock.try_lock().is_err() {
                continue;
            }
            let cluster = dir.join(CLUSTER);
            let data = cluster.join("data");
            if postmaster_of(&data) {
                let stopped = server_command_in(
                    &cluster,
                    is_root().then(unprivileged).and_then(Result::ok),
                    "pg_ctl",
                )
                .arg("-D")
                .arg(&data)
                .args(["stop", "-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
                if !stopped.is_ok_and(|s| s.success()) {
                    tracing::warn!(dir = %dir.display(), "could not stop a crashed drill's scratch cluster");
                }
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(dir = %dir.display(), "removed what a crashed drill left"),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove what a crashed drill left")
                }
            }
            drop(lock);
        }
    }
}

impl ScratchPostgres {
    /// Starts a cluster (blocking: a second or two).
    pub fn start() -> Result<Self, VaultError> {
        let run_as = if is_root() {
            Some(unprivileged()?)
        } else {
            None
        };
        let base = base_dir(run_as.is_some());
        let dir = tempfile::Builder::new()
            .prefix("blastwall-drill-pg-")
            .tempdir_in(&base)
            .map_err(|e| VaultError::io("create", &base, e))?;
        // The folder in the temporary folder stays this user's (only its owner may rename or
        // replace it there, so a sweep's checks hold); the cluster lives in a subfolder that
        // the user it runs as owns, private: its socket accepts anyone who reaches it (trust
        // authentication).
        let held = hold(dir.path())?;
        let outer = if run_as.is_some() { 0o711 } else { 0o700 };
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(outer),
        )
        .map_err(|e| VaultError::io("chmod", dir.path(), e))?;
        let cluster = dir.path().join(CLUSTER);
        std::fs::create_dir(&cluster).map_err(|e| VaultError::io("create", &cluster, e))?;
        std::fs::set_permissions(
            &cluster,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| VaultError::io("chmod", &cluster, e))?;
        if let Some(user) = &run_as {
            let (uid, gid) = (id_of(user, "-u"), id_of(user, "-g"));
            std::os::unix::fs::chown(&cluster, uid, gid)
                .map_err(|e| VaultError::io("chown", &cluster, e))?;
        }
        let mut s = Self {
            dir,
            port: 0,
            run_as,
            _held: held,
        };
        let data = s.data_dir();
        let out = s
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| tool_error("initdb", &e.to_string()))?;
        if !out.status.success() {
            return Err(tool_error("initdb", &String::from_utf8_lossy(&out.stderr)));
        }
        let conf = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| VaultError::io("read", &conf, e))?;
        text.push_str(&format!(
            "\n# blastwall drill\nlisten_addresses = ''\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            s.socket_dir().display()
        ));
        std::fs::write(&conf, text).map_err(|e| VaultError::io("write", &conf, e))?;
        let mut last = String::new();
        for _ in 0..5 {
            s.port = free_port()?;
            let out = s
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(s.socket_dir().join("postgres.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", s.port))
                .arg("start")
                .stdout(Stdio::null())
                .output()
                .map_err(|e| tool_error("pg_ctl", &e.to_string()))?;
            if out.status.success() {
                tracing::debug!(dir = %s.dir.path().display(), port = s.port, "scratch cluster started");
                return Ok(s);
            }
            last = std::fs::read_to_string(s.socket_dir().join("postgres.log")).unwrap_or_default();
            if !last.contains("could not bind") && !last.contains("already in use") {
                break;
            }
        }
        Err(tool_error("pg_ctl start", &last))
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", db)
    }

    /// The URL of database `db` as `role`, over the cluster's Unix socket (`host=` the folder;
    /// the port names the socket file).
    pub fn url_as(&self, role: &str, db: &str) -> String {
        let dir: String =
            url::form_urlencoded::byte_serialize(self.socket_dir().as_os_str().as_encoded_bytes())
                .collect();
        format!("postgres://{role}@localhost:{}/{db}?host={dir}", self.port)
    }

    /// The port (it names the socket file; nothing listens on TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the cluster's Unix socket (and its data folder and log).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join(CLUSTER)
    }

    fn data_dir(&self) -> PathBuf {
        self.socket_dir().join("data")
    }

    fn server_command(&self, name: &str) -> Command {
        server_command_in(&self.socket_dir(), self.run_as.clone(), name)
    }
}

/// The server tool `name`, run in `dir` as `run_as` (a root process runs the cluster as an
/// unprivileged user, as PostgreSQL requires).
fn server_command_in(dir: &Path, run_as: Option<String>, name: &str) -> Command {
    let program = pg_bin(name);
    let mut cmd = match run_as {
        None => Command::new(program),
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", &user, "--"]).arg(program);
            c
        }
    };
    cmd.current_dir(dir).env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn tool_error(tool: &str, detail: &str) -> VaultError {
    VaultError::Tool {
        tool: tool.to_owned(),
        detail: crate::source::last_lines(detail, 3),
        hint: "the drill runner needs the PostgreSQL server binaries (Debian: `apt-get install postgresql`) and, as root, `runuser` and a `blastwall-pg` user".into(),
    }
}

fn free_port() -> Result<u16, VaultError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| VaultError::io("bind", Path::new("127.0.0.1:0"), e))
}

/// Where scratch clusters are made: `/tmp` when they run as another user (whom the caller's
/// `TMPDIR` may not admit), the system's temporary folder otherwise.
fn base_dir(as_other_user: bool) -> PathBuf {
    if as_other_user {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// Where the next scratch cluster will live (for a drill's free-space check).
pub(crate) fn next_base_dir() -> PathBuf {
    base_dir(is_root())
}

/// Whether the process `data/postmaster.pid` names is that cluster's postmaster, running: the
/// file of a cluster gone with a reboot may name another process by now, which a stop would
/// signal.
fn postmaster_of(data: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let mut lines = text.lines();
    let Some(pid) = lines.next().and_then(|l| l.trim().parse::<u32>().ok()) else {
        return false;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_postgres = args
        .first()
        .is_some_and(|a| a.ends_with(b"postgres") || a.ends_with(b"postmaster"));
    let data = data.as_os_str().as_encoded_bytes();
    is_postgres && args.contains(&data)
}

/// `O_NOFOLLOW | O_NONBLOCK`.
fn no_follow_no_block() -> i32 {
    i32::try_from((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits()).unwrap_or(0)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn unprivileged() -> Result<String, VaultError> {
    RUN_AS
        .iter()
        .find(|u| id_of(u, "-u").is_some())
        .map(|u| (*u).to_owned())
        .ok_or_else(|| {
            tool_error(
                "initdb",
                "running as root and none of the users blastwall-pg, postgres, nobody exists",
            )
        })
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `postmaster.pid` naming a process that is not that cluster's postmaster (this test's
    /// own, or none) is not taken for one: a crashed drill's cluster is stopped only when its
    /// postmaster still runs.
    #[test]
    fn a_stale_pid_file_names_no_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let write = |pid: &str| {
            std::fs::write(
                data.join("postmaster.pid"),
                format!("{pid}\n{}\n", data.display()),
            )
            .unwrap();
        };
        write(&std::process::id().to_string());
        assert!(!postmaster_of(&data));
        write("999999999");
        assert!(!postmaster_of(&data));
        write("not a pid");
        assert!(!postmaster_of(&data));
        std::fs::remove_file(data.join("postmaster.pid")).unwrap();
        assert!(!postmaster_of(&data));
    }

    /// The cluster trusts whoever connects, so it must not be reachable over TCP, only through
    /// its private socket folder.
    #[test]
    fn the_scratch_cluster_listens_on_its_private_socket_only() {
        let pg = ScratchPostgres::start().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(pg.socket_dir()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&pg.url("postgres"))
                .await
                .unwrap();
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(one, 1);
        });
    }
}
