//! Whether the store's configuration is what its audit log says was done.
//!
//! The chain and its checkpoints prove the log; nothing signs the rest of the store. Someone who
//! can write it can add a token, widen a scope, lengthen an expiry, undo a revocation, turn a
//! `prod` environment into `nonprod`, or point an upstream elsewhere, without touching the log.
//! Every such change made through Blastwall commits together with its audit entry (`env.add`,
//! `token.issue`, `token.revoke`, `upstream.add`, `credential.add`/`credential.replace`), so
//! replaying those entries gives what the store must hold; [`reconcile`] names every record that
//! differs. It is only as good as the log: run it after the chain verified.

use std::collections::BTreeMap;

use blastwall_core::audit::AuditEntry;
use serde_json::Value;

use crate::Store;
use crate::auditor::VERIFY_PAGE;
use crate::error::StoreError;

/// Compares the store's environments, tokens, upstreams and sealed credentials with what the
/// audit log's entries say was done to them; returns one line per difference (empty: none).
pub async fn reconcile(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut log = Replayed::default();
    let mut after = 0;
    loop {
        let page = store.audit_page(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        let next = last.seq;
        for entry in &page {
            log.take(entry);
        }
        after = next;
    }
    let mut drift = std::mem::take(&mut log.problems);

    let mut envs = log.envs;
    for env in store.env_list().await? {
        let name = env.name.to_string();
        let Some((seq, d)) = envs.remove(&name) else {
            drift.push(format!(
                "environment `{name}` has no `env.add` entry in the audit log"
            ));
            continue;
        };
        let fields = [
            ("tier", d["tier"] == env.tier.to_string()),
            (
                "longest token lifetime",
                d["max_token_ttl_secs"] == env.max_token_ttl.as_secs(),
            ),
            ("public key", d["recipient"] == env.recipient.as_str()),
        ];
        for (what, same) in fields {
            if !same {
                drift.push(format!(
                    "environment `{name}`: its {what} is not the one its `env.add` entry (audit entry {seq}) recorded"
                ));
            }
        }
    }
    for (name, (seq, _)) in envs {
        drift.push(format!(
            "environment `{name}` (added in audit entry {seq}) is not in the store"
        ));
    }

    let mut tokens = log.tokens;
    for t in store.token_list(None).await? {
        let id = t.id.to_string();
        let Some(issued) = tokens.remove(&id) else {
            drift.push(format!(
                "token `{id}` has no `token.issue` entry in the audit log"
            ));
            continue;
        };
        let d = &issued.detail;
        let scope: Vec<String> = t.scope.iter().map(ToString::to_string).collect();
        let expires = d["expires_at"]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(|ts| ts.as_microsecond());
        let fields = [
            ("environment", issued.env == t.env.as_str()),
            (
                "kind",
                serde_json::to_value(t.kind).ok().as_ref() == Some(&d["kind"]),
            ),
            ("owner", d["owner"] == t.owner.as_str()),
            ("holder", d["holder"] == t.holder.as_str()),
            ("scope", d["scope"] == serde_json::json!(scope)),
            // The store keeps microseconds; the entry the time as issued.
            ("expiry", expires == Some(t.expires_at.as_microsecond())),
        ];
        for (what, same) in fields {
            if !same {
                drift.push(format!(
                    "token `{id}`: its {what} is not the one its `token.issue` entry (audit entry {}) recorded",
                    issued.seq
                ));
            }
        }
        match (issued.revoked, t.revoked_at.is_some()) {
            (Some(seq), false) => drift.push(format!(
                "token `{id}` was revoked (audit entry {seq}) but the store has it unrevoked"
            )),
            (None, true) => drift.push(format!(
                "token `{id}` is revoked in the store without a `token.revoke` entry in the audit log"
            )),
            _ => {}
        }
    }
    for (id, issued) in tokens {
        drift.push(format!(
            "token `{id}` (issued in audit entry {}) is not in the store",
            issued.seq
        ));
    }

    let mut upstreams = log.upstreams;
    for u in store.upstream_list().await? {
        let name = u.name.to_string();
        let Some((seq, d)) = upstreams.remove(&name) else {
            drift.push(format!(
                "upstream `{name}` has no `upstream.add` entry in the audit log"
            ));
            continue;
        };
        for (what, same) in [
            ("profile", d["profile"] == u.profile.as_str()),
            ("base URL", d["base_url"] == u.base_url.as_str()),
        ] {
            if !same {
                drift.push(format!(
                    "upstream `{name}`: its {what} is not the one its `upstream.add` entry (audit entry {seq}) recorded"
                ));
            }
        }
    }
    for (name, (seq, _)) in upstreams {
        drift.push(format!(
            "upstream `{name}` (added in audit entry {seq}) is not in the store"
        ));
    }

    let mut credentials = log.credentials;
    for c in store.credential_list().await? {
        let key = (c.upstream.to_string(), c.env.to_string());
        let Some((seq, d)) = credentials.remove(&key) else {
            drift.push(format!(
                "the credential of upstream `{}` for `{}` has no `credential.add` entry in the audit log",
                key.0, key.1
            ));
            continue;
        };
        // Entries written before the fingerprint was recorded carry only the length.
        let same = d["recipient"] == c.recipient.as_str()
            && d["sealed_bytes"] == serde_json::json!(c.sealed.len())
            && d.get("sealed_sha256")
                .is_none_or(|f| f == c.fingerprint().as_str());
        if !same {
            drift.push(format!(
                "the credential of upstream `{}` for `{}` is not the one its last entry (audit entry {seq}) recorded",
                key.0, key.1
            ));
        }
    }
    for ((upstream, env), (seq, _)) in credentials {
        drift.push(format!(
            "the credential of upstream `{upstream}` for `{env}` (sealed in audit entry {seq}) is not in the store"
        ));
    }
    Ok(drift)
}

/// A `token.issue` entry, and the `token.revoke` entry that followed, if one did.
struct Issued {
    seq: i64,
    env: String,
    detail: Value,
    revoked: Option<i64>,
}

/// What the log's administrative entries say the store holds, by name.
#[derive(Default)]
struct Replayed {
    envs: BTreeMap<String, (i64, Value)>,
    tokens: BTreeMap<String, Issued>,
    upstreams: BTreeMap<String, (i64, Value)>,
    credentials: BTreeMap<(String, String), (i64, Value)>,
    problems: Vec<String>,
}

impl Replayed {
    fn take(&mut self, e: &AuditEntry) {
        let r = &e.record;
        let action = r.action.as_str();
        if !matches!(
            action,
            "env.add"
                | "token.issue"
                | "token.revoke"
                | "upstream.add"
                | "credential.add"
                | "credential.replace"
        ) {
            return;
        }
        let detail = serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null);
        let (env, target) = (r.env.clone(), r.target.clone());
        match (action, env, target) {
            ("env.add", Some(env), _) => {
                self.envs.insert(env, (e.seq, detail));
            }
            ("token.issue", Some(env), Some(id)) => {
                self.tokens.insert(
                    id,
                    Issued {
                        seq: e.seq,
                        env,
                        detail,
                        revoked: None,
                    },
                );
            }
            ("token.revoke", _, Some(id)) => match self.tokens.get_mut(&id) {
                Some(t) => t.revoked = t.revoked.or(Some(e.seq)),
                None => self.problems.push(format!(
                    "audit entry {} revokes token `{id}`, which no earlier entry issued",
                    e.seq
                )),
            },
            ("upstream.add", _, Some(name)) => {
                self.upstreams.insert(name, (e.seq, detail));
            }
            ("credential.add" | "credential.replace", Some(env), Some(upstream)) => {
                self.credentials.insert((upstream, env), (e.seq, detail));
            }
            _ => self.problems.push(format!(
                "audit entry {} (`{action}`) does not name what it changed",
                e.seq
            )),
        }
    }
}
