//! A bounded memo of recent GraphQL classifications, one per profile: agents send the same
//! documents again and again, and a repeated request costs a digest and a map lookup.
//!
//! The key is a digest of everything the answer depends on besides the profile and the headers
//! checked before the memo is asked (the method, the target, the `content-type`, the body): the
//! request's [`crate::RequestDigest`] when the gateway classifies it (`classify_request`), or,
//! under another domain tag, a digest of the upper-cased method and normalized target
//! (`classify`). Requests that may be answered differently never share an entry (the same
//! request through both functions takes two), and the memo holds no request text. Refusals are
//! remembered too.
//!
//! Two generations bound it: entries go into the young map; when that is full it becomes the
//! old one (dropping the previous old map), and a hit in the old map moves the entry back. So at
//! most `2 × GENERATION` entries are kept, and recently used ones survive (an approximation of
//! LRU without bookkeeping on every hit).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::classify::Classification;
use crate::error::ClassifyError;

/// Entries per generation.
const GENERATION: usize = 2048;

/// A remembered answer.
pub(crate) type Answer = Arc<Result<Classification, ClassifyError>>;

/// The digest of a request.
pub(crate) type Key = [u8; 32];

/// Recent answers of one profile. Cloning a profile shares its memo (its rules are the same).
#[derive(Default)]
pub(crate) struct Memo {
    maps: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<Key, Answer>,
    old: HashMap<Key, Answer>,
}

impl Memo {
    /// The remembered answer for `key`, if any.
    pub(crate) fn get(&self, key: &Key) -> Option<Answer> {
        let mut maps = self.maps.lock().ok()?;
        if let Some(answer) = maps.young.get(key) {
            return Some(Arc::clone(answer));
        }
        let answer = maps.old.remove(key)?;
        maps.insert(*key, Arc::clone(&answer));
        Some(answer)
    }

    /// Remembers an answer.
    pub(crate) fn insert(&self, key: Key, answer: Answer) {
        if let Ok(mut maps) = self.maps.lock() {
            maps.insert(key, answer);
        }
    }

    /// How many answers are kept.
    fn len(&self) -> usize {
        self.maps
            .lock()
            .map(|m| m.young.len() + m.old.len())
            .unwrap_or_default()
    }
}

impl Generations {
    fn insert(&mut self, key: Key, answer: Answer) {
        if self.young.len() >= GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, answer);
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use blastwall_core::operation::OperationClass;

    use super::*;

    fn key(target: &str) -> Key {
        *crate::RequestDigest::of("", "POST", target, [], b"").as_bytes()
    }

    fn answer(target: &str) -> Answer {
        Arc::new(Ok(Classification {
            ops: Vec::new(),
            strictest: OperationClass::Read,
            method: "POST".into(),
            target: target.into(),
        }))
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let memo = Memo::default();
        let kept = key("/kept");
        memo.insert(kept, answer("/kept"));
        for i in 0..5 * GENERATION {
            let k = key(&format!("/{i}"));
            memo.insert(k, answer("/"));
            if i % (GENERATION / 2) == 0 {
                assert!(memo.get(&kept).is_some(), "{i}");
            }
            assert!(memo.len() <= 2 * GENERATION);
        }
        assert!(memo.get(&kept).is_some());
        let first = key("/0");
        assert!(memo.get(&first).is_none());
    }
}
