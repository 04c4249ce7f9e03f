//! Authentication: from a bearer credential to a live token record, without waiting on the store
//! on the hot path.
//!
//! Records are cached by digest after their first lookup. A poller asks the store for revocations
//! every `revocation_poll` (at most a second) and drops revoked tokens from the cache, so a
//! revocation made by any process sharing the store takes effect here within that interval.
//! Expiry needs no store at all: it is checked against the record's `expires_at` on every request.
//! If the poller cannot reach the store for a few intervals, the gateway no longer knows what was
//! revoked, and refuses every request until it can (fail closed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use blastwall_core::record::{TokenId, TokenRecord, TokenState};
use blastwall_core::{Credential, CredentialKind, TokenDigest};
use blastwall_store::Store;
use http::StatusCode;
use jiff::Timestamp;
use tokio::sync::RwLock;

use crate::error::ApiError;

/// How long a cached record is trusted before it is looked up again (revocations arrive sooner
/// through the poller; this bounds anything else, e.g. a row changed by hand).
const RECORD_TTL: Duration = Duration::from_secs(30);

/// A token record and when it was fetched.
type CachedToken = (Arc<TokenRecord>, Instant);

/// The token cache and the revocation state.
#[derive(Debug)]
pub(crate) struct Tokens {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<[u8; 32], CachedToken>>,
    revoked: RwLock<HashSet<TokenId>>,
    /// When this was made: the origin of `last_poll_ok`, on the monotonic clock (a wall clock
    /// set back would make an old poll look fresh while the store is unreachable).
    epoch: Instant,
    /// Milliseconds from `epoch` to the last successful revocation poll.
    last_poll_ok: AtomicI64,
    poll: Duration,
    touched: std::sync::Mutex<HashMap<TokenId, Timestamp>>,
}

impl Tokens {
    pub(crate) fn new(store: Arc<dyn Store>, poll: Duration) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashSet::new()),
            epoch: Instant::now(),
            last_poll_ok: AtomicI64::new(0),
            poll,
            touched: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Authenticates the `Authorization` header's bearer credential for an agent request.
    pub(crate) async fn authenticate(
        &self,
        header: Option<&[u8]>,
    ) -> Result<Arc<TokenRecord>, ApiError> {
        let hint_missing = "send `Authorization: Bearer bwt_<env>_…` with the gateway token your operator issued you";
        let Some(header) = header else {
            return Err(unauthorized(
                "missing_token",
                "no gateway token in the request",
                hint_missing,
            ));
        };
        let text = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    "missing_token",
                    "the Authorization header is not `Bearer <token>`",
                    hint_missing,
                )
            })?;
        let credential = Credential::parse(text).map_err(|e| {
            unauthorized(
                "invalid_token",
                format!("the gateway token is not valid: {e}"),
                "check that the whole token was copied; ask its owner for a new one",
            )
        })?;
        if credential.kind() != CredentialKind::Agent {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_credential_kind",
                format!(
                    "a {} credential cannot make proxied requests",
                    credential.kind()
                ),
                "use an agent token (bwt_…); approver and admin credentials only approve and administer",
            ));
        }
        if !self.revocations_current() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unreachable",
                "the gateway cannot currently confirm which tokens are revoked, so it refuses every request",
                "retry in a few seconds; the operator should check the gateway's store",
            ));
        }
        let digest = credential.digest();
        let record = self.lookup(&digest).await?;
        let Some(record) = record else {
            return Err(unauthorized(
                "unknown_token",
                "this gateway token is not known here",
                "ask the token's owner to issue you a token (`blastwall token issue`)",
            ));
        };
        // The store found it by digest; compare again in constant time before trusting it.
        if !record.digest.as_ref().is_some_and(|d| d.ct_eq(&digest))
            || record.env != *credential.env()
        {
            return Err(unauthorized(
                "unknown_token",
                "this gateway token is not known here",
                "ask the token's owner to issue you a token",
            ));
        }
        if self.revoked.read().await.contains(&record.id) {
            return Err(revoked());
        }
        match record.state(Timestamp::now()) {
            TokenState::Active => {}
            TokenState::Revoked => return Err(revoked()),
            TokenState::Expired => {
                return Err(unauthorized(
                    "token_expired",
                    format!("this gateway token expired at {}", record.expires_at),
                    format!(
                        "ask {} for a new token (`blastwall token issue`)",
                        record.owner
                    ),
                ));
            }
        }
        if let Ok(mut t) = self.touched.lock() {
            // No new key (and no allocation) for a token already seen since the last flush.
            let now = Timestamp::now();
            match t.get_mut(&record.id) {
                Some(at) => *at = now,
                None => {
                    t.insert(record.id.clone(), now);
                }
            }
        }
        Ok(record)
    }

    async fn lookup(&self, digest: &TokenDigest) -> Result<Option<Arc<TokenRecord>>, ApiError> {
        if let Some((rec, at)) = self.cache.read().await.get(digest.as_bytes())
            && at.elapsed() < RECORD_TTL
        {
            return Ok(Some(rec.clone()));
        }
        let found = self.store.token_by_digest(digest).await.map_err(|e| {
            tracing::error!(error = %e, "token lookup failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unreachable",
                "the gateway cannot reach its store to check this token",
                "retry in a few seconds; the operator should check the gateway's store",
            )
        })?;
        let found = found.map(Arc::new);
        if let Some(rec) = &found {
            self.cache
                .write()
                .await
                .insert(*digest.as_bytes(), (rec.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// Milliseconds since `epoch`.
    fn monotonic_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn revocations_current(&self) -> bool {
        let age = self.monotonic_ms() - self.last_poll_ok.load(Ordering::Relaxed);
        let limit =
            i64::try_from((self.poll * 4 + Duration::from_secs(2)).as_millis()).unwrap_or(i64::MAX);
        age <= limit
    }

    /// One poll: asks the store which of the tokens held in the cache are revoked now, and
    /// drops them. No time is compared (a token revoked from a host whose clock lags is caught
    /// all the same); a token not cached is read from the store when it is next used, with its
    /// revocation. With nothing cached there is nothing to ask.
    pub(crate) async fn poll_once(&self) -> Result<(), blastwall_store::StoreError> {
        // The answer is as fresh as the moment the question was asked, not when it came back.
        let asked = self.monotonic_ms();
        let cached: Vec<TokenId> = {
            // Records past their time are read again at their next use anyway: dropped here, so
            // the cache (and this question) holds only the tokens in use, not every one seen.
            let mut cache = self.cache.write().await;
            cache.retain(|_, (_, at)| at.elapsed() < RECORD_TTL);
            let mut ids: Vec<TokenId> = cache.values().map(|(rec, _)| rec.id.clone()).collect();
            ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            ids.dedup();
            ids
        };
        let ids = if cached.is_empty() {
            Vec::new()
        } else {
            self.store.tokens_revoked_among(&cached).await?
        };
        if !ids.is_empty() {
            let mut revoked = self.revoked.write().await;
            let mut cache = self.cache.write().await;
            for id in ids {
                cache.retain(|_, (rec, _)| rec.id != id);
                revoked.insert(id);
            }
        }
        self.last_poll_ok.store(asked, Ordering::Relaxed);
        Ok(())
    }

    /// Runs the revocation poller and flushes last-use times, until the process stops.
    pub(crate) async fn run_poller(self: Arc<Self>) {
        let mut ticks: u32 = 0;
        loop {
            tokio::time::sleep(self.poll).await;
            if let Err(e) = self.poll_once().await {
                tracing::warn!(error = %e, "revocation poll failed");
            }
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(4) {
                self.flush_touched().await;
            }
        }
    }

    /// Writes last-use times to the store (coalesced, off the request path).
    pub(crate) async fn flush_touched(&self) {
        let batch: Vec<(TokenId, Timestamp)> = match self.touched.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => return,
        };
        for (id, at) in batch {
            if let Err(e) = self.store.token_touch(&id, at).await {
                tracing::warn!(error = %e, token_id = %id, "could not record last use");
            }
        }
    }
}

fn unauthorized(
    code: &'static str,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message, hint)
}

fn revoked() -> ApiError {
    unauthorized(
        "token_revoked",
        "this gateway token was revoked",
        "ask the token's owner for a new token",
    )
}
