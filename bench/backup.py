#!/usr/bin/env python3
"""Backup benchmark: `blastwall backup run` against the plain pipeline and restic, in one run.

Starts a throwaway PostgreSQL cluster (the system's initdb/pg_ctl, as the unprivileged
`blastwall-pg` user when run as root), fills it with pgbench at each --scales (70 is about 1 GB),
then for each scale times, --runs times each, medians reported:

- `blastwall backup run` to a local `blastwall vault serve` on loopback (consistent dump in an
  exported snapshot, per-table facts read in that snapshot, zstd level 3, age, 8 MiB parts,
  uploaded over HTTP, fsynced and renamed by the vault);
- the plain pipeline `pg_dump -Fc -Z0 | zstd -3 | age -r KEY > file`: the same artifact with no
  facts, no parts and no upload, the practical limit;
- restic 0.14 (Debian) reading `pg_dump -Fc -Z0` on stdin into a fresh local repository per run
  (rest-server, for an append-only repository over HTTP, is not packaged here; a local folder is
  the faster target, so this favours restic).

Each tool's wall time, throughput over the database size, CPU seconds and peak RSS (the largest
process of the tree, `/usr/bin/time -v`) are reported. The database is on the same disk as the
vault (one machine): the vault is started with `--allow-same-volume`, which only a benchmark or a
demo should do.

Needs: PostgreSQL's server binaries (initdb, pg_ctl, pgbench, pg_dump), zstd, age, /usr/bin/time
(apt-get install time), optionally restic; cargo for the release build.
Usage: python3 bench/backup.py [--scales 10,70] [--runs 3] [--workdir DIR] [--out docs/benchmarks.md]
"""

import argparse
import glob
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BIN = os.path.join(TARGET, "release", "blastwall")
PG_USER = "blastwall-pg"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    found = shutil.which(name)
    if found and name not in ("initdb", "pg_ctl"):
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if cands:
        return cands[-1]
    if found:
        return found
    sys.exit(f"missing {name}: apt-get install -y postgresql")


def as_pg(cmd):
    """Runs a server command as the unprivileged user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--"] + cmd
    return cmd


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, **kw):
    """Runs `cmd` under /usr/bin/time -v; returns (wall s, cpu s, peak RSS MB, stdout)."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, **kw)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({p.returncode}): {p.stderr[-2000:]}")
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", p.stderr)[1])
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", p.stderr)[1])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)[1])
    return wall, user + system, rss_kb / 1024, p.stdout


class Cluster:
    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        self.sock = os.path.join(work, "pgsock")
        os.makedirs(self.sock)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(work, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        sh(as_pg([pg_bin("initdb"), "-D", self.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
           stdout=subprocess.DEVNULL)
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses='' -c fsync=off " \
               "-c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB"
        sh(as_pg([pg_bin("pg_ctl"), "-D", self.dir, "-o", opts, "-l", os.path.join(self.dir, "log"),
                  "-w", "start"]), stdout=subprocess.DEVNULL)

    def url(self, db):
        return f"postgres://postgres@localhost/{db}?host={self.sock}&port={self.port}"

    def args(self):
        return ["-h", self.sock, "-p", str(self.port), "-U", "postgres"]

    def stop(self):
        subprocess.run(as_pg([pg_bin("pg_ctl"), "-D", self.dir, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="10,70")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for tool in ["zstd", "age", "/usr/bin/time"]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: apt-get install -y zstd age time")
    have_restic = shutil.which("restic") is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            sh(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER])
    sh(["cargo", "build", "--release", "--locked", "-q", "-p", "blastwall-cli"], cwd=ROOT)

    work = tempfile.mkdtemp(prefix="blastwall-backup-bench-", dir=args.workdir)
    os.chmod(work, 0o755)
    cluster = None
    vault = None
    env = dict(os.environ, BLASTWALL_LOG="warn")
    try:
        cluster = Cluster(work)
        # The vault host: its own folder, a writer credential, the recipient.
        bw = os.path.join(work, "bw")
        os.makedirs(bw)
        sh([BIN, "init"], cwd=bw, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        vdata = os.path.join(work, "vault")
        sh([BIN, "vault", "init", "--data", vdata, "--min-retention", "1d"], cwd=bw, env=env,
           stdout=subprocess.DEVNULL)
        writer = subprocess.run([BIN, "vault", "credential", "add", "bench", "--role", "writer",
                                 "--data", vdata], cwd=bw, env=env, capture_output=True, text=True,
                                check=True).stdout.strip()
        recipient = subprocess.run([BIN, "vault", "recipient", "--data", vdata], cwd=bw, env=env,
                                   capture_output=True, text=True, check=True).stdout.strip()
        port = free_port()
        vault = subprocess.Popen([BIN, "vault", "serve", "--data", vdata, "--listen",
                                  f"127.0.0.1:{port}"], cwd=bw, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("the vault did not start")
                time.sleep(0.1)
        sh([BIN, "backup", "target", "add", "vault", "--url", f"http://127.0.0.1:{port}",
            "--env", "production", "--credential-stdin"], cwd=bw, env=env, input=writer.encode(),
           stdout=subprocess.DEVNULL)

        rows = []
        for scale in [int(s) for s in args.scales.split(",")]:
            db = f"bench{scale}"
            sh([pg_bin("createdb")] + cluster.args() + [db])
            sh([pg_bin("pgbench")] + cluster.args() + ["-i", "-q", "-s", str(scale), db],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            size = int(subprocess.run(
                [shutil.which("psql") or pg_bin("psql")] + cluster.args() +
                ["-Atc", f"select pg_database_size('{db}')", db],
                capture_output=True, text=True, check=True).stdout.strip())
            mb = size / 1e6
            sh([BIN, "backup", "source", "add", db, "--kind", "postgres", "--url", cluster.url(db),
                "--allow-same-volume"], cwd=bw, env=env, stdout=subprocess.DEVNULL)
            dump = " ".join([pg_bin("pg_dump"), "-Fc", "-Z0"] + cluster.args() + [db])
            out = os.path.join(work, "plain.age")
            tools = {
                "blastwall backup run": lambda: timed([BIN, "backup", "run", db], cwd=bw, env=env),
                "pg_dump -Fc -Z0 | zstd -3 | age": lambda: timed(
                    ["bash", "-o", "pipefail", "-c", f"{dump} | zstd -3 -q | age -r {recipient} > {out}"]),
            }
            if have_restic:
                def restic_run():
                    repo = os.path.join(work, "restic")
                    shutil.rmtree(repo, ignore_errors=True)
                    renv = dict(os.environ, RESTIC_PASSWORD="bench-only", RESTIC_REPOSITORY=repo)
                    sh(["restic", "init", "-q"], env=renv, stdout=subprocess.DEVNULL)
                    return timed(["bash", "-o", "pipefail", "-c",
                                  f"{dump} | restic backup -q --stdin --stdin-filename {db}.dump"],
                                 env=renv)
                tools["restic backup --stdin (local repo)"] = restic_run
            results = {}
            for name, fn in tools.items():
                samples = [fn()[:3] for _ in range(args.runs)]
                med = tuple(statistics.median(s[i] for s in samples) for i in range(3))
                results[name] = med
                print(f"scale {scale} ({mb:.0f} MB) {name:40s} {med[0]:7.2f} s  {mb / med[0]:7.1f} MB/s"
                      f"  cpu {med[1]:6.2f} s  rss {med[2]:6.1f} MB", flush=True)
            base = results["pg_dump -Fc -Z0 | zstd -3 | age"][0]
            for name, (wall, cpu, rss) in results.items():
                rows.append((scale, mb, name, wall, mb / wall, wall / base, cpu, rss))

        load = os.getloadavg()[0]
        cpu_model = "unknown CPU"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        lines = [
            "## Backups",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu_model}), load average "
            f"{load:.1f} at the end; {args.runs} runs per case, medians. Reproduce: "
            "`python3 bench/backup.py --out docs/benchmarks.md`. A throwaway PostgreSQL 15 cluster "
            "filled by `pgbench -i -s N`; the vault on loopback on the same disk. The plain pipeline "
            "writes the same artifact (custom-format dump, zstd level 3, age) with no integrity facts, "
            "no parts and no upload; restic reads the same dump on stdin into a fresh local repository "
            "each run. CPU s counts the command and its children (pg_dump, zstd, age, restic), not "
            "PostgreSQL's server processes nor the vault server.",
            "",
            "| pgbench scale | database MB | tool | median s | MB/s | × plain pipeline | CPU s | peak RSS MB |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for scale, mb, name, wall, mbs, ratio, cpu, rss in rows:
            cell = name.replace("|", "\\|")
            lines.append(f"| {scale} | {mb:.0f} | {cell} | {wall:.2f} | {mbs:.1f} | {ratio:.2f} | "
                         f"{cpu:.2f} | {rss:.1f} |")
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            write_section(args.out, text)
    finally:
        if vault:
            vault.terminate()
            try:
                vault.wait(timeout=10)
            except subprocess.TimeoutExpired:
                vault.kill()
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def write_section(path, text):
    """Replaces the `## Backups` section of `path` (up to the next `## `), or appends it."""
    with open(path) as f:
        doc = f.read()
    start = doc.find("## Backups\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + text + (doc[end:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
