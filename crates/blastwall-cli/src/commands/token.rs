//! `blastwall token issue|list|show|revoke`.

use std::path::Path;
use std::time::Duration;

use blastwall_core::env::EnvSource;
use blastwall_core::operation::OperationPattern;
use blastwall_core::principal::PrincipalName;
use blastwall_core::record::{TokenId, TokenRecord};
use blastwall_core::{Credential, CredentialKind};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::context::Ctx;
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall token …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Issue a token; it is printed once and stored only as a digest
    #[command(after_help = "\
Examples:
  blastwall token issue --env staging --owner jer@pocketos.com --holder cursor-agent \\
      --scope 'railway:domain.*' --ttl 8h
  blastwall token issue --env production --owner ops@example.com --holder ci \\
      --scope 'github:*.read' --scope 'railway:deployment.read' --ttl 30m --json

Refused: no owner, no scope, a pattern matching no catalog operation, a ttl over the
environment's maximum, an unknown environment.")]
    Issue(IssueArgs),
    /// List tokens: id, environment, owner, holder, scope, expiry, last use, state
    #[command(
        after_help = "Examples:\n  blastwall token list\n  blastwall token list --env production --json"
    )]
    List {
        /// Only tokens of this environment
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Show one token (never its secret)
    #[command(after_help = "Examples:\n  blastwall token show tok_3f9c2a7b1d0e4f56")]
    Show {
        /// The token's id (tok_…)
        id: String,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Test a token's scope: every operation of every upstream of its environment → allow/hold/deny
    #[command(after_help = "\
Examples:
  blastwall token test tok_3f9c2a7b1d0e4f56
  blastwall token test tok_3f9c2a7b1d0e4f56 --json

Each operation is decided by the same code path as a live request through the gateway. Exit 0.")]
    Test {
        /// The token's id (tok_…)
        id: String,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; every gateway sharing the store refuses it within a second
    #[command(after_help = "Examples:\n  blastwall token revoke tok_3f9c2a7b1d0e4f56")]
    Revoke {
        /// The token's id (tok_…)
        id: String,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `token issue`.
#[derive(Debug, clap::Args)]
pub(crate) struct IssueArgs {
    /// The environment the token is bound to
    #[arg(long, value_name = "ENV")]
    env: String,
    /// The human who answers for the token (e.g. an email)
    #[arg(long)]
    owner: String,
    /// Who holds it (an agent, a CI job)
    #[arg(long)]
    holder: String,
    /// Operation patterns it may perform, e.g. `railway:domain.*`; repeatable or comma-separated
    #[arg(long, value_delimiter = ',')]
    scope: Vec<String>,
    /// Lifetime [default: the environment's maximum]
    #[arg(long, value_name = "DURATION", value_parser = blastwall_core::parse_duration)]
    ttl: Option<Duration>,
    /// Credential kind: agent token (bwt_), approver (bwa_) or admin (bwm_)
    #[arg(long, default_value = "agent", value_parser = parse_kind)]
    kind: CredentialKind,
    /// JSON output (the token appears once, in `token`)
    #[arg(long)]
    json: bool,
}

fn parse_kind(s: &str) -> Result<CredentialKind, String> {
    match s {
        "agent" => Ok(CredentialKind::Agent),
        "approver" => Ok(CredentialKind::Approver),
        "admin" => Ok(CredentialKind::Admin),
        _ => Err("use `agent`, `approver` or `admin`".to_owned()),
    }
}

pub(crate) async fn run(
    flag: Option<&Path>,
    cmd: Cmd,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let ctx = Ctx::open(flag, env).await?;
    match cmd {
        Cmd::Issue(args) => issue(&ctx, env, args).await,
        Cmd::List { env: e, json } => list(&ctx, e, json).await,
        Cmd::Show { id, json } => show(&ctx, &id, json).await,
        Cmd::Revoke { id, json } => revoke(&ctx, env, &id, json).await,
        Cmd::Test { id, json } => test(&ctx, &id, json).await,
    }
}

async fn issue(ctx: &Ctx, env: &dyn EnvSource, args: IssueArgs) -> Result<Exit, Failure> {
    let environment = ctx.environment(&args.env).await?;
    let env_name = environment.name.clone();
    let owner = PrincipalName::new("owner", &args.owner)?;
    let holder = PrincipalName::new("holder", &args.holder)?;
    let ttl = args.ttl.unwrap_or(environment.max_token_ttl);
    if ttl.is_zero() {
        return Err(Failure::usage(
            "`--ttl` must be more than zero",
            "e.g. `--ttl 8h`",
        ));
    }
    if ttl > environment.max_token_ttl {
        return Err(Failure::usage(
            format!(
                "ttl {} is over the {} maximum of {}",
                blastwall_core::format_duration(ttl),
                env_name,
                blastwall_core::format_duration(environment.max_token_ttl)
            ),
            format!(
                "pass `--ttl {}` or less",
                blastwall_core::format_duration(environment.max_token_ttl)
            ),
        ));
    }

    // Scope: mandatory for agent tokens, and every pattern must match something in the catalog.
    let scope: Vec<OperationPattern> = args
        .scope
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(OperationPattern::new)
        .collect::<Result<_, _>>()?;
    let mut expanded: Vec<Value> = Vec::new();
    if args.kind == CredentialKind::Agent {
        if scope.is_empty() {
            return Err(Failure::usage(
                "a token needs a scope",
                "pass `--scope PATTERN`, e.g. `--scope 'railway:domain.*'` (`blastwall token issue --help`)",
            ));
        }
        let catalog = blastwall_policy::Catalog::load(ctx.config.catalog_dir.as_deref())
            .map_err(|e| anyhow::Error::from(e).context("cannot load the catalog"))?;
        for p in &scope {
            let ops = catalog.expand(p);
            if ops.is_empty() {
                return Err(no_match(ctx, &catalog, p).await?);
            }
            for op in ops {
                expanded.push(json!({"operation": op.name.to_string(), "class": op.class, "pattern": p.as_str()}));
            }
        }
    } else if !scope.is_empty() {
        return Err(Failure::usage(
            format!("{} credentials take no scope", args.kind),
            "drop `--scope`",
        ));
    }

    let credential = Credential::generate(args.kind, &env_name)
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let id = TokenId::generate()
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let now = Timestamp::now();
    let expires_at = now
        .checked_add(
            jiff::SignedDuration::try_from(ttl)
                .map_err(|e| anyhow::anyhow!("ttl out of range: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("ttl out of range: {e}"))?;
    let record = TokenRecord {
        id: id.clone(),
        kind: args.kind,
        env: env_name.clone(),
        owner,
        holder,
        scope,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        digest: Some(credential.digest()),
    };
    let auditor = ctx.auditor(env)?;
    let entry = ctx
        .store
        .token_insert(
            &record,
            ctx.record(
                "token.issue",
                Some(&env_name),
                Some(id.as_str()),
                json!({
                    "kind": record.kind, "owner": record.owner, "holder": record.holder,
                    "scope": record.scope, "expires_at": expires_at.to_string(),
                }),
            ),
        )
        .await?;
    auditor.record(&entry).await?;
    auditor.finish().await?;

    if args.json {
        let mut v = token_json(&record, now);
        if let Value::Object(m) = &mut v {
            m.insert(
                "token".into(),
                Value::String(credential.expose().to_owned()),
            );
            m.insert("operations".into(), Value::Array(expanded));
        }
        output::json(&v)?;
    } else {
        output::line(credential.expose());
        output::note(&format!(
            "issued {id} for {} (owner {}), {} {}, expires {} ({})",
            record.holder,
            record.owner,
            record.kind,
            env_name,
            seconds(expires_at),
            blastwall_core::format_duration(ttl)
        ));
        if !expanded.is_empty() {
            output::note(&format!("scope allows {} operation(s):", expanded.len()));
            for op in &expanded {
                output::note(&format!(
                    "  {:<40} {}",
                    op["operation"].as_str().unwrap_or_default(),
                    op["class"].as_str().unwrap_or_default()
                ));
            }
        }
        if record.kind == CredentialKind::Agent {
            // The token is issued and printed: a failure to look further is a warning, not an
            // error exit that would make a script throw the token away.
            match ctx.store.credential_list().await {
                Ok(list) if !list.iter().any(|c| c.env == env_name) => output::note(&format!(
                    "note: no upstream has a credential in {env_name} yet, so this token reaches nothing until one is sealed (`blastwall upstream add NAME --env {env_name} --secret-stdin`)"
                )),
                Ok(_) => {}
                Err(e) => {
                    let f = Failure::from(e);
                    output::note(&format!(
                        "warning: the token is issued, but cannot tell which upstreams have a credential in {env_name}: {}",
                        f.message
                    ));
                    if let Some(hint) = &f.hint {
                        output::note(&format!("hint: {hint}"));
                    }
                }
            }
        }
        output::note("this is the only time the token is shown; it is stored as a digest");
    }
    Ok(Exit::Clean)
}

/// A time to the second, for tables.
fn seconds(t: Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .map_or_else(|_| t.to_string(), |r| r.to_string())
}

fn token_json(t: &TokenRecord, now: Timestamp) -> Value {
    json!({
        "id": t.id, "kind": t.kind, "env": t.env, "owner": t.owner, "holder": t.holder,
        "scope": t.scope, "created_at": t.created_at.to_string(), "expires_at": t.expires_at.to_string(),
        "revoked_at": t.revoked_at.map(|x| x.to_string()),
        "last_used_at": t.last_used_at.map(|x| x.to_string()),
        "state": t.state(now),
    })
}

async fn list(ctx: &Ctx, env: Option<String>, as_json: bool) -> Result<Exit, Failure> {
    // An environment that does not exist is a mistake to say, not an empty list.
    let env = match env {
        Some(e) => Some(ctx.environment(&e).await?.name),
        None => None,
    };
    let tokens = ctx.store.token_list(env.as_ref()).await?;
    let now = Timestamp::now();
    if as_json {
        output::json(
            &tokens
                .iter()
                .map(|t| token_json(t, now))
                .collect::<Vec<_>>(),
        )?;
    } else {
        let rows: Vec<Vec<String>> = tokens
            .iter()
            .map(|t| {
                vec![
                    t.id.to_string(),
                    t.env.to_string(),
                    t.owner.to_string(),
                    t.holder.to_string(),
                    t.scope
                        .iter()
                        .map(OperationPattern::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    seconds(t.expires_at),
                    t.last_used_at.map_or_else(|| "never".to_owned(), seconds),
                    t.state(now).to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "ID",
                "ENV",
                "OWNER",
                "HOLDER",
                "SCOPE",
                "EXPIRES",
                "LAST USED",
                "STATE",
            ],
            &rows,
        );
    }
    Ok(Exit::Clean)
}

/// Why scope pattern `p` matched nothing, with what to write instead.
async fn no_match(
    ctx: &Ctx,
    catalog: &blastwall_policy::Catalog,
    p: &OperationPattern,
) -> Result<Failure, Failure> {
    // Operations a wildcard never grants (they reveal or mint a credential).
    let explicit: Vec<String> = catalog
        .operations()
        .filter(|op| op.explicit && p.matches(&op.name))
        .map(|op| op.name.to_string())
        .collect();
    if !explicit.is_empty() {
        return Ok(Failure::usage(
            format!(
                "scope `{p}` covers only operations that reveal or mint a credential, which a wildcard never grants"
            ),
            format!("name each one you mean: {}", explicit.join(", ")),
        ));
    }
    if let Some(profile) = p.profile()
        && catalog.profile(profile).is_none()
    {
        let profiles: Vec<&str> = catalog.profiles().map(|pr| pr.name()).collect();
        // A scope names a catalog profile; the user may have written an upstream's name.
        let upstream = ctx
            .store
            .upstream_list()
            .await?
            .into_iter()
            .find(|u| u.name.as_str() == profile);
        let hint = match upstream {
            Some(u) => format!(
                "scopes name catalog profiles, not upstreams: upstream `{profile}` uses profile `{}`, so write `{}:…`",
                u.profile, u.profile
            ),
            None => format!("the catalog's profiles are {}", profiles.join(", ")),
        };
        return Ok(Failure::usage(
            format!("scope `{p}` names no profile of the catalog"),
            hint,
        ));
    }
    Ok(Failure::usage(
        format!("scope `{p}` matches no operation in the catalog"),
        "check the resource names in docs/catalog.md (e.g. `railway:domain.*`); `blastwall token test` lists every operation",
    ))
}

/// The token named by `arg`: its id (`tok_…`), or the token itself (`bwt_…`, e.g. one found
/// leaked in a file, or copied with its `Bearer ` from a header: it is looked up by digest and
/// never echoed). The argument is echoed in an error only when it is shaped like a token id.
async fn find(ctx: &Ctx, arg: &str) -> Result<TokenRecord, Failure> {
    let text = without_bearer(arg.trim());
    if let Ok(credential) = Credential::parse(text) {
        let digest = credential.digest();
        return match ctx.store.token_by_digest(&digest).await? {
            Some(t) if t.digest.as_ref().is_some_and(|d| d.ct_eq(&digest)) => Ok(t),
            _ => Err(Failure::usage(
                "the token given is not one this store issued",
                "check the store (`--config`); a token from another setup is revoked there",
            )),
        };
    }
    if looks_like_credential(text) {
        // A damaged or truncated token: not echoed (most of it may be a secret).
        return Err(Failure::usage(
            "that is neither a token id nor a whole, valid token",
            "copy the whole token (bwt_…), or give its id (tok_…) from `blastwall token list`",
        ));
    }
    let hint = "`blastwall token list` shows token ids (tok_…); the token itself (bwt_…) works too";
    if !is_token_id_shaped(text) {
        // Whatever it is (a provider's credential pasted by mistake?), it is not repeated.
        return Err(Failure::usage(
            "the argument is neither a token id (tok_…) nor a token (bwt_…)",
            hint,
        ));
    }
    ctx.store
        .token_get(&TokenId(text.to_owned()))
        .await?
        .ok_or_else(|| Failure::usage(format!("no token `{text}`"), hint))
}

/// `text` without a leading `Bearer ` (any case), as copied from an `Authorization` header.
fn without_bearer(text: &str) -> &str {
    match text.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("bearer ") => text.get(7..).unwrap_or("").trim(),
        _ => text,
    }
}

/// Whether `text` holds (part of) a Blastwall credential: `bw`, one letter or digit, `_`
/// anywhere in it (`bwt_`, `bwa_`, `bwm_`, or one of them mistyped), or starts like one.
fn looks_like_credential(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    b.windows(4)
        .any(|w| matches!(w, [b'b', b'w', c, b'_'] if c.is_ascii_alphanumeric()))
        || (lower.starts_with("bw") && lower.len() > 12)
}

/// Whether `text` is shaped like a token id (`tok_` and up to 16 hex characters, as
/// `TokenId::generate` makes them), so it is safe to repeat in an error.
fn is_token_id_shaped(text: &str) -> bool {
    text.strip_prefix("tok_").is_some_and(|hex| {
        (1..=16).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

async fn show(ctx: &Ctx, id: &str, as_json: bool) -> Result<Exit, Failure> {
    let t = find(ctx, id).await?;
    let v = token_json(&t, Timestamp::now());
    if as_json {
        output::json(&v)?;
    } else if let Value::Object(m) = v {
        for (k, val) in m {
            let text = match val {
                Value::String(s) => s,
                Value::Null => "-".to_owned(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            output::line(&format!("{k:<12} {text}"));
        }
    }
    Ok(Exit::Clean)
}

async fn revoke(ctx: &Ctx, env: &dyn EnvSource, id: &str, as_json: bool) -> Result<Exit, Failure> {
    let t = find(ctx, id).await?;
    let auditor = ctx.auditor(env)?;
    let now = Timestamp::now();
    let entry = ctx
        .store
        .token_revoke(
            &t.id,
            now,
            ctx.record(
                "token.revoke",
                Some(&t.env),
                Some(t.id.as_str()),
                json!({"holder": t.holder, "owner": t.owner}),
            ),
        )
        .await?;
    let newly = entry.is_some();
    if let Some(entry) = entry {
        auditor.record(&entry).await?;
        auditor.finish().await?;
    }
    if as_json {
        output::json(&json!({"id": t.id, "revoked": true, "already_revoked": !newly}))?;
    } else if newly {
        output::line(&format!("revoked {}", t.id));
    } else {
        output::line(&format!("{} was already revoked", t.id));
    }
    Ok(Exit::Clean)
}

async fn test(ctx: &Ctx, id: &str, as_json: bool) -> Result<Exit, Failure> {
    let t = find(ctx, id).await?;
    let environment = ctx.store.env_get(&t.env).await?.ok_or_else(|| {
        Failure::usage(
            format!("the token's environment `{}` no longer exists", t.env),
            "issue a new token",
        )
    })?;
    let with_credential: Vec<String> = ctx
        .store
        .credential_list()
        .await?
        .into_iter()
        .filter(|c| c.env == t.env)
        .map(|c| c.upstream.to_string())
        .collect();
    let upstreams: Vec<_> = ctx
        .store
        .upstream_list()
        .await?
        .into_iter()
        .filter(|u| with_credential.iter().any(|n| n == u.name.as_str()))
        .collect();
    let catalog = blastwall_policy::Catalog::load(ctx.config.catalog_dir.as_deref())
        .map_err(|e| anyhow::Error::from(e).context("cannot load the catalog"))?;
    let rows = blastwall_gateway::scope_matrix(
        &catalog,
        ctx.config.policy_dir.as_deref(),
        &t,
        &environment,
        &upstreams,
    )
    .map_err(|e| Failure::usage_or_own_hint(&format!("{e:#}"), "fix the policy named above"))?;
    if as_json {
        output::json(
            &json!({"token": t.id, "env": t.env, "scope": t.scope, "state": t.state(Timestamp::now()), "operations": rows}),
        )?;
    } else {
        if upstreams.is_empty() {
            output::line(&format!(
                "no upstream has a credential in {}: this token can reach nothing",
                t.env
            ));
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.upstream.clone(),
                    match r.methods {
                        Some(m) => format!("{} ({m})", r.operation),
                        None => r.operation.clone(),
                    },
                    r.class.to_string(),
                    r.decision.to_owned(),
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &["UPSTREAM", "OPERATION", "CLASS", "DECISION", "REASON"],
            &table,
        );
        let allowed = rows.iter().filter(|r| r.decision == "allow").count();
        output::line(&format!(
            "{} of {} operations allowed for {} ({}); state {}",
            allowed,
            rows.len(),
            t.id,
            t.scope
                .iter()
                .map(OperationPattern::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            t.state(Timestamp::now())
        ));
    }
    Ok(Exit::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_dropped_in_any_case() {
        assert_eq!(without_bearer("Bearer bwt_x"), "bwt_x");
        assert_eq!(without_bearer("bearer   bwt_x"), "bwt_x");
        assert_eq!(without_bearer("BEARER bwt_x"), "bwt_x");
        assert_eq!(without_bearer("Bearerbwt_x"), "Bearerbwt_x");
        assert_eq!(without_bearer("tok_12"), "tok_12");
        assert_eq!(without_bearer("é"), "é");
    }

    #[test]
    fn credential_like_text_is_recognised_anywhere() {
        for t in [
            "bwt_staging_x",
            "Authorization: bwa_x",
            "xxbwm_",
            "BWT_STAGING",
            "bwx_mistyped",
            "bwtstaging0123456789",
        ] {
            assert!(looks_like_credential(t), "{t}");
        }
        for t in [
            "tok_3f9c2a7b1d0e4f56",
            "bw",
            "bwt",
            "bw_x",
            "sk-live-0123456789",
        ] {
            assert!(!looks_like_credential(t), "{t}");
        }
    }

    #[test]
    fn only_token_id_shapes_are_echoed() {
        for t in ["tok_3f9c2a7b1d0e4f56", "tok_0000", "tok_ABCDEF"] {
            assert!(is_token_id_shaped(t), "{t}");
        }
        for t in [
            "tok_",
            "tok_3f9c2a7b1d0e4f5600",
            "tok_xyz",
            "tok_00 00",
            "sk-live-0123456789",
            "3f9c2a7b1d0e4f56",
        ] {
            assert!(!is_token_id_shaped(t), "{t}");
        }
    }
}
