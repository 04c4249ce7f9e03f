//! Fingerprint candidates of a buffer, found from byte-class bitmaps.
//!
//! A candidate is a substring that could be a whole secret: a whitespace- and quote-separated
//! field; the value after the first `=` or `:` of a field; the password of a URL's userinfo; a
//! run of token characters, and a run of word characters inside a longer token run; a quoted
//! string; and the value of an assignment up to the end of its line. Each is a candidate both
//! trimmed of the punctuation around values and as it is (a secret may end with `;`). Only
//! candidates of a length some wall lists (or holding a `%` escape, whose decoded form may be)
//! are kept.
//!
//! Most of a buffer holds no candidate at all: the runs of source code are short identifiers. So
//! the buffer is first classified sixteen bytes at a time with SIMD compares (SSE2, part of the
//! x86-64 baseline; `wide` falls back to scalar code elsewhere) into bitmaps of field, token and
//! word bytes, line breaks, separators and quotes; runs at least as long as the shortest listed
//! secret are then found with shifts and masks over those bitmaps, without a branch per byte, and
//! only they, and the lines holding a separator or a quote, are looked at byte by byte. The result
//! is, span for span, what the byte-by-byte definition in the tests below gives, which a
//! property test checks. The runs of base64 characters worth decoding are found the same way.

use wide::{i8x16, u8x16};

use super::LengthSet;
use crate::fingerprint::{MAX_SECRET_LEN, MIN_SECRET_LEN};

/// Bytes classified per segment: a segment ends at a line break, and its bitmaps (six words per
/// 64 bytes) stay in the core's cache.
const SEGMENT: usize = 32 * 1024;

/// Reusable bitmaps, one bit per byte of the segment being classified.
#[derive(Default)]
pub(super) struct Bitmaps {
    /// Field bytes: neither whitespace nor a quote (`"`, `'`, `` ` ``).
    field: Vec<u64>,
    /// Token bytes: word bytes and `+ / = . ~`.
    token: Vec<u64>,
    /// Word bytes: ASCII letters and digits, `_` and `-`.
    word: Vec<u64>,
    /// `\n`.
    newline: Vec<u64>,
    /// `=` and `:`.
    sep: Vec<u64>,
    /// `"` and `'`.
    quote: Vec<u64>,
    /// `%`.
    percent: Vec<u64>,
    /// Base64 bytes (both alphabets, and `=`).
    base64: Vec<u64>,
    /// Scratch for the run search.
    tmp: Vec<u64>,
    /// Spans of the current segment, before sorting.
    spans: Vec<(usize, usize)>,
}

/// Appends to `out` the fingerprint candidates of `text` of a length in `lengths` (or holding a
/// `%`), as `(start, end)` offsets in `text`. The same span may come more than once (a field that
/// is also a token run, say): the caller's cache of tested strings makes a repeat cheap, and
/// sorting them would cost more.
pub(super) fn candidates(
    text: &[u8],
    lengths: &LengthSet,
    maps: &mut Bitmaps,
    out: &mut Vec<(usize, usize)>,
) {
    // No candidate is shorter than the shortest listed length, nor than MIN_SECRET_LEN.
    let min = lengths.min().max(MIN_SECRET_LEN);
    if min > MAX_SECRET_LEN || text.len() < min {
        return;
    }
    let mut start = 0;
    while start < text.len() {
        let end = segment_end(text, start);
        let seg = text.get(start..end).unwrap_or(&[]);
        maps.spans.clear();
        classify(seg, maps);
        segment_spans(seg, lengths, min, maps);
        out.extend(maps.spans.iter().map(|&(s, e)| (start + s, start + e)));
        start = end;
    }
}

/// Appends to `out` the maximal runs of base64 characters (standard or URL-safe alphabet, and
/// `=`) of `text` that are at least `min` long, in order, from the same bitmaps (one bit per
/// byte, found sixteen bytes per compare) rather than byte by byte.
pub(super) fn base64_runs(
    text: &[u8],
    min: usize,
    maps: &mut Bitmaps,
    out: &mut Vec<(usize, usize)>,
) {
    let min = min.max(1);
    if text.len() < min {
        return;
    }
    // A run never holds a line break, so segments cut at line breaks split none.
    let mut start = 0;
    while start < text.len() {
        let end = segment_end(text, start);
        let seg = text.get(start..end).unwrap_or(&[]);
        let words = seg.len().div_ceil(64);
        maps.base64.clear();
        maps.base64.resize(words, 0);
        for_blocks(seg, |j, quarters| {
            let mut bits = 0u64;
            for (k, quarter) in quarters.into_iter().enumerate() {
                bits |= u64::from(base64_16(quarter)) << (k * 16);
            }
            if let Some(w) = maps.base64.get_mut(j) {
                *w = bits;
            }
        });
        long_runs(&maps.base64, seg.len(), min, &mut maps.tmp, |s, e| {
            out.push((start + s, start + e));
        });
        start = end;
    }
}

/// [`candidates`] and [`base64_runs`] (runs at least `base64_min` long) in one pass: each
/// segment is classified once for both.
pub(super) fn candidates_and_base64_runs(
    text: &[u8],
    lengths: &LengthSet,
    base64_min: usize,
    maps: &mut Bitmaps,
    spans: &mut Vec<(usize, usize)>,
    runs: &mut Vec<(usize, usize)>,
) {
    let min = lengths.min().max(MIN_SECRET_LEN);
    let base64_min = base64_min.max(1);
    let mut start = 0;
    while start < text.len() {
        let end = segment_end(text, start);
        let seg = text.get(start..end).unwrap_or(&[]);
        classify(seg, maps);
        // A candidate never crosses a line break, so never a segment's end.
        if min <= MAX_SECRET_LEN && seg.len() >= min {
            maps.spans.clear();
            segment_spans(seg, lengths, min, maps);
            spans.extend(maps.spans.iter().map(|&(s, e)| (start + s, start + e)));
        }
        long_runs(
            &maps.base64,
            seg.len(),
            base64_min,
            &mut maps.tmp,
            |s, e| {
                runs.push((start + s, start + e));
            },
        );
        start = end;
    }
}

/// The end of the segment starting at `start`: just after the last line break within
/// [`SEGMENT`] bytes, or, for a longer line, after its own break (or the end of `text`).
fn segment_end(text: &[u8], start: usize) -> usize {
    let limit = start.saturating_add(SEGMENT);
    if limit >= text.len() {
        return text.len();
    }
    let window = text.get(start..limit).unwrap_or(&[]);
    match memchr::memrchr(b'\n', window) {
        Some(p) => start + p + 1,
        None => memchr::memchr(b'\n', text.get(limit..).unwrap_or(&[]))
            .map_or(text.len(), |p| limit + p + 1),
    }
}

/// Pushes the candidates of one segment (a whole number of lines), classified into `maps`
/// already, to `maps.spans`.
fn segment_spans(seg: &[u8], lengths: &LengthSet, min: usize, maps: &mut Bitmaps) {
    let Bitmaps {
        field,
        token,
        word,
        newline,
        sep,
        quote,
        percent,
        tmp,
        spans,
        ..
    } = maps;
    let seg = Classified {
        text: seg,
        sep,
        quote,
        percent,
    };
    // Fields long enough to hold a listed secret: the field itself, the value after its first
    // separator, and a URL password.
    long_runs(field, seg.text.len(), min, tmp, |fs, fe| {
        field_candidates(&seg, fs, fe, lengths, spans);
    });
    // Token runs, and the word runs of a token run that holds other bytes too (a word run that
    // is a whole token run is that run).
    long_runs(token, seg.text.len(), min, tmp, |s, e| {
        push_run(s, e, lengths, spans);
    });
    long_runs(word, seg.text.len(), min, tmp, |s, e| {
        let inside_longer = s.checked_sub(1).is_some_and(|p| bit(token, p)) || bit(token, e);
        if inside_longer {
            push_run(s, e, lengths, spans);
        }
    });
    // Per line: quoted strings, and the value of an assignment to the end of the line.
    let len = seg.text.len();
    let mut line_start = 0;
    let mut line_ends = Ones::new(newline, len).chain(std::iter::once(len));
    while line_start < len {
        let Some(brk) = line_ends.next() else {
            break;
        };
        let mut end = brk;
        if end > line_start && seg.text.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        if end - line_start >= min {
            line_candidates(&seg, line_start, end, lengths, spans);
        }
        line_start = brk + 1;
    }
}

/// A segment and the bitmaps the per-field and per-line passes look up.
struct Classified<'a> {
    text: &'a [u8],
    sep: &'a [u64],
    quote: &'a [u64],
    percent: &'a [u64],
}

/// The candidates of line `seg[start..end]` that may hold whitespace: quoted strings, and the
/// value after the line's first separator.
fn line_candidates(
    seg: &Classified<'_>,
    start: usize,
    end: usize,
    lengths: &LengthSet,
    out: &mut Vec<(usize, usize)>,
) {
    let text = seg.text;
    // Quoted strings: from each opening quote to the next quote of the same kind; an opening
    // quote that is never closed is skipped.
    let mut i = start;
    while let Some(open) = first_one(seg.quote, i, end) {
        let kind = text.get(open).copied();
        let mut close = first_one(seg.quote, open + 1, end);
        while let Some(c) = close
            && text.get(c).copied() != kind
        {
            close = first_one(seg.quote, c + 1, end);
        }
        match close {
            Some(c) => {
                push_span(seg, open + 1, c, lengths, out);
                i = c + 1;
            }
            None => i = open + 1,
        }
    }
    if let Some(p) = first_one(seg.sep, start, end) {
        let mut s = p + 1;
        while s < end
            && text
                .get(s)
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\'')
        {
            s += 1;
        }
        // The value trimmed of whitespace and quotes, then also of `;` and `,`: a secret may
        // end with either (`PASSWORD=two words;`), so both are candidates.
        let mut e = end;
        while e > s
            && text
                .get(e - 1)
                .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\''))
        {
            e -= 1;
        }
        let quoted_end = e;
        while e > s
            && text
                .get(e - 1)
                .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b';' | b','))
        {
            e -= 1;
        }
        push_span(seg, s, e, lengths, out);
        if quoted_end != e && lengths.untrimmed() {
            push_span(seg, s, quoted_end, lengths, out);
        }
    }
}

/// The candidates of the field `seg[fs..fe]`: itself, the value after its first `=` or `:`, and
/// the password of a URL's userinfo.
fn field_candidates(
    seg: &Classified<'_>,
    fs: usize,
    fe: usize,
    lengths: &LengthSet,
    out: &mut Vec<(usize, usize)>,
) {
    push_span(seg, fs, fe, lengths, out);
    let Some(p) = first_one(seg.sep, fs, fe) else {
        return;
    };
    push_span(seg, p + 1, fe, lengths, out);
    // The first `://` at or after the separator: a `:` (a separator bit) followed by `//`.
    let mut c = Some(p);
    while let Some(i) = c {
        if i + 3 <= fe && seg.text.get(i..i + 3) == Some(b"://") {
            break;
        }
        c = first_one(seg.sep, i + 1, fe);
    }
    let Some(c) = c else {
        return;
    };
    let after = c + 3;
    let rest = seg.text.get(after..fe).unwrap_or(&[]);
    if let Some(at) = memchr::memchr(b'@', rest) {
        let userinfo = rest.get(..at).unwrap_or(&[]);
        if let Some(colon) = memchr::memchr(b':', userinfo) {
            push_span(seg, after + colon + 1, after + at, lengths, out);
        }
    }
}

/// Pushes the token or word run `s..e` if its length is one a wall lists. A run holds no byte
/// [`push_span`] trims and no `%`, so it is [`push_span`] without either.
fn push_run(s: usize, e: usize, lengths: &LengthSet, out: &mut Vec<(usize, usize)>) {
    let len = e - s;
    if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len)
        && lengths.contains(len)
        && out.last() != Some(&(s, e))
    {
        out.push((s, e));
    }
}

/// Pushes `seg.text[s..e]` trimmed of punctuation that opens, closes or separates values, and
/// untrimmed when that differs (a secret may itself start or end with such a byte:
/// `Xk9#mQ2$vL7&pR4;`), each if its length is one a wall lists (or it holds a `%` escape, whose
/// decoded form may be).
fn push_span(
    seg: &Classified<'_>,
    s: usize,
    e: usize,
    lengths: &LengthSet,
    out: &mut Vec<(usize, usize)>,
) {
    let text = seg.text;
    // Trimming only shortens.
    if e.saturating_sub(s) < lengths.min().max(MIN_SECRET_LEN) {
        return;
    }
    let (raw_s, raw_e) = (s, e);
    let mut s = s;
    let mut e = e;
    while s < e && matches!(text.get(s), Some(b'(' | b'[' | b'{' | b'<')) {
        s += 1;
    }
    while e > s
        && matches!(
            text.get(e - 1),
            Some(b',' | b';' | b')' | b']' | b'}' | b'>')
        )
    {
        e -= 1;
    }
    push_one(seg, s, e, lengths, out);
    if (s, e) != (raw_s, raw_e) && lengths.untrimmed() {
        push_one(seg, raw_s, raw_e, lengths, out);
    }
}

/// Pushes `seg.text[s..e]` as it is, if its length is one a wall lists (or it holds a `%`).
fn push_one(
    seg: &Classified<'_>,
    s: usize,
    e: usize,
    lengths: &LengthSet,
    out: &mut Vec<(usize, usize)>,
) {
    let len = e - s;
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        return;
    }
    // The same span often comes as a field and a token run in a row.
    if out.last() == Some(&(s, e)) {
        return;
    }
    if lengths.contains(len) || first_one(seg.percent, s, e).is_some() {
        out.push((s, e));
    }
}

/// Fills the bitmaps of `seg` (bit `i % 64` of word `i / 64` is byte `i`; bytes past the end
/// read as spaces, which are in no class).
fn classify(seg: &[u8], maps: &mut Bitmaps) {
    let words = seg.len().div_ceil(64);
    for v in [
        &mut maps.field,
        &mut maps.token,
        &mut maps.word,
        &mut maps.newline,
        &mut maps.sep,
        &mut maps.quote,
        &mut maps.percent,
        &mut maps.base64,
    ] {
        v.clear();
        v.resize(words, 0);
    }
    for_blocks(seg, |j, quarters| {
        let mut m = [0u64; 8];
        for (k, quarter) in quarters.into_iter().enumerate() {
            let c = classes16(quarter);
            for (acc, bits) in m.iter_mut().zip([
                c.field, c.token, c.word, c.newline, c.sep, c.quote, c.percent, c.base64,
            ]) {
                *acc |= u64::from(bits) << (k * 16);
            }
        }
        for (v, bits) in [
            &mut maps.field,
            &mut maps.token,
            &mut maps.word,
            &mut maps.newline,
            &mut maps.sep,
            &mut maps.quote,
            &mut maps.percent,
            &mut maps.base64,
        ]
        .into_iter()
        .zip(m)
        {
            if let Some(w) = v.get_mut(j) {
                *w = bits;
            }
        }
    });
}

/// Calls `f(j, quarters)` for the `j`-th 64-byte block of `seg`, as four 16-byte quarters (the
/// last block padded with spaces, which are in no class). Whole blocks are split into arrays of
/// known size, so the quarters are plain loads rather than a copy call each.
fn for_blocks(seg: &[u8], mut f: impl FnMut(usize, [[u8; 16]; 4])) {
    let quarters = |block: &[u8; 64]| -> [[u8; 16]; 4] {
        let (q, _) = block.as_chunks::<16>();
        std::array::from_fn(|k| q.get(k).copied().unwrap_or([b' '; 16]))
    };
    let (blocks, rest) = seg.as_chunks::<64>();
    for (j, block) in blocks.iter().enumerate() {
        f(j, quarters(block));
    }
    if !rest.is_empty() {
        let mut last = [b' '; 64];
        if let Some(dst) = last.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        f(blocks.len(), quarters(&last));
    }
}

/// The class bits of sixteen bytes.
struct Classes16 {
    field: u16,
    token: u16,
    word: u16,
    newline: u16,
    sep: u16,
    quote: u16,
    percent: u16,
    /// As [`base64_16`].
    base64: u16,
}

fn classes16(bytes: [u8; 16]) -> Classes16 {
    let v = Lanes::new(bytes);
    let word = v.alphanumeric() | v.eq(b'_') | v.eq(b'-');
    let base64 = word | v.eq(b'+') | v.eq(b'/') | v.eq(b'=');
    let token = base64 | v.eq(b'.') | v.eq(b'~');
    let newline = v.eq(b'\n');
    // ASCII whitespace as Rust defines it: `\t \n \x0c \r` and space (not `\x0b`).
    let space = v.eq(b'\t') | newline | v.eq(0x0c) | v.eq(b'\r') | v.eq(b' ');
    let quote = v.eq(b'"') | v.eq(b'\'');
    let brk = space | quote | v.eq(b'`');
    let sep = v.eq(b'=') | v.eq(b':');
    Classes16 {
        field: !mask(brk),
        token: mask(token),
        word: mask(word),
        newline: mask(newline),
        sep: mask(sep),
        quote: mask(quote),
        percent: mask(v.eq(b'%')),
        base64: mask(base64),
    }
}

/// The base64 bits of sixteen bytes: ASCII letters and digits, `+ / = _ -`.
fn base64_16(bytes: [u8; 16]) -> u16 {
    let v = Lanes::new(bytes);
    mask(v.alphanumeric() | v.eq(b'+') | v.eq(b'/') | v.eq(b'=') | v.eq(b'_') | v.eq(b'-'))
}

/// Sixteen bytes in a vector, and the compares the byte classes are made of (each lane all ones
/// where it holds).
struct Lanes(u8x16);

impl Lanes {
    fn new(bytes: [u8; 16]) -> Self {
        Self(u8x16::new(bytes))
    }

    fn eq(&self, c: u8) -> u8x16 {
        self.0.cmp_eq(u8x16::splat(c))
    }

    /// ASCII letters and digits.
    fn alphanumeric(&self) -> u8x16 {
        within(self.0 | u8x16::splat(0x20), b'a', 25) | within(self.0, b'0', 9)
    }
}

/// `lo <= x <= lo + n`, unsigned: `x - lo` wraps above `n` otherwise.
fn within(x: u8x16, lo: u8, n: u8) -> u8x16 {
    let d = x - u8x16::splat(lo);
    d.min(u8x16::splat(n)).cmp_eq(d)
}

/// The top bit of each byte of `x` (all ones or all zeros after a compare), packed.
fn mask(x: u8x16) -> u16 {
    let signed: i8x16 = i8x16::new(x.to_array().map(|b| b as i8));
    // INVARIANT: move_mask sets only the low 16 bits.
    signed.move_mask() as u16
}

/// Calls `f(start, end)` for each maximal run of set bits of `bits` (over `len` bits) that is at
/// least `min` long (`min >= 1`).
fn long_runs(
    bits: &[u64],
    len: usize,
    min: usize,
    tmp: &mut Vec<u64>,
    mut f: impl FnMut(usize, usize),
) {
    // tmp[i] = 1 iff bits[i..i + have] are all set; doubling `have` up to `min`.
    tmp.clear();
    tmp.extend_from_slice(bits);
    let mut have = 1;
    while have < min {
        let k = have.min(min - have);
        and_shifted(tmp, k);
        have += k;
    }
    // Each run of `tmp` starts where a long enough run of `bits` starts.
    let mut carry = 0u64;
    for j in 0..tmp.len() {
        let w = tmp.get(j).copied().unwrap_or(0);
        let mut starts = w & !((w << 1) | carry);
        carry = w >> 63;
        while starts != 0 {
            let start = j * 64 + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            let end = first_zero(bits, start, len);
            f(start, end);
        }
    }
}

/// `v[i] &= v[i + k]` for every bit `i` (bits past the end are zero).
fn and_shifted(v: &mut [u64], k: usize) {
    let (words, shift) = (k / 64, (k % 64) as u32);
    for j in 0..v.len() {
        let lo = v.get(j + words).copied().unwrap_or(0);
        let hi = v.get(j + words + 1).copied().unwrap_or(0);
        let shifted = if shift == 0 {
            lo
        } else {
            (lo >> shift) | (hi << (64 - shift))
        };
        if let Some(w) = v.get_mut(j) {
            *w &= shifted;
        }
    }
}

/// Whether bit `i` is set.
fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

/// The first clear bit at or after `from`, or `len`.
fn first_zero(bits: &[u64], from: usize, len: usize) -> usize {
    let mut j = from / 64;
    let mut w = !bits.get(j).copied().unwrap_or(0) & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            return (j * 64 + w.trailing_zeros() as usize).min(len);
        }
        j += 1;
        match bits.get(j) {
            Some(&x) => w = !x,
            None => return len,
        }
    }
}

/// The first set bit in `from..to`.
fn first_one(bits: &[u64], from: usize, to: usize) -> Option<usize> {
    let mut j = from / 64;
    let mut w = bits.get(j).copied().unwrap_or(0) & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            let i = j * 64 + w.trailing_zeros() as usize;
            return (i < to).then_some(i);
        }
        j += 1;
        if j * 64 >= to {
            return None;
        }
        w = bits.get(j).copied()?;
    }
}

/// The set bits of a bitmap, in order.
struct Ones<'a> {
    bits: &'a [u64],
    len: usize,
    j: usize,
    w: u64,
}

impl<'a> Ones<'a> {
    fn new(bits: &'a [u64], len: usize) -> Self {
        Self {
            bits,
            len,
            j: 0,
            w: bits.first().copied().unwrap_or(0),
        }
    }
}

impl Iterator for Ones<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.w == 0 {
            self.j += 1;
            self.w = self.bits.get(self.j).copied()?;
        }
        let i = self.j * 64 + self.w.trailing_zeros() as usize;
        self.w &= self.w - 1;
        (i < self.len).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The byte-by-byte definition of the candidates of one line (the extractor this module
    /// replaced), kept as the reference the bitmap version must agree with.
    fn reference_line(line: &[u8], lengths: &LengthSet, out: &mut Vec<(usize, usize)>) {
        let is_field = |b: u8| !(b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`'));
        let is_word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
        let is_token = |b: u8| is_word(b) || matches!(b, b'+' | b'/' | b'=' | b'.' | b'~');
        let min = lengths.min().max(MIN_SECRET_LEN);
        let n = line.len();
        let mut i = 0;
        while i < n {
            while i < n && !is_field(line[i]) {
                i += 1;
            }
            let fs = i;
            while i < n && is_field(line[i]) {
                i += 1;
            }
            let fe = i;
            if fe == fs || fe - fs < lengths.min() {
                continue;
            }
            let field = &line[fs..fe];
            reference_push(line, fs, fe, lengths, out);
            let sep = field.iter().position(|&b| b == b'=' || b == b':');
            if let Some(p) = sep {
                reference_push(line, fs + p + 1, fe, lengths, out);
            }
            // Token runs, and word runs inside token runs with other bytes.
            let mut k = 0;
            while k < field.len() {
                while k < field.len() && !is_token(field[k]) {
                    k += 1;
                }
                let ts = k;
                while k < field.len() && is_token(field[k]) {
                    k += 1;
                }
                let run = &field[ts..k];
                if run.len() < min {
                    continue;
                }
                reference_push(line, fs + ts, fs + k, lengths, out);
                if run.iter().all(|&b| is_word(b)) {
                    continue;
                }
                let mut j = 0;
                while j < run.len() {
                    while j < run.len() && !is_word(run[j]) {
                        j += 1;
                    }
                    let ws = j;
                    while j < run.len() && is_word(run[j]) {
                        j += 1;
                    }
                    if j - ws >= min {
                        reference_push(line, fs + ts + ws, fs + ts + j, lengths, out);
                    }
                }
            }
            if let Some(p) = sep
                && let Some(c) = field[p..].windows(3).position(|w| w == b"://")
            {
                let after = p + c + 3;
                let rest = &field[after..];
                if let Some(at) = rest.iter().position(|&b| b == b'@')
                    && let Some(colon) = rest[..at].iter().position(|&b| b == b':')
                {
                    reference_push(line, fs + after + colon + 1, fs + after + at, lengths, out);
                }
            }
        }
        let mut i = 0;
        while let Some(q) = line[i..].iter().position(|&b| b == b'"' || b == b'\'') {
            let open = i + q;
            let quote = line[open];
            match line[open + 1..].iter().position(|&b| b == quote) {
                Some(close) => {
                    reference_push(line, open + 1, open + 1 + close, lengths, out);
                    i = open + close + 2;
                }
                None => i = open + 1,
            }
        }
        if let Some(p) = line.iter().position(|&b| b == b'=' || b == b':') {
            let mut s = p + 1;
            while s < line.len()
                && (line[s].is_ascii_whitespace() || matches!(line[s], b'"' | b'\''))
            {
                s += 1;
            }
            // Trimmed of whitespace and quotes, and also of `;` and `,`: both are candidates.
            let mut quoted_end = line.len();
            while quoted_end > s
                && (line[quoted_end - 1].is_ascii_whitespace()
                    || matches!(line[quoted_end - 1], b'"' | b'\''))
            {
                quoted_end -= 1;
            }
            let mut e = quoted_end;
            while e > s
                && (line[e - 1].is_ascii_whitespace()
                    || matches!(line[e - 1], b'"' | b'\'' | b';' | b','))
            {
                e -= 1;
            }
            reference_push(line, s, e, lengths, out);
            if lengths.untrimmed() {
                reference_push(line, s, quoted_end, lengths, out);
            }
        }
    }

    /// What [`push_span`] pushes, byte by byte, on a line's own offsets.
    fn reference_push(
        line: &[u8],
        s: usize,
        e: usize,
        lengths: &LengthSet,
        out: &mut Vec<(usize, usize)>,
    ) {
        // Shorter than every listed length, and trimming or decoding only shortens.
        if e - s < lengths.min().max(MIN_SECRET_LEN) {
            return;
        }
        let (raw_s, raw_e) = (s, e);
        let mut s = s;
        let mut e = e;
        while s < e && matches!(line[s], b'(' | b'[' | b'{' | b'<') {
            s += 1;
        }
        while e > s && matches!(line[e - 1], b',' | b';' | b')' | b']' | b'}' | b'>') {
            e -= 1;
        }
        // Trimmed, and as it is: a secret may start or end with what is trimmed.
        let raw = lengths.untrimmed().then_some((raw_s, raw_e));
        for (s, e) in std::iter::once((s, e)).chain(raw) {
            let len = e - s;
            if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len)
                && (lengths.contains(len) || line[s..e].contains(&b'%'))
            {
                out.push((s, e));
            }
        }
    }

    /// `(start, end)` of each line of `text`, without the line break.
    fn lines(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= text.len() {
                return None;
            }
            let start = pos;
            let end = memchr::memchr(b'\n', text.get(start..).unwrap_or(&[]))
                .map_or(text.len(), |i| start + i);
            pos = end + 1;
            let trimmed = if end > start && text.get(end - 1) == Some(&b'\r') {
                end - 1
            } else {
                end
            };
            Some((start, trimmed))
        })
    }

    /// The reference over a whole text: each line long enough, offsets in the text.
    fn reference(text: &[u8], lengths: &LengthSet) -> Vec<(usize, usize)> {
        let mut all = Vec::new();
        let mut line = Vec::new();
        for (start, end) in lines(text) {
            if end - start < lengths.min() {
                continue;
            }
            line.clear();
            reference_line(&text[start..end], lengths, &mut line);
            all.extend(line.iter().map(|&(s, e)| (start + s, start + e)));
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    fn fast(text: &[u8], lengths: &LengthSet) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        candidates(text, lengths, &mut Bitmaps::default(), &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The lengths `list`, with untrimmed candidates too (as for a wall with a secret that
    /// starts or ends with a trimmed byte).
    fn lengths_of(list: &[usize]) -> LengthSet {
        let mut set = LengthSet::default();
        for &l in list {
            set.insert(l);
        }
        set.set_untrimmed(true);
        set
    }

    /// Text made of the bytes the extractor cares about, in runs of varied length.
    fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::collection::vec(
            prop_oneof![
                8 => "[a-zA-Z0-9_-]{1,40}".prop_map(String::into_bytes),
                2 => "[a-z0-9+/=.~%]{1,30}".prop_map(String::into_bytes),
                3 => prop::sample::select(vec![
                    " ", "  ", "\n", "\r\n", "\t", "\x0b", "\x0c", "\"", "'", "`", "=", ":",
                    "://", "@", "(", ")", "[", "]", "{", "}", "<", ">", ",", ";", "%41", "\u{e9}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                1 => prop::collection::vec(any::<u8>(), 1..8),
            ],
            0..120,
        );
        pieces.prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_bitmap_extractor_agrees_with_the_byte_by_byte_definition(
            text in text_strategy(),
            lens in prop::collection::vec(8usize..80, 1..6),
            untrimmed in any::<bool>(),
        ) {
            let mut lengths = lengths_of(&lens);
            lengths.set_untrimmed(untrimmed);
            prop_assert_eq!(fast(&text, &lengths), reference(&text, &lengths));
        }
    }

    #[test]
    fn long_lines_and_segment_edges_agree_with_the_reference() {
        let lengths = lengths_of(&[12, 20, 32, 64, 100]);
        // Lines that straddle segment ends, one line longer than a segment, runs across words.
        let mut text = Vec::new();
        let mut k = 0u64;
        while text.len() < 3 * SEGMENT {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (k >> 40) as usize % 90;
            let id: Vec<u8> = (0..len)
                .map(|i| b"abcXYZ019_-+/=.~"[(i + len) % 16])
                .collect();
            text.extend_from_slice(&id);
            text.extend_from_slice(match (k >> 20) % 7 {
                0 => b"\n",
                1 => b" = \"",
                2 => b"\" ",
                3 => b": ",
                4 => b"\r\n",
                _ => b" ",
            });
        }
        text.extend(std::iter::repeat_n(b'q', SEGMENT + 100));
        text.extend_from_slice(b"\nkey=");
        text.extend(std::iter::repeat_n(b'z', 100));
        assert_eq!(fast(&text, &lengths), reference(&text, &lengths));
        assert!(!fast(&text, &lengths).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn base64_runs_agree_with_the_byte_by_byte_definition(
            text in text_strategy(),
            min in 1usize..40,
        ) {
            let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-');
            let mut expected = Vec::new();
            let mut i = 0;
            while i < text.len() {
                let s = i;
                while i < text.len() && is_b64(text[i]) {
                    i += 1;
                }
                if i - s >= min {
                    expected.push((s, i));
                }
                i = i.max(s + 1);
            }
            let mut got = Vec::new();
            base64_runs(&text, min, &mut Bitmaps::default(), &mut got);
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn one_pass_finds_what_the_two_separate_ones_find(
            text in text_strategy(),
            lens in prop::collection::vec(8usize..80, 1..6),
            base64_min in 1usize..40,
        ) {
            let lengths = lengths_of(&lens);
            let mut runs = Vec::new();
            base64_runs(&text, base64_min, &mut Bitmaps::default(), &mut runs);
            let mut spans = Vec::new();
            candidates(&text, &lengths, &mut Bitmaps::default(), &mut spans);
            let (mut both_spans, mut both_runs) = (Vec::new(), Vec::new());
            candidates_and_base64_runs(
                &text, &lengths, base64_min, &mut Bitmaps::default(), &mut both_spans, &mut both_runs,
            );
            prop_assert_eq!(both_spans, spans);
            prop_assert_eq!(both_runs, runs);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn long_runs_agree_with_a_bit_by_bit_search(
            pieces in prop::collection::vec((any::<bool>(), 1usize..140), 0..12),
            min in 1usize..150,
        ) {
            let bits_on: Vec<bool> = pieces.iter().flat_map(|&(on, n)| std::iter::repeat_n(on, n)).collect();
            let len = bits_on.len();
            let mut bits = vec![0u64; len.div_ceil(64)];
            for (i, _) in bits_on.iter().enumerate().filter(|(_, on)| **on) {
                bits[i / 64] |= 1 << (i % 64);
            }
            let mut expected = Vec::new();
            let mut i = 0;
            while i < len {
                let s = i;
                while i < len && bits_on[i] {
                    i += 1;
                }
                if i - s >= min {
                    expected.push((s, i));
                }
                i = i.max(s + 1);
            }
            let mut found = Vec::new();
            long_runs(&bits, len, min, &mut Vec::new(), |s, e| found.push((s, e)));
            prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn runs_are_found_across_words() {
        let mut bits = vec![0u64; 4];
        // A run of 70 from bit 60, a run of 5 at 200.
        for i in 60..130 {
            bits[i / 64] |= 1 << (i % 64);
        }
        for i in 200..205 {
            bits[i / 64] |= 1 << (i % 64);
        }
        let mut found = Vec::new();
        long_runs(&bits, 256, 70, &mut Vec::new(), |s, e| found.push((s, e)));
        assert_eq!(found, [(60, 130)]);
        found.clear();
        long_runs(&bits, 256, 5, &mut Vec::new(), |s, e| found.push((s, e)));
        assert_eq!(found, [(60, 130), (200, 205)]);
        found.clear();
        long_runs(&bits, 256, 71, &mut Vec::new(), |s, e| found.push((s, e)));
        assert!(found.is_empty());
    }
}
