#!/usr/bin/env python3
"""Scanner benchmark: `blastwall scan` against `cat`, ripgrep and other secret scanners.

Builds a corpus of real text (copies of ~/.cargo/registry/src and, if present, the Rust sources
under ~/.rustup; at least --min-mb MB) in a work folder, plants secrets of every class the wall
scanner claims to find (known formats, Blastwall credentials with valid checksums, secrets with no
format that only a wall file's fingerprints can find, passwords in configs and shell histories,
UTF-16, archives, base64, minified JS, binaries, dotfiles) next to decoys (placeholders, bad
checksums, code, hashes, public keys), then on a warm page cache, in one run, times each tool
--runs times and reports medians:

- `cat` of every file (reading is the floor), then `blastwall scan` (the release CLI, built by
  this script; the library's `scan` example only writes the wall file, since `blastwall wall
  export` reads a gateway's store), `rg` with the scanner's own keyword set,
  and each other scanner found on PATH (kingfisher, ripsecrets, detect-secrets, trufflehog3,
  gitleaks);
- throughput (MB/s over the corpus size), ratio to `cat` in the same run, peak RSS
  (`/usr/bin/time -v`), and, on the planted files, recall per class and precision.

A planted secret is found when a finding names its file and its line (for archives, UTF-16 and
binary files, any finding in the file). Precision counts, among the findings in planted files
(secrets and decoys), those on a planted secret's line; findings elsewhere in the corpus (real
test keys in crates, for instance) are counted separately: nobody labelled them.

Tools too slow for the whole corpus (--slow: ripsecrets, detect-secrets, trufflehog3) run on the
planted files plus whole crate folders, about --subset-mb MB; a tool whose first run takes longer
than --once-after seconds runs once. --rescore JSON scores the outputs an earlier run left in
--workdir again (after fixing an output parser), keeping that run's timings.

Needs: python3, cargo, /usr/bin/time (apt-get install time); optional tools on PATH.
Usage: python3 bench/scan.py [--workdir DIR] [--runs 3] [--tools a,b] [--out docs/benchmarks.md]
"""

import argparse
import base64
import gzip
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALNUM = BASE62
rng = random.Random(5)


def rs(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def crc_b62(data):
    n = zlib.crc32(data.encode()) & 0xFFFFFFFF
    out = []
    for _ in range(6):
        out.append(BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


def github(prefix="ghp_"):
    r = rs(ALNUM, 30)
    return prefix + r + crc_b62(r)


def npm():
    r = rs(ALNUM, 30)
    return "npm_" + r + crc_b62(r)


def blastwall(kind, env):
    body = f"{kind}_{env}_{rs(ALNUM, 30)}"
    return body + "_" + crc_b62(body)


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def b64url(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


def pem(kind):
    body = b64(bytes(rng.getrandbits(8) for _ in range(600)))
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n"


def jwt():
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = b64url(json.dumps({"sub": rs(ALNUM, 12), "iat": 1700000000, "role": "service"}))
    return f"{header}.{payload}.{b64url(rs(ALNUM, 32))}"


def password(n=16):
    return rs(ALNUM, n - 4) + rng.choice("!#%&*+-") + rs(ALNUM, 3)


# --------------------------------------------------------------------------------------------
# Planting


class Planter:
    def __init__(self, root):
        self.root = root
        self.secrets = []  # {file, line (1-based or None), class, value}
        self.decoys = []  # files holding only decoys
        self.wall = []  # production secrets for the wall file

    def write(self, rel, data, mode="w"):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as f:
            f.write(data)
        return rel

    def text(self, rel, lines, secrets, klass):
        """`lines` holds `{}` placeholders filled with `secrets` in order; records their lines."""
        out = []
        it = iter(secrets)
        for i, line in enumerate(lines):
            if "{}" in line:
                value = next(it)
                out.append(line.replace("{}", value))
                self.secrets.append({"file": rel, "line": i + 1, "class": klass, "value": value})
            else:
                out.append(line)
        self.write(rel, "\n".join(out) + "\n")

    def container(self, rel, data, value, klass):
        self.write(rel, data, "wb")
        self.secrets.append({"file": rel, "line": None, "class": klass, "value": value})

    def decoy(self, rel, content):
        self.write(rel, content)
        self.decoys.append(rel)


def plant(root):
    p = Planter(root)
    aws_key = "AKIA" + rs("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    aws_secret = rs(ALNUM + "+/", 40)
    # Known formats, in the places they are usually left.
    p.text("app/.env", ["# settings", "GITHUB_TOKEN={}", "LOG_LEVEL=info", "STRIPE_SECRET_KEY={}",
                        "OPENAI_API_KEY={}"],
           [github(), "sk_live_" + rs(ALNUM, 24), "sk-proj-" + rs(ALNUM + "_-", 48) + "T3BlbkFJ" + rs(ALNUM, 20)],
           "known-format")
    p.text("home/.aws/credentials", ["[default]", "aws_access_key_id = {}", "aws_secret_access_key = {}"],
           [aws_key, aws_secret], "known-format")
    p.text("services/notify/config.py", ["import os", "", "SLACK_TOKEN = \"{}\"",
                                          "SENDGRID_KEY = '{}'", "def send(): pass"],
           ["xoxb-" + rs("0123456789", 12) + "-" + rs("0123456789", 13) + "-" + rs(ALNUM, 24),
            "SG." + rs(ALNUM + "_-", 22) + "." + rs(ALNUM + "_-", 43)], "known-format")
    p.text("services/ci/deploy.sh", ["#!/bin/sh", "set -e", "export GITLAB_TOKEN={}",
                                      "curl -X POST {}", "echo done"],
           ["glpat-" + rs(ALNUM + "_-", 20),
            "https://hooks.slack.com/services/T" + rs("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8) + "/B"
            + rs("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10) + "/" + rs(ALNUM, 24)], "known-format")
    p.text("home/.npmrc", ["registry=https://registry.npmjs.org/", "//registry.npmjs.org/:_authToken={}"],
           [npm()], "known-format")
    p.text("services/ai/settings.yaml", ["model: large", "anthropic_api_key: {}", "hf_token: {}",
                                         "google_api_key: {}"],
           ["sk-ant-api03-" + rs(ALNUM + "_-", 93) + "AA", "hf_" + rs(ALNUM, 34), "AIza" + rs(ALNUM + "_-", 35)],
           "known-format")
    p.text("services/api/src/db.ts", ["import { Pool } from 'pg';",
                                      "const url = \"{}\";", "export const pool = new Pool({ url });"],
           [f"postgres://app:{password(18)}@db.internal:5432/app"], "known-format")
    # A key file is one secret over many lines: any finding in it counts.
    key = pem("RSA PRIVATE KEY")
    p.write("home/.ssh/id_rsa", key)
    p.secrets.append({"file": "home/.ssh/id_rsa", "line": None, "class": "known-format", "value": key})
    key = pem("OPENSSH PRIVATE KEY")
    p.write("infra/keys/deploy_key", key)
    p.secrets.append({"file": "infra/keys/deploy_key", "line": None, "class": "known-format", "value": key})
    p.text("services/auth/fixtures.json", ["{", '  "service_token": "{}",', '  "name": "auth"', "}"],
           [jwt()], "known-format")
    p.text("services/billing/.env.production", ["TWILIO_API_KEY={}", "DIGITALOCEAN_TOKEN={}"],
           ["SK" + rs("0123456789abcdef", 32), "dop_v1_" + rs("0123456789abcdef", 64)], "known-format")
    p.text("home/.git-credentials", ["https://ci-bot:{}@github.com"], [github("ghp_")], "known-format")

    # Blastwall's own credentials (valid checksums), prod and staging.
    p.text("ops/agent.env", ["BLASTWALL_TOKEN={}", "BLASTWALL_URL=https://gw.internal"],
           [blastwall("bwt", "production")], "blastwall-token")
    p.text("ops/runbook.md", ["# Runbook", "", "Use the admin token `{}` to approve.", "",
                              "Staging agent: {}"],
           [blastwall("bwa", "production"), blastwall("bwt", "staging")], "blastwall-token")
    p.text("home/.config/blastwall/agent.toml", ["[agent]", 'token = "{}"'], [blastwall("bwm", "prod-eu")],
           "blastwall-token")

    # Secrets with no format: only the production wall file's fingerprints can find them.
    fp = [password(20), rs(ALNUM, 28), rs("abcdefghijklmnopqrstuvwxyz", 6) + "-" + rs(ALNUM, 14),
          rs("0123456789abcdef", 40), "correct-" + rs(ALNUM, 10) + "-staple"]
    p.wall.extend(fp)
    p.text("notes/migration.txt", ["moved the db on friday", "the new one is {} (do not share)", "-- ops"],
           [fp[0]], "fingerprint")
    p.text("services/legacy/app.ini", ["[upstream]", "host = partner.example.net", "value = {}"],
           [fp[1]], "fingerprint")
    p.text("services/legacy/Dockerfile", ["FROM debian", "ENV LEGACY_CONN={}", "CMD [\"run\"]"],
           [fp[2]], "fingerprint")
    p.text("data/export.csv", ["id,owner,material", "1,ops,{}", "2,dev,none"], [fp[3]], "fingerprint")
    p.text("notes/chat.log", ["[10:02] alice: what's the vault unseal phrase?", "[10:03] bob: \"{}\""],
           [fp[4]], "fingerprint")

    # Passwords in configuration files and shell histories.
    p.text("home/.bash_history", ["ls -la", "mysql -h db -u root -p{} shop", "cd /srv",
                                  "PGPASSWORD={} psql -h db app", "sshpass -p '{}' ssh deploy@web1",
                                  "redis-cli -a {} ping", "curl -u admin:{} https://ci.internal/api"],
           [password(14), password(16), password(12), password(18), password(15)], "password-history")
    p.text("home/.zsh_history", [": 1700000000:0;git status", ": 1700000001:0;export DB_PASSWORD={}"],
           [password(17)], "password-history")
    p.text("services/api/config/database.yml", ["production:", "  adapter: postgresql",
                                               "  username: app", "  password: {}"],
           [password(16)], "password-config")
    p.text("services/java/application.properties", ["server.port=8080",
                                                    "spring.datasource.password={}"],
           [password(18)], "password-config")
    p.text("home/.netrc", ["machine api.internal login deploy password {}"], [password(16)], "password-config")
    p.text("infra/terraform/prod.tfvars", ['region = "eu-west-1"', 'db_password = "{}"'], [password(20)],
           "password-config")
    p.text("infra/terraform/terraform.tfstate",
           ["{", '  "version": 4,', '  "resources": [{"type": "aws_db_instance", "instances": [{"attributes": {',
            '    "password": "{}",', '    "username": "admin"}}]}]', "}"],
           [password(22)], "password-config")
    p.text("home/.pgpass", ["db.internal:5432:app:app:{}"], [password(19)], "password-config")

    # UTF-16 (a PowerShell profile saved by Windows), with and without BOM.
    pw = password(16)
    text = "$user = 'svc'\r\n$password = \"" + pw + "\"\r\nConnect-Db $user $password\r\n"
    p.container("win/profile.ps1", b"\xff\xfe" + text.encode("utf-16-le"), pw, "utf16")
    tok = github()
    p.container("win/env.txt", ("GITHUB_TOKEN=" + tok + "\r\n").encode("utf-16-le"), tok, "utf16")

    # Archives: an old backup, a zip of credentials, a gzip'd log.
    tok = "sk_live_" + rs(ALNUM, 24)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = f"STRIPE_KEY={tok}\n".encode()
        info = tarfile.TarInfo("backup/app/.env")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    p.container("backups/app-2023.tar.gz", buf.getvalue(), tok, "archive")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("creds/aws.txt", f"aws_access_key_id = {aws_key[:4]}{rs('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16)}\n"
                   f"aws_secret_access_key = {(zs := rs(ALNUM + '+/', 40))}\n")
    p.container("backups/creds.zip", buf.getvalue(), zs, "archive")
    pw = password(18)
    p.container("logs/deploy.log.gz", gzip.compress(f"deploy ok\nusing DB_PASSWORD={pw}\n".encode()), pw, "archive")
    fpw = password(24)
    p.wall.append(fpw)
    p.container("backups/state.tar.gz", _tgz("state/notes.txt", f"unseal {fpw}\n"), fpw, "archive")

    # Base64-wrapped values (Kubernetes secrets, a docker config).
    tok = github()
    p.text("k8s/secret.yaml", ["apiVersion: v1", "kind: Secret", "data:", "  GITHUB_TOKEN: {}"], [b64(tok)],
           "base64")
    fpw = password(21)
    p.wall.append(fpw)
    p.text("k8s/db-secret.yaml", ["apiVersion: v1", "kind: Secret", "data:", "  password: {}"], [b64(fpw)],
           "base64")
    p.text("home/.docker/config.json", ['{"auths": {"registry.internal": {', '  "auth": "{}"', "}}}"],
           [b64("deploy:" + password(20))], "base64")

    # Minified JavaScript: one long line.
    filler = ";".join(f"var a{i}=function(b){{return b*{i}}}" for i in range(8000))
    key = "sk_live_" + rs(ALNUM, 24)
    p.text("web/dist/app.min.js", [filler + ';var cfg={stripeKey:"{}",env:"prod"};' + filler], [key], "minified")

    # Strings inside a binary.
    tok = "xoxb-" + rs("0123456789", 12) + "-" + rs("0123456789", 13) + "-" + rs(ALNUM, 24)
    blob = bytes(rng.getrandbits(8) for _ in range(20000)) + b"\x00SLACK_BOT_TOKEN=" + tok.encode() + b"\x00" + \
        bytes(rng.getrandbits(8) for _ in range(20000))
    p.container("bin/notifier", b"\x7fELF\x02\x01\x01\x00" + blob, tok, "binary")

    # Decoys: none of these is a secret.
    p.decoy("decoys/.env.example", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nDB_PASSWORD=changeme\n"
            "API_TOKEN=<token>\nSECRET_KEY=your_secret_key_here\nGITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
    p.decoy("decoys/compose.yml", "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n"
            "      API_KEY: ${{ secrets.API_KEY }}\n")
    p.decoy("decoys/typos.txt", "".join(f"token {'ghp_' + rs(ALNUM, 36)}\n" for _ in range(5))
            + "".join(f"{blastwall('bwt', 'production')[:-1]}X\n" for _ in range(3)))
    p.decoy("decoys/models.rs", "pub struct Login {\n    pub password: String,\n    pub api_key: Option<Secret>,\n}\n"
            "let token = get_token(&config)?;\nconst SECRET_KEY_LEN: usize = 32;\n"
            "api_key = os.environ[\"API_KEY\"]\npassword = getpass.getpass()\n")
    p.decoy("decoys/Cargo.lock", "".join(
        f'[[package]]\nname = "c{i}"\nversion = "1.0.{i}"\nchecksum = "{rs("0123456789abcdef", 64)}"\n\n'
        for i in range(20)))
    p.decoy("decoys/package-lock.json", "{\n" + "".join(
        f'  "integrity": "sha512-{b64(bytes(rng.getrandbits(8) for _ in range(64)))}",\n' for _ in range(10)) + "}\n")
    p.decoy("decoys/ids.yaml", "".join(f"- id: {_uuid()}\n  commit: {rs('0123456789abcdef', 40)}\n"
                                       for _ in range(10)))
    p.decoy("decoys/public.pem", "-----BEGIN PUBLIC KEY-----\n" + "\n".join(
        b64(bytes(rng.getrandbits(8) for _ in range(48))) for _ in range(6)) + "\n-----END PUBLIC KEY-----\n"
            + "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC" + rs(ALNUM + "+/", 300) + " user@host\n")
    p.decoy("decoys/near-miss.txt", f"value = {p.wall[0][:-1]}{'x' if p.wall[0][-1] != 'x' else 'y'}\n"
            f"other = {p.wall[1].upper()}\n")
    p.decoy("decoys/readme-b64.yaml", f"banner: {b64('hello world, this is only a friendly banner text')}\n")
    return p


def _tgz(name, text):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _uuid():
    h = rs("0123456789abcdef", 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --------------------------------------------------------------------------------------------
# Corpus


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)):
                total += st.st_size
    return total


def build_corpus(work, min_mb, sources):
    corpus = os.path.join(work, "corpus")
    marker = os.path.join(work, "corpus.done")
    if os.path.exists(marker):
        return corpus
    shutil.rmtree(corpus, ignore_errors=True)
    os.makedirs(os.path.join(corpus, "real"))
    total = 0
    i = 0
    while total < min_mb << 20:
        progressed = False
        for src in sources:
            if not os.path.isdir(src):
                continue
            dst = os.path.join(corpus, "real", f"{i}-{os.path.basename(src.rstrip('/'))}")
            subprocess.run(["cp", "-a", "--no-preserve=ownership", src, dst], check=False)
            total = du(os.path.join(corpus, "real"))
            progressed = True
            i += 1
            if total >= min_mb << 20:
                break
        if not progressed:
            sys.exit("no corpus source found (tried: " + ", ".join(sources) + ")")
    with open(marker, "w") as f:
        f.write(str(total))
    return corpus


def keywords():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return ["token", "secret", "password", "api_key", "private key", "ghp_", "akia", "sk_live_"]
    out = set()
    for name in sorted(os.listdir(os.path.join(ROOT, "catalog", "secrets"))):
        if name.endswith(".toml"):
            with open(os.path.join(ROOT, "catalog", "secrets", name), "rb") as f:
                for rule in tomllib.load(f)["rule"]:
                    out.update(rule["keywords"])
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Tools


def blastwall_cmd():
    """The release `blastwall scan` CLI, built here (a no-op when it is up to date)."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "blastwall-cli"], cwd=ROOT, check=True)
    cli = os.path.join(TARGET, "release", "blastwall")
    if subprocess.run([cli, "scan", "--help"], capture_output=True).returncode != 0:
        sys.exit(f"`{cli} scan --help` failed: the benchmark measures the release CLI")
    return [cli, "scan", "--allow-incomplete", "--format", "json"], "blastwall scan"


def export_wall(secrets, path):
    exe = os.path.join(TARGET, "release", "examples", "scan")
    if not os.path.exists(exe):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "blastwall-scan", "--example", "scan"],
                       cwd=ROOT, check=True)
    subprocess.run([exe, "--export-wall", "production", path], input="\n".join(secrets) + "\n", text=True,
                   check=True)


def subset(corpus, planted_root, mb):
    """The planted folder plus whole crate folders of the corpus, about `mb` MB in all."""
    paths = [planted_root]
    total = du(planted_root)
    for dirpath, dirnames, _ in os.walk(os.path.join(corpus, "real")):
        if os.path.basename(dirpath).startswith("index.crates.io"):
            for d in sorted(dirnames):
                if total >= mb * 1e6:
                    break
                paths.append(os.path.join(dirpath, d))
                total += du(os.path.join(dirpath, d))
            dirnames.clear()
        if total >= mb * 1e6:
            break
    return paths, total


def tools(work, corpus, wall, selected, slow, slow_paths):
    kw = os.path.join(work, "keywords.txt")
    with open(kw, "w") as f:
        f.write("\n".join(keywords()) + "\n")
    bw, bw_name = blastwall_cmd()
    out = {
        "cat": (["sh", "-c", f"find {corpus} -type f -print0 | xargs -0 cat > /dev/null"], "cat (floor)"),
        "blastwall": (bw + ["--wall", wall, corpus], bw_name + ", wall file"),
        # The planted production secrets only: the size of a real gateway's wall (the 200 extra
        # secrets of the wall above are nowhere in the corpus, so recall is the same).
        "blastwall-smallwall": (bw + ["--wall", os.path.join(work, "small.wall"), corpus],
                                bw_name + ", small wall file"),
        "blastwall-nowall": (bw + [corpus], bw_name + ", no wall file"),
        "rg": (["rg", "--json", "-i", "-F", "-f", kw, "-uuu", "-a", corpus], "rg -i -F (scanner keywords)"),
        "kingfisher": (["kingfisher", "scan", corpus, "--no-validate", "--format", "jsonl", "--git-history", "none",
                        "--no-update-check"], "kingfisher --no-validate"),
        "ripsecrets": (["ripsecrets", corpus], "ripsecrets"),
        "detect-secrets": (["detect-secrets", "scan", "--all-files", corpus], "detect-secrets --all-files"),
        "trufflehog3": (["trufflehog3", "--no-history", "-z", "-f", "JSON", corpus], "trufflehog3 --no-history"),
        "gitleaks": (["gitleaks", "dir", corpus, "-f", "json", "-r", "/dev/stdout", "--no-banner"], "gitleaks dir"),
    }
    chosen = {}
    for name, (cmd, label) in out.items():
        if selected and name not in selected and name != "cat":
            continue
        exe = cmd[0]
        if shutil.which(exe) is None and not os.path.exists(exe):
            print(f"skip {name}: `{exe}` not installed", file=sys.stderr)
            continue
        if name in slow:
            # Replace the corpus argument with the subset's folders.
            i = cmd.index(corpus)
            cmd = cmd[:i] + slow_paths + cmd[i + 1:]
            label += " †"
        chosen[name] = (cmd, label)
    return chosen


def run_timed(cmd, out_path, timeout, cwd):
    """Runs `cmd` in `cwd` under /usr/bin/time -v; (seconds, peak RSS KiB, timed out).

    In the corpus folder, because some tools (detect-secrets) change behaviour inside a git
    repository, such as this one."""
    tpath = out_path + ".time"
    start = time.monotonic()
    try:
        with open(out_path, "wb") as out, open(tpath, "wb") as err:
            subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=out, stderr=err, timeout=timeout, cwd=cwd,
                           env=dict(os.environ, NO_COLOR="1"))
    except subprocess.TimeoutExpired:
        return time.monotonic() - start, None, True, None
    elapsed = time.monotonic() - start
    rss = None
    cpu = 0.0
    with open(tpath, "rb") as f:
        for line in f.read().decode(errors="replace").splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.split(":")[1])
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu += float(line.split(":")[1])
    return elapsed, rss, False, cpu


# --------------------------------------------------------------------------------------------
# Findings: (path, line or None) per tool


def parse(name, path, corpus, bases=()):
    """(path, line) of each finding; a relative path is taken against the corpus, or against the
    first of `bases` (the folders a tool was given) under which it exists."""
    with open(path, "rb") as f:
        raw = f.read().decode(errors="replace")
    found = []
    if name.startswith("blastwall"):
        for line in raw.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("type") == "finding" and d["location"].get("kind") == "file":
                found.append((d["location"]["path"], d["location"].get("line")))
    elif name == "rg":
        for line in raw.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("type") == "match":
                p = d["data"]["path"].get("text") or ""
                found.append((p, d["data"].get("line_number")))
    elif name == "kingfisher":
        for line in raw.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            for item in _walk_findings(d):
                found.append(item)
    elif name == "ripsecrets":
        for line in raw.splitlines():
            m = re.match(r"^(.*?):(\d+):", line)
            if m:
                found.append((m.group(1), int(m.group(2))))
    elif name == "detect-secrets":
        try:
            d = json.loads(raw)
        except ValueError:
            d = {}
        for file, items in d.get("results", {}).items():
            for it in items:
                found.append((file, it.get("line_number")))
    elif name == "trufflehog3":
        try:
            d = json.loads(raw)
        except ValueError:
            d = []
        for it in d:
            found.append((it.get("path", ""), int(it["line"]) if str(it.get("line", "")).isdigit() else None))
    elif name == "gitleaks":
        try:
            d = json.loads(raw)
        except ValueError:
            d = []
        for it in d or []:
            found.append((it.get("File", ""), it.get("StartLine")))
    norm = []
    for p, line in found:
        if not os.path.isabs(p):
            options = [os.path.join(b, p) for b in (corpus,) + tuple(bases)]
            p = next((o for o in options if os.path.exists(o.split("!")[0])), options[0])
        norm.append((os.path.normpath(p) if "!" not in p else p, line))
    return norm


def _walk_findings(d):
    """kingfisher's JSON lines: any object with a path and a line, wherever it nests."""
    out = []
    stack = [d]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            path = x.get("path") or x.get("file") or x.get("file_path")
            line = x.get("line") or x.get("start_line") or x.get("line_num")
            if isinstance(path, str) and isinstance(line, int):
                out.append((path, line))
                continue
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out


def score(found, planter, planted_root):
    """Recall per class, precision, and counts."""
    secret_files = {}
    for s in planter.secrets:
        secret_files.setdefault(os.path.join(planted_root, s["file"]), []).append(s)
    decoys = {os.path.join(planted_root, d) for d in planter.decoys}
    hit = set()
    tp_findings = fp = 0
    outside = 0
    for path, line in found:
        base = path.split("!")[0]
        for f in secret_files:
            if base == f or base.startswith(f + ":") or base.startswith(f + "/") or base.startswith(f + " "):
                base = f
                break
        if base in secret_files:
            matched = [s for s in secret_files[base] if s["line"] is None or s["line"] == line]
            if matched:
                for s in matched:
                    hit.add(id(s))
                tp_findings += 1
            else:
                fp += 1
        elif base in decoys:
            fp += 1
        elif base.startswith(planted_root):
            fp += 1
        else:
            outside += 1
    classes = {}
    for s in planter.secrets:
        c = classes.setdefault(s["class"], [0, 0])
        c[1] += 1
        if id(s) in hit:
            c[0] += 1
    found_n = sum(c[0] for c in classes.values())
    total = sum(c[1] for c in classes.values())
    precision = tp_findings / (tp_findings + fp) if tp_findings + fp else 0.0
    return {"recall": found_n / total, "found": found_n, "total": total, "precision": precision,
            "true_findings": tp_findings, "false_findings": fp, "outside_planted": outside,
            "classes": {k: v for k, v in sorted(classes.items())}}


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="keep the corpus here (reused when present); default: a temp dir")
    ap.add_argument("--min-mb", type=int, default=520)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", help="comma-separated subset (cat always runs)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per tool run")
    ap.add_argument("--slow", default="ripsecrets,detect-secrets,trufflehog3",
                    help="tools run on a subset of the corpus (planted files included)")
    ap.add_argument("--subset-mb", type=int, default=50)
    ap.add_argument("--once-after", type=float, default=120, help="run a tool once if its first run took longer")
    ap.add_argument("--out", help="replace the `## Scanner` section of this markdown file")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--rescore", metavar="JSON",
                    help="score the saved outputs of an earlier run (its --json and --workdir) again")
    args = ap.parse_args()
    if args.rescore:
        return rescore_saved(args)
    home = os.path.expanduser("~")
    sources = [os.path.join(home, ".cargo", "registry", "src")]
    sources += sorted(
        os.path.join(home, ".rustup", "toolchains", t, "lib", "rustlib", "src")
        for t in (os.listdir(os.path.join(home, ".rustup", "toolchains"))
                  if os.path.isdir(os.path.join(home, ".rustup", "toolchains")) else []))
    work = args.workdir or tempfile.mkdtemp(prefix="bw-scan-bench-")
    os.makedirs(work, exist_ok=True)
    corpus = build_corpus(work, args.min_mb, sources)
    planted_root = os.path.join(corpus, "planted")
    shutil.rmtree(planted_root, ignore_errors=True)
    planter = plant(planted_root)
    wall = os.path.join(work, "production.wall")
    # A production wall also lists secrets that are nowhere here: 200 of varied lengths.
    extra = [rs(ALNUM + "-_!", rng.randint(12, 64)) for _ in range(200)]
    export_wall(planter.wall + extra, wall)
    # A wall the size of a real gateway's (its planted production secrets only), for the paired
    # runs of bench/scan_ab.sh.
    export_wall(planter.wall, os.path.join(work, "small.wall"))
    size = du(corpus)
    selected = set(args.tools.split(",")) if args.tools else None
    slow = set(args.slow.split(",")) if args.slow else set()
    slow_paths, slow_size = subset(corpus, planted_root, args.subset_mb)
    chosen = tools(work, corpus, wall, selected, slow, slow_paths)
    load_before = os.getloadavg()
    # Warm the page cache.
    for _ in range(2):
        subprocess.run(chosen["cat"][0], check=False)
    results = {name: {"label": label, "times": [], "rss": [], "cpu": [], "timeout": False}
               for name, (_, label) in chosen.items()}
    for r in range(args.runs):
        for name, (cmd, _) in chosen.items():
            res = results[name]
            if res["timeout"]:
                continue
            # A tool slower than --once-after seconds runs once: three runs would take the afternoon.
            if res["times"] and res["times"][0] > args.once_after:
                continue
            out_path = os.path.join(work, f"out-{name}-{r}.txt")
            elapsed, rss, timed_out, cpu = run_timed(cmd, out_path, args.timeout, corpus)
            print(f"run {r + 1}/{args.runs} {name}: {elapsed:.2f}s cpu={cpu} rss={rss}", file=sys.stderr)
            if timed_out:
                res["timeout"] = True
                continue
            res["times"].append(elapsed)
            res["rss"].append(rss or 0)
            res["cpu"].append(cpu)
            res["out"] = out_path
    load_after = os.getloadavg()
    cat_t = statistics.median(results["cat"]["times"])
    for name, res in results.items():
        if res["times"]:
            t = statistics.median(res["times"])
            res["median_s"] = t
            res["mb_s"] = (slow_size if name in slow else size) / t / 1e6
            res["ratio"] = res["mb_s"] / (size / cat_t / 1e6)
            res["rss_mb"] = statistics.median(res["rss"]) / 1024
            res["cpu_s"] = statistics.median(res["cpu"])
            res["runs"] = len(res["times"])
    rescore(results, corpus, planter, planted_root, slow, slow_paths)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": size, "slow_size": slow_size, "slow": sorted(slow), "load": [load_before, load_after],
                       "results": results}, f, indent=1, default=str)
    report = render(results, size, planter, load_before, load_after, args, slow_size)
    print(report)
    if args.out:
        replace_section(args.out, report)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def rescore(results, corpus, planter, planted_root, slow, slow_paths):
    for name, res in results.items():
        if name != "cat" and "out" in res:
            bases = slow_paths if name in slow else ()
            res["score"] = score(parse(name, res["out"], corpus, bases), planter, planted_root)


def render(results, size, planter, load_before, load_after, args, slow_size):
    classes = sorted({s["class"] for s in planter.secrets})
    counts = {c: sum(1 for s in planter.secrets if s["class"] == c) for c in classes}
    slow = set(args.slow.split(",")) if args.slow else set()
    lines = ["## Scanner", ""]
    lines.append(f"Corpus: {size / 1e6:.0f} MB ({size >> 20} MiB) of real text (copies of `~/.cargo/registry/src`) "
                 f"plus {len(planter.secrets)} planted secrets in {len({s['file'] for s in planter.secrets})} files "
                 f"and {len(planter.decoys)} decoy files. Wall file: {len(planter.wall)} planted production "
                 f"secrets plus 200 others of 12–64 bytes; the small wall file holds the planted ones only. Medians of {args.runs} runs on a warm page cache, "
                 f"2 cores shared with other work (load average {load_before[0]:.1f} before, "
                 f"{load_after[0]:.1f} after).")
    lines.append("")
    lines.append("| tool | runs | median s | CPU s | MB/s | × cat | × cat, fastest runs | peak RSS MB | recall "
                 "| precision | findings outside planted files |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        if res.get("timeout") and not res["times"]:
            lines.append(f"| {res['label']} | 1 | > {args.timeout} (timeout) | | | | | | | | |")
            continue
        if "median_s" not in res:
            continue
        sc = res.get("score")
        rec = f"{sc['recall']:.2f} ({sc['found']}/{sc['total']})" if sc else "–"
        prec = f"{sc['precision']:.2f}" if sc else "–"
        out = str(sc["outside_planted"]) if sc else "–"
        mb_s = f"{res['mb_s']:.0f}" if res["mb_s"] >= 10 else f"{res['mb_s']:.2f}"
        ratio = f"{res['ratio']:.2f}" if res["ratio"] >= 0.1 else f"{res['ratio']:.4f}"
        # The fastest runs are the ones the rest of the machine disturbed least; `cat`'s times
        # vary the most (it is over soonest), which flatters every ratio to its median.
        fastest = "–"
        if name not in slow:
            fastest = f"{min(results['cat']['times']) / min(res['times']):.2f}"
        lines.append(f"| {res['label']} | {res['runs']} | {res['median_s']:.2f} | {res['cpu_s']:.2f} | "
                     f"{mb_s} | {ratio} | {fastest} | {res['rss_mb']:.0f} | {rec} | {prec} | {out} |")
    lines.append("")
    lines.append(f"† Too slow for the whole corpus: run on the planted files plus whole crate folders, "
                 f"{slow_size / 1e6:.0f} MB in all; MB/s and × cat are over that subset (against `cat`'s "
                 f"MB/s on the whole corpus), \"findings outside planted files\" too. A tool whose first "
                 f"run took over {args.once_after:.0f} s ran once. \"× cat\" divides the medians; \"× cat, "
                 f"fastest runs\" divides the fastest runs, the ones the rest of the machine disturbed "
                 f"least (`cat`'s own times vary the most, which flatters every ratio to its median).")
    lines.append("")
    lines.append("Recall per class (found/planted):")
    lines.append("")
    lines.append("| tool | " + " | ".join(f"{c} ({counts[c]})" for c in classes) + " |")
    lines.append("|---|" + "---:|" * len(classes))
    for name, res in results.items():
        sc = res.get("score")
        if not sc:
            continue
        cells = [f"{sc['classes'].get(c, [0, 0])[0]}" for c in classes]
        lines.append(f"| {res['label']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Reproduce: `python3 bench/scan.py --runs 3 --out docs/benchmarks.md` "
                 "(tools not on PATH are skipped; install them with `apt-get install ripgrep time`, "
                 "`pip install kingfisher-bin detect-secrets trufflehog3`, `cargo install ripsecrets`).")
    lines.append("")
    lines.append(END_MARK)
    lines.append("")
    return "\n".join(lines)


def rescore_saved(args):
    """Re-plants the (deterministic) secrets and scores the outputs an earlier run left in
    --workdir, with its timings: for a fix of an output parser, without timing everything again."""
    with open(args.rescore) as f:
        saved = json.load(f)
    corpus = os.path.join(args.workdir, "corpus")
    planted_root = os.path.join(corpus, "planted")
    shutil.rmtree(planted_root, ignore_errors=True)
    planter = plant(planted_root)
    slow = set(saved.get("slow", []))
    slow_paths, _ = subset(corpus, planted_root, args.subset_mb)
    results = saved["results"]
    rescore(results, corpus, planter, planted_root, slow, slow_paths)
    load = saved.get("load") or [[float("nan")], [float("nan")]]
    report = render(results, saved["size"], planter, load[0], load[1], args, saved["slow_size"])
    print(report)
    if args.out:
        replace_section(args.out, report)


# Ends the part of the `## Scanner` section this script writes: what follows it in the section
# (readings of the numbers, earlier runs) is kept when the results are replaced.
END_MARK = "<!-- end of bench/scan.py's results; what follows is kept -->"


def replace_section(path, section):
    """Replaces this script's results at the top of the `## Scanner` section (up to END_MARK),
    keeping the rest of the section and the other sections; without the mark, the whole
    section."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
    marked = re.compile(r"^## Scanner\n(?:(?!^## ).)*?" + re.escape(END_MARK) + r"\n?", re.S | re.M)
    pattern = re.compile(r"^## Scanner\n.*?(?=^## |\Z)", re.S | re.M)
    if marked.search(text):
        text = marked.sub(lambda _: section.rstrip("\n") + "\n", text, count=1)
    elif pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
