//! How many refusals of one actor an audit log takes one by one.
//!
//! An audit log that appends an entry for every refused request lets anyone who can reach the
//! server grow it at the server's request rate: a gateway answering 20,000 unauthenticated
//! requests a second appends about 12 MB a second, fills its disk, and then (failing closed,
//! since it cannot record what it does) stops serving everyone. A [`Throttle`] lets the first
//! refusals of each actor in a window through, one entry each, and counts the rest; the server
//! appends the count as one entry per window ([`Throttle::take_suppressed`]). The log still shows
//! that the refusals happened, how many, and when; it no longer grows with their rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key refusals from actors beyond [`MAX_ACTORS`] are counted under.
pub const OVERFLOW_ACTOR: &str = "*";

/// Most actors followed at once; more share [`OVERFLOW_ACTOR`]'s budget.
pub const MAX_ACTORS: usize = 10_000;

/// A budget of individually recorded refusals per actor per window.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    per_window: u32,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// Refusals counted but not written one by one, for one actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// The actor (or [`OVERFLOW_ACTOR`]).
    pub actor: String,
    /// How many.
    pub count: u64,
}

impl Throttle {
    /// At most `per_window` refusals per actor per `window` are written one by one.
    pub fn new(window: Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a refusal of `actor` at `now` is written as an entry of its own; when it is not,
    /// it is counted for [`Throttle::take_suppressed`].
    pub fn admit(&self, actor: &str, now: Instant) -> bool {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if slots.contains_key(actor) || slots.len() < MAX_ACTORS {
            actor
        } else {
            OVERFLOW_ACTOR
        };
        // No new key (an allocation) for an actor already followed: the common case.
        if !slots.contains_key(key) {
            slots.insert(
                key.to_owned(),
                Slot {
                    started: now,
                    written: 0,
                    suppressed: 0,
                },
            );
        }
        // INVARIANT: `key` was inserted just above when it was missing.
        let Some(slot) = slots.get_mut(key) else {
            return false;
        };
        if now.saturating_duration_since(slot.started) >= self.window {
            slot.started = now;
            slot.written = 0;
        }
        if slot.written < self.per_window {
            slot.written += 1;
            true
        } else {
            slot.suppressed += 1;
            false
        }
    }

    /// Counts `s` again, for the next [`Throttle::take_suppressed`]: its entry could not be
    /// appended (a full disk), and the count must not be lost with it.
    pub fn give_back(&self, s: Suppressed, now: Instant) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if slots.contains_key(&s.actor) || slots.len() < MAX_ACTORS {
            s.actor
        } else {
            OVERFLOW_ACTOR.to_owned()
        };
        let slot = slots.entry(key).or_insert(Slot {
            started: now,
            written: 0,
            suppressed: 0,
        });
        slot.suppressed = slot.suppressed.saturating_add(s.count);
    }

    /// The refusals counted since the last call, by actor; forgets actors idle for two windows.
    /// Call it about once a window, and once at shutdown, and append what it returns.
    pub fn take_suppressed(&self, now: Instant) -> Vec<Suppressed> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<Suppressed> = slots
            .iter_mut()
            .filter(|(_, s)| s.suppressed > 0)
            .map(|(actor, s)| Suppressed {
                actor: actor.clone(),
                count: std::mem::take(&mut s.suppressed),
            })
            .collect();
        let keep = self.window.saturating_mul(2);
        slots.retain(|_, s| now.saturating_duration_since(s.started) < keep);
        out.sort_by(|a, b| a.actor.cmp(&b.actor));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_given_back_is_taken_again() {
        let t = Throttle::new(Duration::from_secs(60), 1);
        let t0 = Instant::now();
        assert!(t.admit("a", t0));
        assert!(!t.admit("a", t0));
        let taken = t.take_suppressed(t0);
        assert_eq!(taken.len(), 1);
        for s in taken {
            t.give_back(s, t0);
        }
        assert!(!t.admit("a", t0));
        assert_eq!(
            t.take_suppressed(t0),
            [Suppressed {
                actor: "a".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn the_first_of_each_window_are_written_the_rest_counted() {
        let t = Throttle::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let admitted: Vec<bool> = (0..5).map(|_| t.admit("anonymous", t0)).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        // Another actor has its own budget.
        assert!(t.admit("writer", t0));
        assert_eq!(
            t.take_suppressed(t0),
            [Suppressed {
                actor: "anonymous".into(),
                count: 2
            }]
        );
        // Taken once.
        assert!(t.take_suppressed(t0).is_empty());
        // Still the same window: counted.
        assert!(!t.admit("anonymous", t0 + Duration::from_secs(59)));
        // A new window: written again.
        assert!(t.admit("anonymous", t0 + Duration::from_secs(60)));
        assert_eq!(t.take_suppressed(t0 + Duration::from_secs(60))[0].count, 1);
    }

    #[test]
    fn actors_beyond_the_cap_share_one_budget() {
        let t = Throttle::new(Duration::from_secs(60), 1);
        let t0 = Instant::now();
        for i in 0..MAX_ACTORS {
            assert!(t.admit(&format!("a{i}"), t0));
        }
        assert!(t.admit("late-1", t0));
        assert!(!t.admit("late-2", t0));
        assert_eq!(
            t.take_suppressed(t0),
            [Suppressed {
                actor: OVERFLOW_ACTOR.into(),
                count: 1
            }]
        );
        // Idle actors are forgotten after two windows, freeing their places.
        assert!(t.take_suppressed(t0 + Duration::from_secs(120)).is_empty());
        assert!(t.admit("late-2", t0 + Duration::from_secs(120)));
    }
}
