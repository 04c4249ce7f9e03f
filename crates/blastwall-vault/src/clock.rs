//! The vault's trusted clock: retention never ends early because the wall clock jumped.
//!
//! Two readings are kept apart. *Receipt* time (from which `retain_until` is computed) is the later
//! of the wall clock and the high-water mark, so a clock set back cannot give a new backup a
//! shorter lock than one already seen. *Expiry* time (against which `retain_until` is checked)
//! advances only as fast as the monotonic clock since the last persisted high-water mark, and never
//! past the wall clock: a wall clock jumped a year forward expires nothing. A vault that was down
//! keeps its backups for longer, never for shorter.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::error::VaultError;
use crate::objects::write_atomic;

/// The high-water-mark clock, persisted in a small file.
#[derive(Debug)]
pub struct TrustedClock {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// The largest expiry time handed out (and persisted).
    hwm: Timestamp,
    /// The high-water mark when `base` was taken.
    base_hwm: Timestamp,
    /// The monotonic instant matching `base_hwm`.
    base: Instant,
}

impl TrustedClock {
    /// Opens the clock stored at `path`. When there is none yet (a new vault), the wall clock
    /// now is its start, and it is written at once: every later start reads it, so a wall clock
    /// jumped forward before a restart does not become the clock expiry is judged by.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        let hwm = match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse::<Timestamp>()
                .map_err(|e| VaultError::Corrupt {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let now = crate::now();
                write_atomic(path, format!("{now}\n").as_bytes())?;
                now
            }
            Err(e) => return Err(VaultError::io("read", path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                hwm,
                base_hwm: hwm,
                base: Instant::now(),
            }),
        })
    }

    /// The time a backup is received at: the latest of the wall clock, the high-water mark, and
    /// the high-water mark at start plus the monotonic time since (so a wall clock set back
    /// does not freeze receipts at the mark and shorten the locks of what arrives meanwhile).
    pub fn receipt(&self) -> Timestamp {
        let s = *self.lock();
        receipt_time(s.hwm, s.base_hwm, s.base.elapsed(), crate::now())
    }

    /// Advances and persists the high-water mark (what [`TrustedClock::expiry_now`] does), so
    /// that a restart loses at most the time since the last call: `vault serve` calls it every
    /// minute.
    pub fn persist(&self) -> Result<(), VaultError> {
        self.expiry_now().map(|_| ())
    }

    /// The time expiry is judged at; advances the persisted high-water mark.
    pub fn expiry_now(&self) -> Result<Timestamp, VaultError> {
        let now = {
            let mut s = self.lock();
            let t = expiry_time(s.hwm, s.base_hwm, s.base.elapsed(), crate::now());
            s.hwm = t;
            t
        };
        write_atomic(&self.path, format!("{now}\n").as_bytes())?;
        Ok(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `base_hwm + elapsed`: where the mark would be by the monotonic clock alone.
fn by_monotonic(base_hwm: Timestamp, elapsed: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(elapsed)
        .ok()
        .and_then(|d| base_hwm.checked_add(d).ok())
        .unwrap_or(base_hwm)
}

/// `max(wall, hwm, base_hwm + elapsed)`.
fn receipt_time(
    hwm: Timestamp,
    base_hwm: Timestamp,
    elapsed: Duration,
    wall: Timestamp,
) -> Timestamp {
    wall.max(hwm).max(by_monotonic(base_hwm, elapsed))
}

/// `max(hwm, min(wall, base_hwm + elapsed))`.
fn expiry_time(
    hwm: Timestamp,
    base_hwm: Timestamp,
    elapsed: Duration,
    wall: Timestamp,
) -> Timestamp {
    hwm.max(wall.min(by_monotonic(base_hwm, elapsed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_jump_expires_nothing_early() {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let year_later: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let t = expiry_time(base, base, Duration::from_secs(60), year_later);
        assert_eq!(t, "2026-01-01T00:01:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn a_backward_jump_does_not_go_back() {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let earlier: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            expiry_time(base, base, Duration::from_secs(5), earlier),
            base
        );
    }

    #[test]
    fn receipts_move_on_when_the_wall_clock_is_set_back() {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let earlier: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        // An hour after start, with the wall clock set half a year back: an hour after start.
        assert_eq!(
            receipt_time(base, base, Duration::from_secs(3600), earlier),
            "2026-01-01T01:00:00Z".parse::<Timestamp>().unwrap()
        );
        // A wall clock ahead wins (a later receipt only lengthens the lock).
        let later: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            receipt_time(base, base, Duration::from_secs(5), later),
            later
        );
    }

    #[test]
    fn a_new_clock_is_written_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clock");
        let c = TrustedClock::open(&p).unwrap();
        let written: Timestamp = std::fs::read_to_string(&p).unwrap().trim().parse().unwrap();
        assert!(written <= c.receipt());
        c.persist().unwrap();
        let again: Timestamp = std::fs::read_to_string(&p).unwrap().trim().parse().unwrap();
        assert!(again >= written);
    }

    #[test]
    fn persisted_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clock");
        let c = TrustedClock::open(&p).unwrap();
        let t = c.expiry_now().unwrap();
        let again = TrustedClock::open(&p).unwrap();
        assert!(again.expiry_now().unwrap() >= t);
        assert!(again.receipt() >= t);
    }
}
