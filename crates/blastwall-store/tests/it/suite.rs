//! The suite every backend passes. Each function takes a fresh, empty [`Backend`].

use std::sync::Arc;

use blastwall_core::audit::{AuditEntry, AuditRecord, CheckpointSigner};
use blastwall_core::operation::OperationPattern;
use blastwall_core::principal::PrincipalName;
use blastwall_core::record::{SealedCredential, TokenId, TokenRecord, TokenState, UpstreamRecord};
use blastwall_core::seal::EnvIdentity;
use blastwall_core::{ChainError, Credential, CredentialKind, EnvName, Environment, Tier};
use blastwall_store::{
    Auditor, Store, StoreError, VerifyError, latest_checkpoint, verify_log, verify_log_with,
};
use jiff::Timestamp;

use crate::backend::Backend;

// ---------------------------------------------------------------------------------------------
// fixtures

fn name(s: &str) -> EnvName {
    EnvName::new(s).unwrap()
}

/// A whole-second time, so it survives the store's microsecond precision unchanged.
fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

fn record(action: &str, target: Option<&str>) -> AuditRecord {
    AuditRecord {
        at: Timestamp::now().to_string(),
        actor: "cli:test".into(),
        action: action.into(),
        env: None,
        target: target.map(str::to_owned),
        detail: r#"{"k": "v",  "spacing":"kept"}"#.into(),
    }
}

fn env(n: &str, tier: Tier) -> Environment {
    Environment {
        name: name(n),
        tier,
        max_token_ttl: tier.default_max_token_ttl(),
        recipient: EnvIdentity::generate().recipient().to_string(),
    }
}

fn upstream(n: &str) -> UpstreamRecord {
    UpstreamRecord {
        name: name(n),
        profile: "railway".into(),
        base_url: "https://backboard.railway.com".into(),
        created_at: ts(0),
    }
}

/// A token record and the credential whose digest it stores.
fn token(env: &str, created: i64) -> (TokenRecord, Credential) {
    let cred = Credential::generate(CredentialKind::Agent, &name(env)).unwrap();
    let rec = TokenRecord {
        id: TokenId::generate().unwrap(),
        kind: CredentialKind::Agent,
        env: name(env),
        owner: PrincipalName::new("owner", "jer@pocketos.com").unwrap(),
        holder: PrincipalName::new("holder", "cursor-agent").unwrap(),
        scope: vec![
            OperationPattern::new("railway:domain.*").unwrap(),
            OperationPattern::new("github:*.read").unwrap(),
        ],
        created_at: ts(created),
        expires_at: ts(created + 3600),
        revoked_at: None,
        last_used_at: None,
        digest: Some(cred.digest()),
    };
    (rec, cred)
}

async fn with_envs(b: &Backend) {
    b.store
        .env_add(
            &env("staging", Tier::Nonprod),
            record("env.add", Some("staging")),
        )
        .await
        .unwrap();
    b.store
        .env_add(
            &env("production", Tier::Prod),
            record("env.add", Some("production")),
        )
        .await
        .unwrap();
}

async fn count(store: &dyn Store) -> usize {
    store.audit_page(0, i64::MAX).await.unwrap().len()
}

/// Appends `n` entries, with checkpoints every 4 and at the end; returns the trusted key.
async fn signed_log(b: &Backend, n: usize) -> String {
    let auditor = Auditor::new(b.store.clone(), CheckpointSigner::generate().unwrap(), 4);
    for i in 0..n {
        auditor
            .append(record("request.decide", Some(&format!("req_{i}"))))
            .await
            .unwrap();
    }
    auditor.finish().await.unwrap();
    let key = auditor.public_key_hex();
    verify_log(b.store.as_ref(), &key).await.unwrap();
    key
}

// ---------------------------------------------------------------------------------------------
// records

pub(crate) async fn environments_crud(b: &Backend) {
    let staging = env("staging", Tier::Nonprod);
    let prod = env("production", Tier::Prod);
    let e1 = b
        .store
        .env_add(&staging, record("env.add", Some("staging")))
        .await
        .unwrap();
    let e2 = b
        .store
        .env_add(&prod, record("env.add", Some("production")))
        .await
        .unwrap();
    assert_eq!((e1.seq, e2.seq), (1, 2));
    assert_eq!(e2.prev_hash, e1.hash);

    assert_eq!(
        b.store.env_list().await.unwrap(),
        vec![prod.clone(), staging.clone()]
    );
    assert_eq!(
        b.store.env_get(&name("staging")).await.unwrap(),
        Some(staging)
    );
    assert_eq!(b.store.env_get(&name("qa")).await.unwrap(), None);

    let again = b
        .store
        .env_add(&env("production", Tier::Nonprod), record("env.add", None))
        .await
        .unwrap_err();
    assert!(again.is_conflict(), "{again}");
    assert_eq!(again.to_string(), "environment `production` already exists");
    assert_eq!(
        b.store.env_get(&name("production")).await.unwrap(),
        Some(prod)
    );
}

pub(crate) async fn upstreams_crud(b: &Backend) {
    let railway = upstream("railway");
    let mut github = upstream("github");
    github.profile = "github".into();
    github.base_url = "https://api.github.com".into();
    b.store
        .upstream_add(&railway, record("upstream.add", Some("railway")))
        .await
        .unwrap();
    b.store
        .upstream_add(&github, record("upstream.add", Some("github")))
        .await
        .unwrap();
    assert_eq!(
        b.store.upstream_list().await.unwrap(),
        vec![github, railway.clone()]
    );
    assert_eq!(
        b.store.upstream_get(&name("railway")).await.unwrap(),
        Some(railway)
    );
    assert_eq!(b.store.upstream_get(&name("aws")).await.unwrap(), None);
    let again = b
        .store
        .upstream_add(&upstream("railway"), record("upstream.add", None))
        .await
        .unwrap_err();
    assert!(again.is_conflict(), "{again}");
}

pub(crate) async fn credentials_put_get_replace(b: &Backend) {
    with_envs(b).await;
    b.store
        .upstream_add(&upstream("railway"), record("upstream.add", None))
        .await
        .unwrap();
    let cred = SealedCredential {
        upstream: name("railway"),
        env: name("staging"),
        sealed: vec![0, 1, 2, 255, 254],
        recipient: "age1staging".into(),
        created_at: ts(5),
    };
    b.store
        .credential_put(&cred, record("credential.put", Some("railway")))
        .await
        .unwrap();
    assert_eq!(
        b.store
            .credential_get(&name("railway"), &name("staging"))
            .await
            .unwrap(),
        Some(cred.clone())
    );
    assert_eq!(
        b.store
            .credential_get(&name("railway"), &name("production"))
            .await
            .unwrap(),
        None
    );

    let replaced = SealedCredential {
        sealed: vec![9; 300],
        recipient: "age1rotated".into(),
        created_at: ts(6),
        ..cred.clone()
    };
    b.store
        .credential_put(&replaced, record("credential.put", Some("railway")))
        .await
        .unwrap();
    let prod = SealedCredential {
        env: name("production"),
        ..cred.clone()
    };
    b.store
        .credential_put(&prod, record("credential.put", Some("railway")))
        .await
        .unwrap();
    assert_eq!(
        b.store.credential_list().await.unwrap(),
        vec![prod, replaced]
    );

    let no_upstream = SealedCredential {
        upstream: name("github"),
        ..cred.clone()
    };
    let e = b
        .store
        .credential_put(&no_upstream, record("credential.put", None))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("upstream `github`"), "{e}");
    let no_env = SealedCredential {
        env: name("qa"),
        ..cred
    };
    let e = b
        .store
        .credential_put(&no_env, record("credential.put", None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("environment `qa`"), "{e}");
}

pub(crate) async fn tokens_insert_and_lookup(b: &Backend) {
    with_envs(b).await;
    let (t1, c1) = token("staging", 10);
    let (t2, _) = token("production", 20);
    let (t3, _) = token("staging", 30);
    for t in [&t1, &t2, &t3] {
        b.store
            .token_insert(t, record("token.issue", Some(t.id.as_str())))
            .await
            .unwrap();
    }

    let found = b.store.token_by_digest(&c1.digest()).await.unwrap();
    assert_eq!(found, Some(t1.clone()));
    let other = Credential::generate(CredentialKind::Agent, &name("staging")).unwrap();
    assert_eq!(
        b.store.token_by_digest(&other.digest()).await.unwrap(),
        None
    );
    assert_eq!(b.store.token_get(&t2.id).await.unwrap(), Some(t2.clone()));
    assert_eq!(
        b.store
            .token_get(&TokenId("tok_0000".into()))
            .await
            .unwrap(),
        None
    );

    let all: Vec<TokenId> = b
        .store
        .token_list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all, vec![t3.id.clone(), t2.id.clone(), t1.id.clone()]);
    let staging: Vec<TokenId> = b
        .store
        .token_list(Some(&name("staging")))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(staging, vec![t3.id.clone(), t1.id.clone()]);

    let dup = b
        .store
        .token_insert(&t1, record("token.issue", None))
        .await
        .unwrap_err();
    assert!(dup.is_conflict(), "{dup}");
    let (mut same_digest, _) = token("staging", 40);
    same_digest.digest = t1.digest.clone();
    assert!(
        b.store
            .token_insert(&same_digest, record("token.issue", None))
            .await
            .unwrap_err()
            .is_conflict()
    );
    let (orphan, _) = token("qa", 50);
    assert!(
        b.store
            .token_insert(&orphan, record("token.issue", None))
            .await
            .unwrap_err()
            .is_not_found()
    );
    let (mut no_digest, _) = token("staging", 60);
    no_digest.digest = None;
    assert!(matches!(
        b.store
            .token_insert(&no_digest, record("token.issue", None))
            .await,
        Err(StoreError::Invalid { .. })
    ));
}

pub(crate) async fn token_revoke_twice(b: &Backend) {
    with_envs(b).await;
    let (t, _) = token("staging", 0);
    b.store
        .token_insert(&t, record("token.issue", Some(t.id.as_str())))
        .await
        .unwrap();
    let entry = b
        .store
        .token_revoke(&t.id, ts(100), record("token.revoke", Some(t.id.as_str())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.record.action, "token.revoke");
    let before = count(b.store.as_ref()).await;
    let again = b
        .store
        .token_revoke(&t.id, ts(200), record("token.revoke", Some(t.id.as_str())))
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(
        count(b.store.as_ref()).await,
        before,
        "a no-op revoke wrote an entry"
    );

    let stored = b.store.token_get(&t.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(ts(100)));
    assert_eq!(stored.state(ts(1)), TokenState::Revoked);

    let missing = b
        .store
        .token_revoke(
            &TokenId("tok_ffffffffffffffff".into()),
            ts(100),
            record("token.revoke", None),
        )
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains("tok_ffffffffffffffff"),
        "{missing}"
    );
}

pub(crate) async fn token_touch_moves_forward(b: &Backend) {
    with_envs(b).await;
    let (t, _) = token("staging", 0);
    b.store
        .token_insert(&t, record("token.issue", None))
        .await
        .unwrap();
    let before = count(b.store.as_ref()).await;
    b.store.token_touch(&t.id, ts(50)).await.unwrap();
    b.store.token_touch(&t.id, ts(40)).await.unwrap();
    let stored = b.store.token_get(&t.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(ts(50)));
    assert_eq!(
        count(b.store.as_ref()).await,
        before,
        "touch is not audited"
    );
    // Sub-second times keep microsecond precision.
    let precise = Timestamp::from_microsecond(ts(60).as_microsecond() + 123_456).unwrap();
    b.store.token_touch(&t.id, precise).await.unwrap();
    let stored = b.store.token_get(&t.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(precise));
}

pub(crate) async fn tokens_revoked_since_lists_recent_revocations(b: &Backend) {
    with_envs(b).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (t, _) = token("staging", i);
        b.store
            .token_insert(&t, record("token.issue", None))
            .await
            .unwrap();
        ids.push(t.id);
    }
    b.store
        .token_revoke(&ids[0], ts(100), record("token.revoke", None))
        .await
        .unwrap();
    b.store
        .token_revoke(&ids[2], ts(200), record("token.revoke", None))
        .await
        .unwrap();
    assert_eq!(
        b.store.tokens_revoked_since(ts(0)).await.unwrap(),
        vec![ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(
        b.store.tokens_revoked_since(ts(200)).await.unwrap(),
        vec![ids[2].clone()]
    );
    assert_eq!(b.store.tokens_revoked_since(ts(201)).await.unwrap(), vec![]);
    // Asked about by id, whenever they were revoked.
    let mut among = b.store.tokens_revoked_among(&ids[1..]).await.unwrap();
    among.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(among, vec![ids[2].clone()]);
    let mut all = b.store.tokens_revoked_among(&ids).await.unwrap();
    all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(all, want);
    assert_eq!(b.store.tokens_revoked_among(&[]).await.unwrap(), vec![]);
}

pub(crate) async fn failed_changes_write_no_audit_entry(b: &Backend) {
    with_envs(b).await;
    let before = count(b.store.as_ref()).await;
    assert!(
        b.store
            .env_add(&env("staging", Tier::Nonprod), record("env.add", None))
            .await
            .is_err()
    );
    let (orphan, _) = token("qa", 0);
    assert!(
        b.store
            .token_insert(&orphan, record("token.issue", None))
            .await
            .is_err()
    );
    assert_eq!(count(b.store.as_ref()).await, before);
    // And the chain goes on from where it was.
    let next = b.store.audit_append(record("x", None)).await.unwrap();
    assert_eq!(next.seq, i64::try_from(before).unwrap() + 1);
}

// ---------------------------------------------------------------------------------------------
// audit chain

pub(crate) async fn audit_tail_and_pages(b: &Backend) {
    assert!(b.store.audit_tail(5).await.unwrap().is_empty());
    let mut written: Vec<AuditEntry> = Vec::new();
    for i in 0..7 {
        written.push(
            b.store
                .audit_append(record("request.decide", Some(&format!("r{i}"))))
                .await
                .unwrap(),
        );
    }
    assert_eq!(b.store.audit_tail(3).await.unwrap(), written[4..].to_vec());
    assert_eq!(b.store.audit_tail(100).await.unwrap(), written);
    assert_eq!(
        b.store.audit_page(0, 2).await.unwrap(),
        written[..2].to_vec()
    );
    assert_eq!(
        b.store.audit_page(5, 10).await.unwrap(),
        written[5..].to_vec()
    );
    // The detail comes back byte for byte (it is hashed as stored).
    assert_eq!(written[0].record.detail, record("x", None).detail);
    let report = blastwall_core::audit::verify(&written, &[], "").unwrap();
    assert_eq!(report.last_seq, 7);
}

pub(crate) async fn batches_append_in_order_and_checkpoint(b: &Backend) {
    let signer = CheckpointSigner::generate().unwrap();
    let key = signer.public_hex();
    let auditor = Auditor::new(b.store.clone(), signer, 4);
    auditor
        .append(record("request.decide", Some("first")))
        .await
        .unwrap();
    let batch: Vec<_> = (0..9)
        .map(|i| record("request.decide", Some(&format!("b{i}"))))
        .collect();
    let entries = auditor.append_batch(batch).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (2..=10).collect::<Vec<i64>>()
    );
    assert_eq!(entries[0].record.target.as_deref(), Some("b0"));
    assert!(auditor.append_batch(Vec::new()).await.unwrap().is_empty());
    let seqs: Vec<i64> = b
        .store
        .checkpoint_list()
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![4, 8]);
    auditor.finish().await.unwrap();
    let report = verify_log(b.store.as_ref(), &key).await.unwrap();
    assert_eq!(report.last_seq, 10);

    // A batch longer than one multi-row insert: stored exactly as returned, chain intact.
    let big: Vec<_> = (0..600)
        .map(|i| record("request.decide", Some(&format!("big{i}"))))
        .collect();
    let entries = auditor.append_batch(big).await.unwrap();
    assert_eq!(entries.first().unwrap().seq, 11);
    assert_eq!(entries.last().unwrap().seq, 610);
    let stored = b.store.audit_page(10, 1000).await.unwrap();
    assert_eq!(stored, entries);
    auditor.finish().await.unwrap();
    let report = verify_log(b.store.as_ref(), &key).await.unwrap();
    assert_eq!(report.last_seq, 610);
}

pub(crate) async fn auditor_signs_checkpoints(b: &Backend) {
    let signer = CheckpointSigner::generate().unwrap();
    let auditor = Auditor::new(b.store.clone(), signer, 3);
    assert_eq!(auditor.finish().await.unwrap(), None, "nothing to sign yet");
    let key = auditor.public_key_hex();
    assert_eq!(
        latest_checkpoint(b.store.as_ref(), &key).await.unwrap(),
        None
    );
    for i in 0..7 {
        auditor
            .append(record("request.decide", Some(&format!("r{i}"))))
            .await
            .unwrap();
    }
    let seqs: Vec<i64> = b
        .store
        .checkpoint_list()
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![3, 6]);
    let last = auditor.finish().await.unwrap().unwrap();
    assert_eq!(last.seq, 7);
    assert_eq!(
        auditor.finish().await.unwrap(),
        None,
        "head already covered"
    );
    assert_eq!(b.store.checkpoint_last_seq().await.unwrap(), Some(7));
    assert_eq!(
        latest_checkpoint(b.store.as_ref(), &key).await.unwrap(),
        Some(last.clone())
    );

    // An entry written by a state change counts too.
    let e = b
        .store
        .env_add(&env("qa", Tier::Nonprod), record("env.add", Some("qa")))
        .await
        .unwrap();
    assert_eq!(e.seq, 8);
    assert_eq!(auditor.record(&e).await.unwrap(), None);
    let e = b.store.audit_append(record("x", None)).await.unwrap();
    assert_eq!(auditor.record(&e).await.unwrap().unwrap().seq, 9);

    let report = verify_log(b.store.as_ref(), &auditor.public_key_hex())
        .await
        .unwrap();
    assert_eq!((report.last_seq, report.checkpoints), (9, 4));
    let other = CheckpointSigner::generate().unwrap().public_hex();
    assert!(matches!(
        verify_log(b.store.as_ref(), &other).await,
        Err(VerifyError::Chain(ChainError::BadSignature { .. }))
    ));

    // A checkpoint kept outside the store: checked with the stored ones, and counted apart.
    let shipped = latest_checkpoint(b.store.as_ref(), &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shipped.seq, 9);
    let report = verify_log_with(b.store.as_ref(), &key, std::slice::from_ref(&shipped))
        .await
        .unwrap();
    assert_eq!((report.checkpoints, report.shipped), (4, 1));
    assert_eq!(report.signed_to, Some(9));
    // One from a store that has moved on (entry 12 here) must find entry 12 still in the log.
    for i in 0..3 {
        let e = b
            .store
            .audit_append(record("x", Some(&format!("later{i}"))))
            .await
            .unwrap();
        auditor.record(&e).await.unwrap();
    }
    let later = latest_checkpoint(b.store.as_ref(), &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later.seq, 12);
    // Forged: a valid signature over another hash is not a checkpoint of this log.
    let mut forged = later.clone();
    forged.hash = shipped.hash.clone();
    assert!(matches!(
        verify_log_with(b.store.as_ref(), &key, &[shipped.clone(), forged]).await,
        Err(VerifyError::Shipped {
            index: 1,
            source: ChainError::BadSignature { seq: 12 }
        })
    ));
    // Validly signed, for an entry the log does not have (any more): the end was cut off. The
    // shipped ones are checked first, so this is named before the stored ones (signed with
    // another key here) are.
    let signer = CheckpointSigner::generate().unwrap();
    let beyond = signer.sign(40, &later.hash, &later.at);
    assert!(matches!(
        verify_log_with(b.store.as_ref(), &signer.public_hex(), &[beyond]).await,
        Err(VerifyError::Shipped {
            index: 0,
            source: ChainError::Truncated { seq: 40, last: 12 }
        })
    ));
    verify_log_with(b.store.as_ref(), &key, &[shipped, later.clone()])
        .await
        .unwrap();

    // What `log checkpoint` hands out is checked first: a row someone who can write the store
    // added is an error, never the checkpoint to keep. Another key's row is not even looked at.
    b.store
        .checkpoint_add(&signer.sign(99, &later.hash, &later.at))
        .await
        .unwrap();
    assert_eq!(
        latest_checkpoint(b.store.as_ref(), &key).await.unwrap(),
        Some(later.clone())
    );
    let mut junk = later.clone();
    junk.seq = 13;
    b.store.checkpoint_add(&junk).await.unwrap();
    assert!(matches!(
        latest_checkpoint(b.store.as_ref(), &key).await,
        Err(VerifyError::Chain(ChainError::BadSignature { seq: 13 }))
    ));
}

pub(crate) async fn chain_stays_linear_under_concurrent_appends(b: &Backend) {
    with_envs(b).await;
    // Two independent stores on one database: two processes, each with its own connections.
    let stores: [Arc<dyn Store>; 2] = [b.store.clone(), b.reopen().await];
    let tasks = 16;
    let per_task = 6;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = stores[t % 2].clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_task {
                let entry = if i % 3 == 0 {
                    let (tok, _) = token("staging", i64::try_from(t * 100 + i).unwrap());
                    store
                        .token_insert(&tok, record("token.issue", Some(tok.id.as_str())))
                        .await
                        .unwrap()
                } else {
                    store
                        .audit_append(record("request.decide", Some(&format!("{t}/{i}"))))
                        .await
                        .unwrap()
                };
                seqs.push(entry.seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for h in handles {
        seqs.extend(h.await.unwrap());
    }
    seqs.sort_unstable();
    let expected: Vec<i64> = (3..=i64::try_from(2 + tasks * per_task).unwrap()).collect();
    assert_eq!(seqs, expected, "every append got its own position");
    let report = verify_log(b.store.as_ref(), "").await.unwrap();
    assert_eq!(report.last_seq, *expected.last().unwrap());
    assert_eq!(
        b.store.token_list(None).await.unwrap().len(),
        tasks * per_task / 3
    );
    stores[1].close().await;
}

pub(crate) async fn verify_catches_an_edited_entry(b: &Backend) {
    let key = signed_log(b, 10).await;
    b.exec("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 4")
        .await;
    let e = verify_log(b.store.as_ref(), &key).await.unwrap_err();
    assert!(
        matches!(e, VerifyError::Chain(ChainError::Altered { seq: 4 })),
        "{e}"
    );
    assert!(e.to_string().contains("entry 4"), "{e}");
}

pub(crate) async fn verify_catches_a_deleted_entry(b: &Backend) {
    let key = signed_log(b, 10).await;
    b.exec("DELETE FROM audit_log WHERE seq = 6").await;
    let e = verify_log(b.store.as_ref(), &key).await.unwrap_err();
    assert!(
        matches!(e, VerifyError::Chain(ChainError::Gap { expected: 6, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("entry 6"), "{e}");
}

pub(crate) async fn verify_catches_reordered_entries(b: &Backend) {
    let key = signed_log(b, 10).await;
    b.exec(
        "UPDATE audit_log SET seq = -1 WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = -1;",
    )
    .await;
    let e = verify_log(b.store.as_ref(), &key).await.unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Chain(ChainError::Broken { seq: 3, .. } | ChainError::Altered { seq: 3 })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("entry 3"), "{e}");
}

pub(crate) async fn verify_catches_a_truncated_tail(b: &Backend) {
    let key = signed_log(b, 10).await;
    b.exec("DELETE FROM audit_log WHERE seq > 7").await;
    let e = verify_log(b.store.as_ref(), &key).await.unwrap_err();
    // Checkpoints were signed at 4, 8 and (at finish) 10: the first one past the end names it.
    assert!(
        matches!(
            e,
            VerifyError::Chain(ChainError::Truncated { seq: 8, last: 7 })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(e.to_string().contains("entry 7"), "{e}");
}

/// Two child processes (this test binary, re-run) and this one append at once: one linear chain.
pub(crate) async fn two_processes_share_one_chain(b: &Backend) {
    // `cargo test` builds the examples beside the test binaries: target/<profile>/examples/.
    const CHILD_APPENDS: usize = 25;
    let exe = std::env::current_exe().unwrap();
    let child_bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/append_child");
    assert!(
        child_bin.exists(),
        "build the example first: {}",
        child_bin.display()
    );
    let children: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(&child_bin)
                .env("BLASTWALL_TEST_CHILD_STORE", b.db.url_text())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..CHILD_APPENDS {
        b.store
            .audit_append(record("request.decide", Some(&format!("parent_{i}"))))
            .await
            .unwrap();
    }
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = verify_log(b.store.as_ref(), "").await.unwrap();
    assert_eq!(report.last_seq, i64::try_from(3 * CHILD_APPENDS).unwrap());
    let actors: std::collections::BTreeSet<String> = b
        .store
        .audit_page(0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.record.actor)
        .collect();
    assert_eq!(actors.len(), 3, "three processes appended: {actors:?}");
}

// ---------------------------------------------------------------------------------------------
// secrets

pub(crate) async fn store_never_receives_a_plaintext_secret(b: &Backend) {
    with_envs(b).await;
    b.store
        .upstream_add(
            &upstream("railway"),
            record("upstream.add", Some("railway")),
        )
        .await
        .unwrap();
    let identity = EnvIdentity::generate();
    let canary = format!(
        "canary-upstream-secret-{}",
        TokenId::generate().unwrap().as_str()
    );
    let sealed = identity.recipient().seal(canary.as_bytes()).unwrap();
    b.store
        .credential_put(
            &SealedCredential {
                upstream: name("railway"),
                env: name("staging"),
                sealed,
                recipient: identity.recipient().to_string(),
                created_at: ts(0),
            },
            record("credential.put", Some("railway")),
        )
        .await
        .unwrap();
    let (t, cred) = token("staging", 0);
    b.store
        .token_insert(&t, record("token.issue", Some(t.id.as_str())))
        .await
        .unwrap();
    let auditor = Auditor::new(b.store.clone(), CheckpointSigner::generate().unwrap(), 1);
    auditor.finish().await.unwrap();

    let secrets = [canary.as_bytes(), cred.expose().as_bytes()];
    // Everything the store hands back…
    let mut seen = format!(
        "{:?}{:?}{:?}{:?}{:?}",
        b.store.env_list().await.unwrap(),
        b.store.upstream_list().await.unwrap(),
        b.store.token_list(None).await.unwrap(),
        b.store.audit_page(0, i64::MAX).await.unwrap(),
        b.store.checkpoint_list().await.unwrap(),
    )
    .into_bytes();
    for c in b.store.credential_list().await.unwrap() {
        seen.extend(c.sealed);
    }
    for s in secrets {
        assert!(!seen.windows(s.len()).any(|w| w == s), "a secret came back");
    }
    // …and every byte it wrote to disk.
    for s in secrets {
        assert_eq!(b.find_on_disk(s).await, None, "a secret reached the disk");
    }
    // The canary is findable when it is there (the search works).
    b.exec(&format!(
        "INSERT INTO audit_log (seq, at, actor, action, env, target, detail, prev_hash, hash) \
         VALUES (999, 'x', 'x', 'x', NULL, NULL, 'planted-{}', 'x', 'x')",
        t.id
    ))
    .await;
    assert!(
        b.find_on_disk(format!("planted-{}", t.id).as_bytes())
            .await
            .is_some()
    );
    // And a process with the key can still read the credential back.
    let stored = b
        .store
        .credential_get(&name("railway"), &name("staging"))
        .await
        .unwrap()
        .unwrap();
    let plain = identity.unseal(&stored.sealed).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&plain),
        canary.as_bytes()
    );
}

/// `reconcile` replays the log's administrative entries against the store's records, on every
/// backend: a store whose changes each came with their entry has no drift; a record that says
/// more than its entry (here a wider scope) is named.
pub(crate) async fn reconcile_names_records_the_log_does_not_back(b: &Backend) {
    let staging = env("staging", Tier::Nonprod);
    let mut rec = record("env.add", None);
    rec.env = Some("staging".into());
    rec.detail = serde_json::json!({
        "tier": "nonprod",
        "max_token_ttl_secs": staging.max_token_ttl.as_secs(),
        "recipient": staging.recipient,
    })
    .to_string();
    b.store.env_add(&staging, rec).await.unwrap();
    let issue = |t: &TokenRecord, scope: &[OperationPattern]| {
        let mut rec = record("token.issue", Some(&t.id.to_string()));
        rec.env = Some("staging".into());
        rec.detail = serde_json::json!({
            "kind": t.kind, "owner": t.owner, "holder": t.holder, "scope": scope,
            "expires_at": t.expires_at.to_string(),
        })
        .to_string();
        rec
    };
    let (t, _) = token("staging", 10);
    b.store.token_insert(&t, issue(&t, &t.scope)).await.unwrap();
    assert_eq!(
        blastwall_store::reconcile(b.store.as_ref()).await.unwrap(),
        Vec::<String>::new()
    );
    let (mut wide, _) = token("staging", 20);
    let entry = issue(&wide, &wide.scope);
    wide.scope = vec![OperationPattern::new("railway:*").unwrap()];
    b.store.token_insert(&wide, entry).await.unwrap();
    let drift = blastwall_store::reconcile(b.store.as_ref()).await.unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains(&format!("token `{}`: its scope", wide.id)),
        "{drift:?}"
    );
}
