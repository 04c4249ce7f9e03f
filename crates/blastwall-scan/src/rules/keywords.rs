//! The keyword prefilter's search: every occurrence of every keyword in a buffer, found by one
//! Aho-Corasick DFA walked over four parts of the buffer at once.
//!
//! A DFA walk is a chain of dependent loads (the next state is read from a row chosen by the
//! current one), so a single walk waits on the cache at every byte whatever the number of
//! keywords: `aho-corasick`'s own search ran at about 2.2 ns per byte on the benchmark corpus.
//! Four independent walks over four parts of the buffer, interleaved in one loop, keep four loads
//! in flight, and ran at about 0.9 ns per byte on the same text, with the same matches. The DFA
//! is the crate's (built and checked by it); only the loop that drives it is ours, through the
//! crate's public [`Automaton`] interface.
//!
//! Each part's walk starts `longest keyword − 1` bytes before the part, so that a keyword that
//! straddles a boundary is seen whole, and reports only the keywords that *end* inside its own
//! part, so that each occurrence is reported once.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};

/// Walks interleaved in one loop.
const LANES: usize = 4;

/// A buffer shorter than this (or than eight times the longest keyword) is walked in one lane:
/// four lanes would spend most of their bytes re-reading each other's overlaps.
const MIN_INTERLEAVED: usize = 256;

/// Every keyword, ASCII case-insensitively, in one DFA.
#[derive(Debug, Clone)]
pub(super) struct KeywordSearcher {
    dfa: DFA,
    /// The unanchored start state.
    start: StateID,
}

impl KeywordSearcher {
    /// A searcher for `keywords` (matched ASCII case-insensitively); an error names what the
    /// automaton builder refused.
    pub(super) fn new(keywords: &[String]) -> Result<Self, String> {
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(keywords)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        Ok(Self { dfa, start })
    }

    /// Appends `(start, keyword index)` for every occurrence of every keyword in `text`,
    /// overlapping ones included, in no particular order.
    pub(super) fn find_all(&self, text: &[u8], out: &mut Vec<(usize, usize)>) {
        let overlap = self.dfa.max_pattern_len().saturating_sub(1);
        if text.len() < MIN_INTERLEAVED.max(2 * LANES * overlap.max(1)) {
            self.walk(self.start, text, 0, 0, out);
            return;
        }
        let part = text.len().div_ceil(LANES);
        // Lane i reports the keywords ending in (bounds[i], bounds[i + 1]] and walks from
        // `from[i]`, early enough to see the longest keyword ending just after bounds[i].
        let bounds: [usize; LANES + 1] = std::array::from_fn(|i| (i * part).min(text.len()));
        let from: [usize; LANES] = std::array::from_fn(|i| bounds[i].saturating_sub(overlap));
        let walk_len = |i: usize| bounds[i + 1].saturating_sub(from[i]);
        let common = (0..LANES).map(walk_len).min().unwrap_or(0);
        let lane = |i: usize| text.get(from[i]..from[i] + common).unwrap_or(&[]);
        let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
        let mut state = [self.start; LANES];
        let next = |s: StateID, b: u8| self.dfa.next_state(Anchored::No, s, b);
        for (j, (((&b0, &b1), &b2), &b3)) in l0.iter().zip(l1).zip(l2).zip(l3).enumerate() {
            state = [
                next(state[0], b0),
                next(state[1], b1),
                next(state[2], b2),
                next(state[3], b3),
            ];
            // Matches are rare: one test for all four lanes.
            if state.iter().any(|&s| self.dfa.is_match(s)) {
                for (i, &s) in state.iter().enumerate() {
                    self.report(s, from[i] + j + 1, bounds[i], out);
                }
            }
        }
        for (i, &s) in state.iter().enumerate() {
            let rest = text.get(from[i] + common..bounds[i + 1]).unwrap_or(&[]);
            self.walk(s, rest, from[i] + common, bounds[i], out);
        }
    }

    /// Walks `bytes` (which sit at `offset` in the buffer) from `state`, reporting the keywords
    /// that end after `after`.
    fn walk(
        &self,
        mut state: StateID,
        bytes: &[u8],
        offset: usize,
        after: usize,
        out: &mut Vec<(usize, usize)>,
    ) {
        for (j, &b) in bytes.iter().enumerate() {
            state = self.dfa.next_state(Anchored::No, state, b);
            if self.dfa.is_match(state) {
                self.report(state, offset + j + 1, after, out);
            }
        }
    }

    /// The keywords of match state `state` reached at `end`, unless they end at or before
    /// `after` (another lane's).
    fn report(&self, state: StateID, end: usize, after: usize, out: &mut Vec<(usize, usize)>) {
        if end <= after || !self.dfa.is_match(state) {
            return;
        }
        for k in 0..self.dfa.match_len(state) {
            let pattern = self.dfa.match_pattern(state, k);
            let len = self.dfa.pattern_len(pattern);
            out.push((end.saturating_sub(len), pattern.as_usize()));
        }
    }
}

#[cfg(test)]
mod tests {
    use aho_corasick::AhoCorasick;
    use proptest::prelude::*;

    use super::*;

    const KEYWORDS: [&str; 8] = [
        "key",
        "api_key",
        "token",
        "ghp_",
        "password",
        "db_password",
        "-----begin",
        "sk-",
    ];

    fn keywords() -> Vec<String> {
        KEYWORDS.iter().map(|k| (*k).to_owned()).collect()
    }

    /// The crate's own overlapping search: the definition the lanes must reproduce.
    fn reference(keywords: &[String], text: &[u8]) -> Vec<(usize, usize)> {
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(keywords)
            .unwrap();
        let mut all: Vec<(usize, usize)> = ac
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.pattern().as_usize()))
            .collect();
        all.sort_unstable();
        all
    }

    fn found(searcher: &KeywordSearcher, text: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        searcher.find_all(text, &mut out);
        out.sort_unstable();
        out
    }

    /// Text made of keywords (in any case, whole or cut) and filler, so that keywords sit on
    /// every lane boundary sooner or later.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            (0..KEYWORDS.len(), any::<bool>(), 1usize..12).prop_map(|(i, upper, cut)| {
                let k = KEYWORDS[i];
                let k = if upper {
                    k.to_ascii_uppercase()
                } else {
                    k.to_owned()
                };
                let mut bytes = k.into_bytes();
                if cut < 3 {
                    bytes.truncate(bytes.len().saturating_sub(cut));
                }
                bytes
            }),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(prop::sample::select(b"ab_= \n-".to_vec()), 0..20),
        ];
        proptest::collection::vec(piece, 0..120).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn the_lanes_find_exactly_what_the_crates_search_finds(text in text()) {
            let kw = keywords();
            let searcher = KeywordSearcher::new(&kw).unwrap();
            prop_assert_eq!(found(&searcher, &text), reference(&kw, &text));
        }
    }

    #[test]
    fn a_keyword_on_every_lane_boundary_is_found_once() {
        let kw = keywords();
        let searcher = KeywordSearcher::new(&kw).unwrap();
        for len in [256, 257, 1000, 1023, 4096, 4099] {
            let part = usize::div_ceil(len, LANES);
            for shift in 0..12 {
                let mut text = vec![b'.'; len];
                for i in 1..LANES {
                    // "db_password" ending at, across and starting at each boundary.
                    let at = (i * part + shift).saturating_sub(11);
                    text[at..at + 11].copy_from_slice(b"DB_Password");
                }
                assert_eq!(
                    found(&searcher, &text),
                    reference(&kw, &text),
                    "len {len} shift {shift}"
                );
            }
        }
    }

    #[test]
    fn short_and_empty_buffers_are_walked_in_one_lane() {
        let kw = keywords();
        let searcher = KeywordSearcher::new(&kw).unwrap();
        assert!(found(&searcher, b"").is_empty());
        assert_eq!(found(&searcher, b"ghp_"), vec![(0, 3)]);
        assert_eq!(found(&searcher, b"x api_KEY"), reference(&kw, b"x api_KEY"));
    }
}
