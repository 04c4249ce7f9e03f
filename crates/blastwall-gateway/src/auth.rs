//! Authentication: from a bearer credential to a live token record, without waiting on the store
//! on the hot path.
//!
//! Records are cached by digest after their first lookup. A poller asks the store for revocations
//! every `revocation_poll` (at most a second) and drops revoked tokens from the cache, so a
//! revocation made by any process sharing the store takes effect here within that interval.
//! Beside it, and never holding it up (a slow read would otherwise delay the revocation poll
//! until the gateway refused everything), a second loop reads again the records of tokens in use
//! once they are [`REFRESH_AFTER`] old, drops those not used since their last read, and writes
//! last-use times: a token in steady use never sends a request to the store (only its first
//! request, on a cold cache, reads it inline).
//! Expiry needs no store at all: it is checked against the record's `expires_at` on every request.
//! If the poller cannot reach the store for a few intervals, the gateway no longer knows what was
//! revoked, and refuses every request until it can (fail closed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use blastwall_core::record::{TokenId, TokenRecord, TokenState};
use blastwall_core::{Credential, CredentialKind, TokenDigest};
use blastwall_store::{Store, StoreError};
use http::StatusCode;
use jiff::Timestamp;
use tokio::sync::RwLock;

use crate::error::ApiError;

/// How old a cached record may be when the poller reads it again (if it was used since its last
/// read) or drops it (if not). Revocations arrive sooner, through the revocation poll; this
/// bounds anything else, e.g. a row changed by hand.
const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// How long a cached record is trusted at all: past it (the poller could not read it again), a
/// request reads the store itself.
const RECORD_TTL: Duration = Duration::from_secs(30);

/// How long the background loop waits for one record to be read again before it moves on (the
/// record stays as it was, until [`RECORD_TTL`]).
const REFRESH_READ_LIMIT: Duration = Duration::from_secs(5);

/// What [`Tokens`] reads from and writes to the store; a seam so tests can slow the store down.
#[async_trait::async_trait]
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// A token by the digest of its credential.
    async fn token_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Which of `ids` are revoked.
    async fn tokens_revoked_among(&self, ids: &[TokenId]) -> Result<Vec<TokenId>, StoreError>;
    /// Records a token's last use.
    async fn token_touch(&self, id: &TokenId, at: Timestamp) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl TokenSource for Arc<dyn Store> {
    async fn token_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Store::token_by_digest(self.as_ref(), digest).await
    }
    async fn tokens_revoked_among(&self, ids: &[TokenId]) -> Result<Vec<TokenId>, StoreError> {
        Store::tokens_revoked_among(self.as_ref(), ids).await
    }
    async fn token_touch(&self, id: &TokenId, at: Timestamp) -> Result<(), StoreError> {
        Store::token_touch(self.as_ref(), id, at).await
    }
}

/// A cached token record.
#[derive(Debug)]
struct CachedToken {
    rec: Arc<TokenRecord>,
    digest: TokenDigest,
    /// When it was asked of the store (before the read, so a slow read does not make it look
    /// fresher than it is).
    fetched: Instant,
    /// Whether a request used it since it was read (the poller then reads it again rather than
    /// dropping it).
    used: AtomicBool,
}

impl CachedToken {
    fn new(rec: Arc<TokenRecord>, digest: TokenDigest, fetched: Instant) -> Self {
        Self {
            rec,
            digest,
            fetched,
            used: AtomicBool::new(false),
        }
    }
}

/// The token cache and the revocation state.
#[derive(Debug)]
pub(crate) struct Tokens<S = Arc<dyn Store>> {
    store: S,
    cache: RwLock<HashMap<[u8; 32], CachedToken>>,
    revoked: RwLock<HashSet<TokenId>>,
    /// When this was made: the origin of `last_poll_ok`, on the monotonic clock (a wall clock
    /// set back would make an old poll look fresh while the store is unreachable).
    epoch: Instant,
    /// Milliseconds from `epoch` to the last successful revocation poll.
    last_poll_ok: AtomicI64,
    poll: Duration,
    /// [`REFRESH_AFTER`] and [`RECORD_TTL`] (shorter in tests).
    refresh_after: Duration,
    record_ttl: Duration,
    touched: std::sync::Mutex<HashMap<TokenId, Timestamp>>,
}

impl<S: TokenSource> Tokens<S> {
    pub(crate) fn new(store: S, poll: Duration) -> Self {
        Self::with_ages(store, poll, REFRESH_AFTER, RECORD_TTL)
    }

    fn with_ages(store: S, poll: Duration, refresh_after: Duration, record_ttl: Duration) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashSet::new()),
            epoch: Instant::now(),
            last_poll_ok: AtomicI64::new(0),
            poll,
            refresh_after,
            record_ttl,
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
                    "{} credentials cannot make proxied requests",
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
        if let Some(c) = self.cache.read().await.get(digest.as_bytes())
            && c.fetched.elapsed() < self.record_ttl
        {
            c.used.store(true, Ordering::Relaxed);
            return Ok(Some(c.rec.clone()));
        }
        let asked = Instant::now();
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
            let cached = CachedToken::new(rec.clone(), digest.clone(), asked);
            cached.used.store(true, Ordering::Relaxed);
            self.cache.write().await.insert(*digest.as_bytes(), cached);
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
    pub(crate) async fn poll_once(&self) -> Result<(), StoreError> {
        // The answer is as fresh as the moment the question was asked, not when it came back.
        let asked = self.monotonic_ms();
        let cached = {
            let cache = self.cache.read().await;
            let mut ids: Vec<TokenId> = cache.values().map(|c| c.rec.id.clone()).collect();
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
                cache.retain(|_, c| c.rec.id != id);
                revoked.insert(id);
            }
        }
        self.last_poll_ok.store(asked, Ordering::Relaxed);
        Ok(())
    }

    /// Reads again (side by side) the records of tokens used since they were read, once they are
    /// `refresh_after` old, and drops the ones nobody used, so the cache holds the tokens in
    /// use and a request never waits for the store to read one it has seen. A record that cannot
    /// be read (or not within [`REFRESH_READ_LIMIT`]) stays as it was, until `record_ttl`; one
    /// that is gone from the store leaves the cache. A record revoked meanwhile stays refused:
    /// the revoked set is kept apart from the cache.
    pub(crate) async fn refresh_once(&self) {
        let stale = {
            let mut cache = self.cache.write().await;
            let mut stale = Vec::new();
            cache.retain(|_, c| {
                if c.fetched.elapsed() < self.refresh_after {
                    return true;
                }
                // Kept (it is still good until `record_ttl`) while it is read again.
                if c.used.swap(false, Ordering::Relaxed) {
                    stale.push(c.digest.clone());
                    return true;
                }
                false
            });
            stale
        };
        // Read side by side (the store's pool bounds how many at once), so a pass takes about
        // one read's time, not one per token in use.
        let reads = stale.into_iter().map(|digest| async move {
            let asked = Instant::now();
            let read =
                tokio::time::timeout(REFRESH_READ_LIMIT, self.store.token_by_digest(&digest)).await;
            (digest, asked, read)
        });
        for (digest, asked, read) in futures_util::future::join_all(reads).await {
            match read {
                Ok(Ok(Some(rec))) => {
                    let fresh = CachedToken::new(Arc::new(rec), digest.clone(), asked);
                    self.cache.write().await.insert(*digest.as_bytes(), fresh);
                }
                Ok(Ok(None)) => {
                    self.cache.write().await.remove(digest.as_bytes());
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read a cached token again; it is read at its next use once it is too old");
                }
                Err(_) => {
                    tracing::warn!(
                        limit = ?REFRESH_READ_LIMIT,
                        "reading a cached token again took too long; it is read at its next use once it is too old"
                    );
                }
            }
        }
    }

    /// Runs the revocation poller and, beside it, the loop that reads records again and flushes
    /// last-use times, until the process stops. The two run concurrently: however slow the
    /// second is, it does not delay a revocation poll.
    pub(crate) async fn run_poller(self: Arc<Self>) {
        let revocations = async {
            loop {
                tokio::time::sleep(self.poll).await;
                if let Err(e) = self.poll_once().await {
                    tracing::warn!(error = %e, "revocation poll failed");
                }
            }
        };
        let upkeep = async {
            let mut ticks: u32 = 0;
            loop {
                tokio::time::sleep(self.poll).await;
                self.refresh_once().await;
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(4) {
                    self.flush_touched().await;
                }
            }
        };
        tokio::join!(revocations, upkeep);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    use blastwall_core::EnvName;
    use blastwall_core::operation::OperationPattern;
    use blastwall_core::principal::PrincipalName;

    use super::*;

    /// A store of one token whose lookups can be made slow.
    struct SlowSource {
        rec: TokenRecord,
        /// How long a lookup takes, in milliseconds.
        delay_ms: AtomicU64,
        lookups: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenSource for Arc<SlowSource> {
        async fn token_by_digest(
            &self,
            digest: &TokenDigest,
        ) -> Result<Option<TokenRecord>, StoreError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Ok(self
                .rec
                .digest
                .as_ref()
                .filter(|d| d.ct_eq(digest))
                .map(|_| self.rec.clone()))
        }
        async fn tokens_revoked_among(&self, _ids: &[TokenId]) -> Result<Vec<TokenId>, StoreError> {
            Ok(Vec::new())
        }
        async fn token_touch(&self, _id: &TokenId, _at: Timestamp) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn source() -> (Arc<SlowSource>, String) {
        let env = EnvName::new("staging").unwrap();
        let cred = Credential::generate(CredentialKind::Agent, &env).unwrap();
        let now = Timestamp::now();
        let rec = TokenRecord {
            id: TokenId::generate().unwrap(),
            kind: CredentialKind::Agent,
            env,
            owner: PrincipalName::new("owner", "jer@pocketos.com").unwrap(),
            holder: PrincipalName::new("holder", "cursor-agent").unwrap(),
            scope: vec![OperationPattern::new("railway:domain.*").unwrap()],
            created_at: now,
            expires_at: now + jiff::SignedDuration::from_hours(1),
            revoked_at: None,
            last_used_at: None,
            digest: Some(cred.digest()),
        };
        let src = Arc::new(SlowSource {
            rec,
            delay_ms: AtomicU64::new(0),
            lookups: AtomicUsize::new(0),
        });
        (src, format!("Bearer {}", cred.expose()))
    }

    /// Issue 4: "a decision must never wait on the store on the hot path". A token in steady
    /// use is read again by the poller, so its requests never wait for a slow store, long past
    /// the age at which a cached record is no longer trusted.
    #[tokio::test]
    async fn a_token_in_use_is_read_again_in_the_background_not_by_its_requests() {
        let (src, header) = source();
        let tokens = Arc::new(Tokens::with_ages(
            src.clone(),
            Duration::from_millis(20),
            Duration::from_millis(100),
            Duration::from_millis(1000),
        ));
        tokens.poll_once().await.unwrap();
        // The first use reads the store (a cold cache).
        tokens.authenticate(Some(header.as_bytes())).await.unwrap();
        assert_eq!(src.lookups.load(Ordering::SeqCst), 1);
        src.delay_ms.store(300, Ordering::SeqCst);
        let poller = tokio::spawn(tokens.clone().run_poller());
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            let answer = tokio::time::timeout(
                Duration::from_millis(100),
                tokens.authenticate(Some(header.as_bytes())),
            )
            .await;
            assert!(
                matches!(answer, Ok(Ok(_))),
                "a request waited on the store after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        poller.abort();
        // The poller did read it again, more than once, in the background.
        assert!(src.lookups.load(Ordering::SeqCst) >= 3);
    }

    /// A token nobody uses leaves the cache once it is due to be read again, rather than being
    /// read again for ever.
    #[tokio::test]
    async fn a_token_not_in_use_leaves_the_cache() {
        let (src, header) = source();
        let tokens = Tokens::with_ages(
            src.clone(),
            Duration::from_millis(20),
            Duration::from_millis(50),
            Duration::from_millis(1000),
        );
        tokens.authenticate(Some(header.as_bytes())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Used since it was read: read again, and kept.
        tokens.refresh_once().await;
        assert_eq!(src.lookups.load(Ordering::SeqCst), 2);
        assert_eq!(tokens.cache.read().await.len(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Not used since: dropped, not read.
        tokens.refresh_once().await;
        assert_eq!(src.lookups.load(Ordering::SeqCst), 2);
        assert!(tokens.cache.read().await.is_empty());
        // Its next use reads it again.
        tokens.authenticate(Some(header.as_bytes())).await.unwrap();
        assert_eq!(src.lookups.load(Ordering::SeqCst), 3);
    }

    /// A read of a record that hangs does not hold up the revocation poll: requests go on being
    /// answered (the gateway would refuse them all once revocations were a few polls old).
    #[tokio::test]
    async fn a_slow_record_read_does_not_delay_the_revocation_poll() {
        let (src, header) = source();
        let tokens = Arc::new(Tokens::with_ages(
            src.clone(),
            Duration::from_millis(20),
            Duration::from_millis(50),
            Duration::from_secs(60),
        ));
        tokens.poll_once().await.unwrap();
        tokens.authenticate(Some(header.as_bytes())).await.unwrap();
        // Each read again takes longer than revocations may be old (4 polls + 2 s).
        src.delay_ms.store(4000, Ordering::SeqCst);
        let poller = tokio::spawn(tokens.clone().run_poller());
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(3000) {
            // (The old poller refused every request from about 2.1 s on; a loaded machine may
            // slow an answer, but not for half a second.)
            let answer = tokio::time::timeout(
                Duration::from_millis(500),
                tokens.authenticate(Some(header.as_bytes())),
            )
            .await;
            assert!(
                matches!(answer, Ok(Ok(_))),
                "refused or waited after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        poller.abort();
        // The record was being read again meanwhile.
        assert!(src.lookups.load(Ordering::SeqCst) >= 2);
    }
}
