//! `blastwall log tail|verify|checkpoint`.

use std::path::{Path, PathBuf};

use blastwall_core::audit::{Checkpoint, CheckpointSigner};
use blastwall_core::env::EnvSource;
use serde_json::json;

use crate::context::{Ctx, load_signer};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall log …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Print the last entries of the audit log
    #[command(after_help = "Examples:\n  blastwall log tail\n  blastwall log tail -n 50 --json")]
    Tail {
        /// How many entries
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain and the signed checkpoints; exit 1 names the first bad entry
    #[command(after_help = "\
Examples:
  blastwall log verify
  blastwall log verify --key 3b6a27bc…   # trust this checkpoint public key (hex)
  blastwall log verify --checkpoints /mnt/elsewhere/blastwall-checkpoints.jsonl

Detects an edited, deleted, reordered or truncated entry, then checks that the store's
environments, tokens, upstreams and sealed credentials are what the log says was done to them (a
token added, widened, extended or un-revoked by writing the store directly is named).

By default the checkpoint key is the public half of the configured audit signing key; a run where
that key is, once a checkpoint verifies, prints its public half (`key` in `--json`), to pass as
`--key` where it is not.

Checkpoints kept only in the store go with it: someone who can write the store can cut the end of
the log together with the checkpoints that cover it. `--checkpoints FILE` also checks the ones
shipped elsewhere with `blastwall log checkpoint` (one per line), which still name the entries the
log had.")]
    Verify {
        /// The trusted checkpoint public key, in hex
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// Also check these checkpoints, kept outside the store (lines of `blastwall log checkpoint`)
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print the newest signed checkpoint as one JSON line, to keep outside the store
    #[command(after_help = "\
Examples:
  blastwall log checkpoint >> /mnt/elsewhere/blastwall-checkpoints.jsonl   # e.g. from cron
  blastwall log verify --checkpoints /mnt/elsewhere/blastwall-checkpoints.jsonl

Keep the lines where whoever can write the store cannot (another host, a write-once bucket):
`log verify --checkpoints` then finds the end of the log cut off, or the log rewritten, even
when the store's own checkpoints were deleted, or signed anew with a stolen signing key. A checkpoint holds an entry
number, that entry's hash, a time, the public key and the signature: nothing secret. It is
checked before it is printed (signed with the trusted key, naming an entry the log still has with
that hash): a row that does not hold is exit 1, never printed.")]
    Checkpoint {
        /// The trusted checkpoint public key, in hex (default: the configured signing key's)
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
    },
}

pub(crate) async fn run(
    flag: Option<&Path>,
    cmd: Cmd,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let ctx = Ctx::open(flag, env).await?;
    match cmd {
        Cmd::Tail { lines, json } => {
            let entries = ctx.store.audit_tail(i64::from(lines)).await?;
            if json {
                output::json(&entries)?;
            } else {
                output::line(&format!(
                    "{:>6}  {:<30}  {:<18} {:<12} {:<22} {}  {}",
                    "SEQ", "AT", "ACTION", "ENV", "TARGET", "ACTOR", "DETAIL"
                ));
                for e in &entries {
                    output::line(&format!(
                        "{:>6}  {:<30}  {:<18} {:<12} {:<22} {}  {}",
                        e.seq,
                        e.record.at,
                        e.record.action,
                        e.record.env.as_deref().unwrap_or("-"),
                        e.record.target.as_deref().unwrap_or("-"),
                        e.record.actor,
                        e.record.detail
                    ));
                }
            }
            Ok(Exit::Clean)
        }
        Cmd::Checkpoint { key } => {
            let trusted = trusted_key(&ctx, key, env)?;
            match blastwall_store::latest_checkpoint(ctx.store.as_ref(), &trusted).await {
                Ok(Some(cp)) => {
                    output::line(&serde_json::to_string(&cp).map_err(anyhow::Error::from)?);
                    Ok(Exit::Clean)
                }
                Ok(None) => Err(Failure::usage(
                    "the audit log has no checkpoint signed with this key yet",
                    "one is signed every `checkpoint_every` entries and when a command or the gateway stops; run this again after that (or pass the key that signs them, `--key HEX`)",
                )),
                // A failed check (exit 1), on stderr: stdout, appended to the kept file, gets
                // nothing.
                Err(blastwall_store::VerifyError::Chain(e)) => Err(Failure {
                    message: format!(
                        "the newest checkpoint in the store does not hold, so it is not printed: {e}"
                    ),
                    hint: Some(
                        "the store was written by something other than blastwall: run `blastwall log verify --checkpoints FILE` with the checkpoints kept so far".to_owned(),
                    ),
                    code: Exit::Failed,
                }),
                Err(blastwall_store::VerifyError::Store(e)) => Err(e.into()),
                Err(other) => Err(anyhow::Error::from(other).into()),
            }
        }
        Cmd::Verify {
            key,
            checkpoints,
            json,
        } => {
            let shipped = match &checkpoints {
                Some(path) => read_shipped(path)?,
                None => Shipped::default(),
            };
            let key_given = key.is_some();
            let trusted = trusted_key(&ctx, key, env)?;
            match blastwall_store::verify_log_with(ctx.store.as_ref(), &trusted, &shipped.list)
                .await
            {
                Ok(report) => {
                    // The log holds: now whether the store is what it says was done.
                    let drift = blastwall_store::reconcile(ctx.store.as_ref()).await?;
                    if let Some(first) = drift.first() {
                        let more = match drift.len() {
                            1 => String::new(),
                            n => format!(" (and {} more)", n - 1),
                        };
                        let e = format!(
                            "the audit log verifies, but the store does not match it: {first}{more}"
                        );
                        if json {
                            output::json(&json!({"ok": false, "error": e, "drift": drift}))?;
                        } else {
                            output::line(&format!("FAILED: {e}"));
                            for d in drift.iter().skip(1) {
                                output::line(&format!("  {d}"));
                            }
                        }
                        return Ok(Exit::Failed);
                    }
                    // The key is named only when a checkpoint's signature proved it a public
                    // key: a 64-hex `--key` that verified nothing may be the private seed.
                    let key = (report.checkpoints + report.shipped > 0).then_some(trusted);
                    // Entries after the newest checkpoint are chained but not signed: removing
                    // them from the end would not show. Said, so a log whose checkpoints were
                    // deleted does not pass for one fully covered.
                    let unsigned = report.last_seq - report.signed_to.unwrap_or(0);
                    if json {
                        output::json(
                            &json!({"ok": true, "entries": report.entries, "checkpoints": report.checkpoints, "shipped": report.shipped, "key": key, "signed_to": report.signed_to, "unsigned_tail": unsigned}),
                        )?;
                    } else {
                        let tail = match unsigned {
                            0 => String::new(),
                            n => format!(
                                "; the last {n} entries follow the newest checkpoint: their removal from the end would not show"
                            ),
                        };
                        let from_file = match &checkpoints {
                            Some(path) => {
                                format!(" and {} from `{}`", report.shipped, path.display())
                            }
                            None => String::new(),
                        };
                        match key {
                            Some(key) => output::line(&format!(
                                "ok: {} entries, chain intact, {} signed checkpoint(s){from_file} verified with key {key}{tail}",
                                report.entries, report.checkpoints
                            )),
                            None => output::line(&format!(
                                "ok: {} entries, chain intact, no signed checkpoint to verify{tail}",
                                report.entries
                            )),
                        }
                    }
                    Ok(Exit::Clean)
                }
                Err(
                    failed @ (blastwall_store::VerifyError::Chain(_)
                    | blastwall_store::VerifyError::Shipped { .. }),
                ) => {
                    // A `--key` the checkpoints do not verify with may be their private seed,
                    // pasted by mistake: if its public half verifies them, say so (and give
                    // that public half) rather than report tampering.
                    if key_given
                        && let Some(public) =
                            CheckpointSigner::parse(&trusted).map(|s| s.public_hex())
                        && let Ok(r) = blastwall_store::verify_log_with(
                            ctx.store.as_ref(),
                            &public,
                            &shipped.list,
                        )
                        .await
                        && r.checkpoints + r.shipped > 0
                    {
                        return Err(Failure::usage(
                            "the value of `--key` is the private audit signing key, not its public half",
                            format!(
                                "pass its public half, `--key {public}`; the private key belongs where the checkpoints are signed and nowhere else (consider it exposed if it was pasted somewhere shared)"
                            ),
                        ));
                    }
                    let e = match failed {
                        blastwall_store::VerifyError::Shipped { index, source } => {
                            let at = match (&checkpoints, shipped.lines.get(index)) {
                                (Some(path), Some(line)) => {
                                    format!("`{}` line {line}", path.display())
                                }
                                _ => format!("shipped checkpoint {}", index + 1),
                            };
                            format!(
                                "the checkpoint kept outside the store at {at} does not hold: {source}"
                            )
                        }
                        other => other.to_string(),
                    };
                    if json {
                        output::json(&json!({"ok": false, "error": e}))?;
                    } else {
                        output::line(&format!("FAILED: {e}"));
                    }
                    Ok(Exit::Failed)
                }
                Err(blastwall_store::VerifyError::Store(e)) => Err(e.into()),
                Err(other) => Err(anyhow::Error::from(other).into()),
            }
        }
    }
}

/// The trusted checkpoint public key: `--key`, else the configured signing key's public half.
fn trusted_key(ctx: &Ctx, key: Option<String>, env: &dyn EnvSource) -> Result<String, Failure> {
    match key {
        Some(k) => {
            let k = k.trim().to_ascii_lowercase();
            if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                // Not echoed: it may be the private signing key, pasted by mistake.
                return Err(Failure::usage(
                    "the value of `--key` is not a checkpoint public key (64 hex characters)",
                    "pass the 64 hex characters that `blastwall log verify` prints where the audit signing key is",
                ));
            }
            Ok(k)
        }
        None => Ok(load_signer(&ctx.config, env)
            .map_err(|f| {
                Failure::usage(
                    f.message,
                    "this needs only the checkpoint public key: pass it with `--key HEX` (`blastwall log verify` prints it where the audit signing key is)",
                )
            })?
            .public_hex()),
    }
}

/// Checkpoints read from a file (each once), with the line each came from.
#[derive(Debug, Default)]
struct Shipped {
    list: Vec<Checkpoint>,
    lines: Vec<usize>,
}

/// Longest line taken from a file of checkpoints (one is about 330 bytes).
const MAX_CHECKPOINT_LINE: u64 = 4096;

/// Reads the lines `blastwall log checkpoint` printed (blank lines and `#` comments skipped; a
/// checkpoint appended again by a job that found nothing new is kept once). Anything else stops
/// the check: a file that is not what it should be proves nothing.
fn read_shipped(path: &Path) -> Result<Shipped, Failure> {
    use std::io::{BufRead, Read};

    let cannot = |e: std::io::Error| {
        Failure::usage(
            format!("cannot read `{}`: {e}", path.display()),
            "pass the file the lines of `blastwall log checkpoint` were appended to",
        )
    };
    let not_one = |line: usize, what: String| {
        Failure::usage(
            format!(
                "line {line} of `{}` is not a checkpoint ({what})",
                path.display()
            ),
            "each line must be one that `blastwall log checkpoint` printed",
        )
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut shipped = Shipped::default();
    let mut seen = std::collections::HashSet::new();
    let mut buf = Vec::new();
    for number in 1.. {
        buf.clear();
        // Read at most one line's worth: a file with no line breaks (a device, a wrong file)
        // is refused, not read into memory.
        let n = (&mut reader)
            .take(MAX_CHECKPOINT_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(cannot)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n as u64 > MAX_CHECKPOINT_LINE {
            return Err(not_one(number, format!("over {MAX_CHECKPOINT_LINE} bytes")));
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            return Err(not_one(number, "not UTF-8".to_owned()));
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // serde's message is not shown: it can quote the line, and a wrong file may hold a secret.
        let cp: Checkpoint = serde_json::from_str(line)
            .map_err(|e| not_one(number, format!("column {}", e.column())))?;
        if seen.insert((cp.seq, cp.signature.clone())) {
            shipped.list.push(cp);
            shipped.lines.push(number);
        }
    }
    if shipped.list.is_empty() {
        return Err(Failure::usage(
            format!("`{}` holds no checkpoint", path.display()),
            "append what `blastwall log checkpoint` prints to it (e.g. from cron), then verify",
        ));
    }
    Ok(shipped)
}
