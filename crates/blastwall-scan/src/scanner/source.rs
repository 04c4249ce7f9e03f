//! Reading one file or stream: opening it safely, recognising archives, UTF-16 and binary
//! content, and scanning it chunk by chunk with an overlap so that memory stays bounded and a
//! secret across a chunk boundary is still seen whole.

use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::finding::Location;
use crate::scanner::Collector;
use crate::summary::SkipReason;

/// Bytes looked at to tell what a stream holds.
const SNIFF_LEN: usize = 8192;
/// The marker that silences findings on its line (in a binary file, in its printable string;
/// in an environment value, on its line; in a command line, in its argument).
pub(super) const ALLOW_MARKER: &[u8] = b"blastwall:allow";
/// Printable runs at least this long are scanned in binary files.
const MIN_STRING_RUN: usize = 8;

/// Where a stream comes from: a file, and the archive members inside it.
#[derive(Debug, Clone)]
struct Origin {
    path: PathBuf,
    members: Vec<String>,
}

impl Origin {
    fn display(&self) -> String {
        let mut s = self.path.display().to_string();
        for m in &self.members {
            s.push('!');
            s.push_str(m);
        }
        s
    }

    fn child(&self, member: String) -> Self {
        let mut members = self.members.clone();
        members.push(member);
        Self {
            path: self.path.clone(),
            members,
        }
    }
}

/// The bytes an archive may still expand to, shared by all its layers.
struct Budget {
    left: Cell<u64>,
    limit: u64,
}

/// The error a [`Limited`] reader returns past the budget.
#[derive(Debug)]
struct BudgetExceeded;

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("archive expansion bound reached")
    }
}

impl std::error::Error for BudgetExceeded {}

fn is_budget_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<BudgetExceeded>())
}

/// A decompressing reader charged against a [`Budget`].
struct Limited<'b, R> {
    inner: R,
    budget: &'b Budget,
}

impl<R: Read> Read for Limited<'_, R> {
    /// The bytes up to the bound are delivered (and scanned); the read after them fails.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.budget.left.get();
        let used = n as u64;
        if used > left {
            self.budget.left.set(0);
            if left == 0 {
                return Err(io::Error::other(BudgetExceeded));
            }
            // INVARIANT: left < n <= buf.len(), so it fits in usize.
            return Ok(left as usize);
        }
        self.budget.left.set(left - used);
        Ok(n)
    }
}

/// The error a [`SizeBound`] reader returns past the per-file size bound.
#[derive(Debug)]
struct FileTooLarge;

impl std::fmt::Display for FileTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file size bound reached")
    }
}

impl std::error::Error for FileTooLarge {}

fn is_too_large_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FileTooLarge>())
}

/// A file reader bounded by the per-file size bound, whatever size `fstat` reported (a procfs
/// file reports 0; a file may grow while it is read): it delivers up to `limit` bytes, then
/// fails if there is more.
struct SizeBound<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for SizeBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // A read more tells a file that ends at the bound from one that goes on (of 512
            // bytes, not 1: some procfs files refuse reads of a size not a multiple of 8).
            let mut probe = [0u8; 512];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(FileTooLarge)),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..max).unwrap_or(&mut []))?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Scans the file at `path` (found by the walker or named by the caller). `listed_regular`: the
/// walker's directory listing says it is a regular file, so it is opened without a `stat` of its
/// path first; what the open file's own `fstat` says decides, as for any file.
pub(super) fn scan_file(col: &Collector<'_>, path: &Path, listed_regular: bool) {
    if listed_regular {
        return scan_listed_file(col, path);
    }
    scan_file_as(col, path, path);
}

/// Scans the file at `path` as if it were at `shown` (findings and summary name `shown`): for a
/// symbolic link named as a root, `path` is its resolved target. `path` is checked and opened as
/// in [`scan_file`].
pub(super) fn scan_file_as(col: &Collector<'_>, path: &Path, shown_path: &Path) {
    let opts = col.options();
    let shown = shown_path.display().to_string();
    let meta = if opts.follow_symlinks {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) => return col.unreadable(shown, &e),
    };
    let ft = meta.file_type();
    let reason = if ft.is_symlink() {
        Some(SkipReason::Symlink)
    } else if ft.is_fifo() {
        Some(SkipReason::Fifo)
    } else if ft.is_socket() {
        Some(SkipReason::Socket)
    } else if ft.is_block_device() || ft.is_char_device() {
        Some(SkipReason::Device)
    } else if !ft.is_file() {
        Some(SkipReason::OtherType)
    } else if meta.len() > opts.max_file_size {
        Some(SkipReason::TooLarge {
            size: meta.len(),
            limit: opts.max_file_size,
        })
    } else {
        None
    };
    if let Some(reason) = reason {
        return col.skip(shown, reason);
    }
    let mut file = match open_nonblocking(path, opts.follow_symlinks) {
        Ok(f) => f,
        Err(e) => return col.unreadable(shown, &e),
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.dev() == meta.dev() && m.ino() == meta.ino() => {}
        Ok(_) => return col.skip(shown, SkipReason::OtherType),
        Err(e) => return col.unreadable(shown, &e),
    }
    col.file_scanned(meta.len());
    scan_file_reader(col, shown_path.to_owned(), &mut file, meta.len());
}

/// Opens `path` for reading. O_NONBLOCK: should the file have been swapped for a FIFO since it
/// was listed or checked, opening it does not wait for a writer. O_NOFOLLOW (unless links are
/// followed): nor does it follow a link swapped in.
fn open_nonblocking(path: &Path, follow_symlinks: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// [`scan_file`] for a file the directory listing calls regular: opened first, then checked
/// with `fstat` on the open file (a regular file, within the size bound) before a byte is
/// read. One path lookup instead of two.
fn scan_listed_file(col: &Collector<'_>, path: &Path) {
    let opts = col.options();
    let shown = || path.display().to_string();
    let mut file = match open_nonblocking(path, opts.follow_symlinks) {
        Ok(f) => f,
        Err(e) => return col.unreadable(shown(), &e),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return col.unreadable(shown(), &e),
    };
    if !meta.is_file() {
        return col.skip(shown(), SkipReason::OtherType);
    }
    if meta.len() > opts.max_file_size {
        return col.skip(
            shown(),
            SkipReason::TooLarge {
                size: meta.len(),
                limit: opts.max_file_size,
            },
        );
    }
    col.file_scanned(meta.len());
    scan_file_reader(col, path.to_owned(), &mut file, meta.len());
}

/// Scans an open regular file of `size` bytes (as `fstat` says) at `path`, reading no more than
/// the per-file size bound.
fn scan_file_reader(col: &Collector<'_>, path: PathBuf, file: &mut File, size: u64) {
    let mut bounded = SizeBound {
        inner: file,
        left: col.options().max_file_size,
    };
    scan_reader(col, path, &mut bounded, size);
}

/// Scans a top-level stream of `size` bytes that came from `path`.
pub(super) fn scan_reader(col: &Collector<'_>, path: PathBuf, reader: &mut dyn Read, size: u64) {
    let opts = col.options();
    let limit = opts
        .archive_max_bytes
        .min(size.saturating_mul(opts.archive_max_ratio).max(1 << 20));
    let budget = Budget {
        left: Cell::new(limit),
        limit,
    };
    let origin = Origin {
        path,
        members: Vec::new(),
    };
    if let Err(e) = scan_stream(col, reader, &origin, 0, &budget, size) {
        if is_budget_error(&e) {
            col.skip(
                origin.display(),
                SkipReason::ArchiveExpansion {
                    limit: budget.limit,
                },
            );
        } else if is_too_large_error(&e) {
            let limit = opts.max_file_size;
            col.skip(
                origin.display(),
                SkipReason::TooLarge {
                    size: limit.saturating_add(1),
                    limit,
                },
            );
        } else {
            col.unreadable(origin.display(), &e);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gzip,
    Zip,
    Tar,
    Utf16 { little_endian: bool, bom: bool },
    Binary,
    Text,
}

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Kind::Gzip;
    }
    if head.starts_with(b"PK\x03\x04") {
        return Kind::Zip;
    }
    if head.get(257..262) == Some(b"ustar") {
        return Kind::Tar;
    }
    if head.starts_with(&[0xff, 0xfe]) {
        return Kind::Utf16 {
            little_endian: true,
            bom: true,
        };
    }
    if head.starts_with(&[0xfe, 0xff]) {
        return Kind::Utf16 {
            little_endian: false,
            bom: true,
        };
    }
    if !head.contains(&0) {
        return Kind::Text;
    }
    // UTF-16 without a BOM: ASCII text leaves every other byte zero.
    let sample = head.get(..head.len().min(1024) & !1).unwrap_or(&[]);
    if sample.len() >= 16 {
        let pairs = sample.len() / 2;
        let zero_odd = sample
            .chunks_exact(2)
            .filter(|p| p.get(1) == Some(&0) && p.first() != Some(&0))
            .count();
        let zero_even = sample
            .chunks_exact(2)
            .filter(|p| p.first() == Some(&0) && p.get(1) != Some(&0))
            .count();
        if zero_odd * 10 >= pairs * 9 {
            return Kind::Utf16 {
                little_endian: true,
                bom: false,
            };
        }
        if zero_even * 10 >= pairs * 9 {
            return Kind::Utf16 {
                little_endian: false,
                bom: false,
            };
        }
    }
    Kind::Binary
}

/// Reads the first `want` bytes into a buffer of `capacity` (at least `want`), so that a text
/// file's first chunk can go on in the same buffer; with the read error, if one stopped it
/// (the bytes read before it are kept, to be scanned).
fn read_head(reader: &mut dyn Read, want: usize, capacity: usize) -> (Vec<u8>, Option<io::Error>) {
    let mut head = buffer(capacity.max(want));
    let error = read_more(reader, &mut head, want).err();
    (head, error)
}

/// Appends up to `n` bytes of `reader` to `buf`; how many, 0 at the end. On an error, the
/// bytes read before it stay in `buf` (`read_to_end` keeps them), so that they are scanned
/// before the error is reported.
fn read_more(reader: &mut dyn Read, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    reader.take(n as u64).read_to_end(buf)
}

thread_local! {
    /// The read buffer of the last file this walker thread scanned, kept for the next one. A
    /// fresh allocation per file had the allocator hand memory back to the kernel and fault it
    /// in again, zeroed, for the next file: a sixth of a scan's time without a wall file. It
    /// holds at most one chunk (plus its overlap) per thread, and only ever bytes this thread
    /// has read already.
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `capacity` bytes: the thread's spare one if it is large
/// enough, else a new one (growing the spare would copy its old bytes for nothing, into fresh
/// memory; the spare stays for the next file).
fn buffer(capacity: usize) -> Vec<u8> {
    SPARE.with_borrow_mut(|spare| {
        if spare.capacity() >= capacity {
            let mut buf = std::mem::take(spare);
            buf.clear();
            buf
        } else {
            Vec::with_capacity(capacity)
        }
    })
}

/// Keeps `buf` as the thread's spare buffer if it is larger than the one kept, and not larger
/// than `limit` (a chunk grown by doubling; a whole decoded UTF-16 file is not kept).
fn recycle(buf: Vec<u8>, limit: usize) {
    SPARE.with_borrow_mut(|spare| {
        if buf.capacity() > spare.capacity() && buf.capacity() <= limit {
            *spare = buf;
        }
    });
}

/// Member name for the content of a gzip stream: the file name without `.gz` (`.tgz` → `.tar`).
fn gunzipped_name(origin: &Origin) -> String {
    let last = origin
        .members
        .last()
        .cloned()
        .or_else(|| {
            origin
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if let Some(stem) = last.strip_suffix(".tgz") {
        format!("{stem}.tar")
    } else if let Some(stem) = last.strip_suffix(".gz") {
        stem.to_owned()
    } else {
        format!("{last}~gunzipped")
    }
}

/// Scans one stream; `size_hint` is its expected length (0 when unknown), so that its first
/// chunk is read into a buffer of the right size at once rather than grown by doubling.
fn scan_stream(
    col: &Collector<'_>,
    reader: &mut dyn Read,
    origin: &Origin,
    depth: u32,
    budget: &Budget,
    size_hint: u64,
) -> io::Result<()> {
    let opts = col.options();
    // One byte more than expected, so that the read that finds the end needs no growth. A
    // stream of unknown size (a decompressed member) gets room for a whole chunk, so that it is
    // not grown by doubling, each step a copy into fresh memory.
    let want = match size_hint {
        0 => opts.chunk_size,
        n => n.min(opts.chunk_size as u64) as usize,
    };
    let (mut head, mut pending) = read_head(reader, SNIFF_LEN, want.saturating_add(1));
    let kind = sniff(&head);
    if matches!(kind, Kind::Binary | Kind::Text) && opts.chunk_size >= SNIFF_LEN {
        // The first chunk goes on in the sniffed buffer: no copy of it, no second buffer.
        if head.len() == SNIFF_LEN && pending.is_none() {
            pending = read_more(reader, &mut head, opts.chunk_size - SNIFF_LEN).err();
        }
        return scan_windows(col, reader, head, origin, kind == Kind::Binary, pending);
    }
    let archive = matches!(kind, Kind::Gzip | Kind::Zip | Kind::Tar);
    if archive && depth >= opts.archive_max_depth {
        col.skip(
            origin.display(),
            SkipReason::ArchiveTooDeep {
                limit: opts.archive_max_depth,
            },
        );
        return Ok(());
    }
    // After a read error, only the bytes read before it are scanned, and the error reported.
    let mut nothing = io::empty();
    let tail: &mut dyn Read = if pending.is_some() {
        &mut nothing
    } else {
        reader
    };
    let mut rest = Cursor::new(head).chain(tail);
    let mut result = scan_nested(col, &mut rest, kind, origin, depth, budget, want);
    if let Some(e) = pending {
        result = Err(e);
    }
    // The head's buffer serves the next file.
    recycle(
        rest.into_inner().0.into_inner(),
        opts.chunk_size.saturating_mul(2),
    );
    match result {
        Err(e) if archive && !is_budget_error(&e) && !is_too_large_error(&e) => {
            col.skip(
                origin.display(),
                SkipReason::ArchiveUnreadable {
                    error: e.to_string(),
                },
            );
            Ok(())
        }
        other => other,
    }
}

/// Scans the rest of a stream whose sniffed head is `rest`'s cursor: an archive's members, a
/// UTF-16 text, or (with chunks smaller than the head) a text or binary file.
fn scan_nested(
    col: &Collector<'_>,
    rest: &mut io::Chain<Cursor<Vec<u8>>, &mut dyn Read>,
    kind: Kind,
    origin: &Origin,
    depth: u32,
    budget: &Budget,
    want: usize,
) -> io::Result<()> {
    let opts = col.options();
    match kind {
        Kind::Gzip => {
            let gz = flate2::read::MultiGzDecoder::new(&mut *rest);
            let mut limited = Limited { inner: gz, budget };
            let child = origin.child(gunzipped_name(origin));
            col.summary(|s| s.archive_members_scanned += 1);
            scan_stream(col, &mut limited, &child, depth + 1, budget, 0)
        }
        Kind::Tar => scan_tar(col, rest, origin, depth, budget),
        Kind::Zip => scan_zip(col, rest, origin, depth, budget),
        Kind::Utf16 { little_endian, bom } => {
            // Decoded whole, so bounded by the file size bound (an archive member may be
            // larger than that); cut there, and listed.
            let bound = usize::try_from(opts.max_file_size).unwrap_or(usize::MAX);
            let mut raw = Vec::new();
            let pending = read_more(rest, &mut raw, bound.saturating_add(1)).err();
            if raw.len() > bound {
                raw.truncate(bound);
                col.skip(
                    origin.display(),
                    SkipReason::TooLarge {
                        size: opts.max_file_size.saturating_add(1),
                        limit: opts.max_file_size,
                    },
                );
            }
            let text = decode_utf16(&raw, little_endian, bom);
            scan_windows(
                col,
                &mut io::empty(),
                text.into_bytes(),
                origin,
                false,
                pending,
            )
        }
        // Chunks smaller than the sniffed head (tests use 4 KiB chunks): read through it.
        Kind::Binary | Kind::Text => {
            let mut first = buffer(want.saturating_add(1).max(SNIFF_LEN));
            let pending = read_more(rest, &mut first, opts.chunk_size).err();
            scan_windows(col, rest, first, origin, kind == Kind::Binary, pending)
        }
    }
}

fn scan_tar(
    col: &Collector<'_>,
    reader: &mut dyn Read,
    origin: &Origin,
    depth: u32,
    budget: &Budget,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let child = origin.child(name);
        // A file's data: regular, contiguous (`7`) or GNU sparse (`S`, read with its holes as
        // zeros). Links, directories and devices carry none; any other type that does is listed.
        let file = kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse();
        if !file {
            let carries_data = !(kind.is_dir()
                || kind.is_symlink()
                || kind.is_hard_link()
                || kind.is_character_special()
                || kind.is_block_special()
                || kind.is_fifo());
            if carries_data && entry.size() > 0 {
                col.skip(
                    child.display(),
                    SkipReason::ArchiveUnreadable {
                        error: format!(
                            "tar member of type `{}` not read",
                            char::from(kind.as_byte())
                        ),
                    },
                );
            }
            continue;
        }
        col.summary(|s| s.archive_members_scanned += 1);
        let size = entry.size();
        scan_stream(col, &mut entry, &child, depth + 1, budget, size)?;
    }
    Ok(())
}

fn scan_zip(
    col: &Collector<'_>,
    reader: &mut dyn Read,
    origin: &Origin,
    depth: u32,
    budget: &Budget,
) -> io::Result<()> {
    // The zip directory is at the end: read the archive whole, within the file size bound.
    let limit = col.options().max_file_size;
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        col.skip(
            origin.display(),
            SkipReason::TooLarge {
                size: bytes.len() as u64,
                limit,
            },
        );
        return Ok(());
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(io::Error::other)?;
    for i in 0..archive.len() {
        let file = archive.by_index(i).map_err(io::Error::other)?;
        if !file.is_file() {
            continue;
        }
        let child = origin.child(file.name().to_owned());
        let size = file.size();
        col.summary(|s| s.archive_members_scanned += 1);
        let mut limited = Limited {
            inner: file,
            budget,
        };
        scan_stream(col, &mut limited, &child, depth + 1, budget, size)?;
    }
    Ok(())
}

fn decode_utf16(raw: &[u8], little_endian: bool, bom: bool) -> String {
    let body = if bom {
        raw.get(2..).unwrap_or(&[])
    } else {
        raw
    };
    let units = body.chunks_exact(2).map(|p| {
        let (a, b) = (
            p.first().copied().unwrap_or(0),
            p.get(1).copied().unwrap_or(0),
        );
        if little_endian {
            u16::from_le_bytes([a, b])
        } else {
            u16::from_be_bytes([a, b])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Printable runs of a binary buffer, joined by newlines, with a map from offsets in the result
/// back to offsets in `raw`: `(start in result, start in raw)` per run.
#[cfg(test)]
fn binary_strings(raw: &[u8]) -> Strings {
    let (mut out, mut map) = (Vec::new(), Vec::new());
    binary_strings_into(raw, &mut out, &mut map);
    (out, map)
}

/// A binary window's printable runs and their map back to the window (see [`binary_strings`]).
type Strings = (Vec<u8>, Vec<(usize, usize)>);

thread_local! {
    /// The buffers of [`binary_strings_into`], kept from window to window: filling fresh ones
    /// (grown by doubling, each step a copy into fresh memory) made two thirds of a scan's page
    /// faults. At most a window's size (and a newline per run) per thread.
    static STRINGS: RefCell<Strings> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// [`binary_strings`] into `out` and `map`, cleared first.
fn binary_strings_into(raw: &[u8], out: &mut Vec<u8>, map: &mut Vec<(usize, usize)>) {
    out.clear();
    map.clear();
    let printable = |i: usize| {
        raw.get(i)
            .is_some_and(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
    };
    // Probes one byte in every MIN_STRING_RUN: a long enough run covers a probe. From a
    // printable probe, the run is walked forward, and back only if it can be long enough.
    let mut probe = MIN_STRING_RUN - 1;
    while probe < raw.len() {
        if !printable(probe) {
            probe += MIN_STRING_RUN;
            continue;
        }
        let mut end = probe + 1;
        while printable(end) {
            end += 1;
        }
        let next = end + MIN_STRING_RUN;
        if !end.checked_sub(MIN_STRING_RUN).is_some_and(printable) {
            probe = next;
            continue;
        }
        let mut start = probe;
        while start > 0 && printable(start - 1) {
            start -= 1;
        }
        probe = next;
        if end - start >= MIN_STRING_RUN {
            map.push((out.len(), start));
            out.extend_from_slice(raw.get(start..end).unwrap_or(&[]));
            out.push(b'\n');
        }
    }
}

fn map_back(map: &[(usize, usize)], pos: usize) -> usize {
    let idx = map.partition_point(|&(s, _)| s <= pos);
    match idx.checked_sub(1).and_then(|i| map.get(i)) {
        Some(&(s, raw)) => raw + (pos - s),
        None => pos,
    }
}

/// Line and column bookkeeping across windows.
struct Position {
    /// Absolute offset of the window's first byte.
    base_offset: u64,
    /// Line number of the window's first byte.
    base_line: u64,
    /// Bytes of the window's first line that lie before the window.
    base_column: u64,
}

/// Scans `buf` and the rest of `reader` window by window. `pending`: the read error that
/// stopped the reading of `buf` already; a read error (that one or a later one) ends the
/// reading, and is returned after every byte read before it was scanned.
fn scan_windows(
    col: &Collector<'_>,
    reader: &mut dyn Read,
    mut buf: Vec<u8>,
    origin: &Origin,
    binary: bool,
    mut pending: Option<io::Error>,
) -> io::Result<()> {
    let opts = col.options();
    let (chunk, overlap) = (opts.chunk_size, opts.overlap);
    let mut pos = Position {
        base_offset: 0,
        base_line: 1,
        base_column: 0,
    };
    let mut eof = pending.is_some();
    // Bytes at the start of `buf` carried from the window before as left context (a keyword,
    // an opening quote or a URL's `://user:` before a secret that starts in this window): the
    // hits that start in them were that window's to report.
    let mut context = 0;
    loop {
        if buf.len() < context + chunk && !eof {
            buf.reserve_exact(context + chunk - buf.len());
        }
        while buf.len() < context + chunk && !eof {
            let want = context + chunk - buf.len();
            match read_more(reader, &mut buf, want) {
                Ok(got) => eof = got == 0,
                Err(e) => {
                    pending = Some(e);
                    eof = true;
                }
            }
        }
        // Each window reports the hits that start in `context..limit`, and sees `overlap` bytes
        // on either side of that range: a hit (or a group of merged hits) shorter than the
        // overlap is seen whole, with what precedes it, by the one window that reports it.
        let limit = if eof {
            buf.len()
        } else {
            buf.len().saturating_sub(overlap)
        };
        scan_window(col, &buf, context..limit, &pos, origin, binary);
        if eof {
            recycle(buf, chunk.saturating_mul(2));
            return pending.map_or(Ok(()), Err);
        }
        // INVARIANT: limit >= context + chunk - overlap > context, so each window moves on.
        let keep = overlap.min(limit);
        let drop = limit - keep;
        let consumed = buf.get(..drop).unwrap_or(&[]);
        let newlines = memchr::memchr_iter(b'\n', consumed).count() as u64;
        pos.base_column = match memchr::memrchr(b'\n', consumed) {
            Some(nl) => (drop - nl - 1) as u64,
            None => pos.base_column + drop as u64,
        };
        pos.base_line += newlines;
        pos.base_offset += drop as u64;
        buf.drain(..drop);
        context = keep;
    }
}

/// Scans the window `buf` and reports the hits that start in `report` (the bytes before it are
/// left context, those after it lookahead).
fn scan_window(
    col: &Collector<'_>,
    buf: &[u8],
    report: std::ops::Range<usize>,
    pos: &Position,
    origin: &Origin,
    binary: bool,
) {
    // A binary window's printable strings, each on a line of its own, and their map back.
    let (hits, strings) = if binary {
        let (mut strings, mut map) = STRINGS.with_borrow_mut(std::mem::take);
        binary_strings_into(buf, &mut strings, &mut map);
        let hits = col.engine().scan(&strings);
        (hits, Some((strings, map)))
    } else {
        (col.engine().scan(buf), None)
    };
    let map = strings.as_ref().map(|(_, m)| m.as_slice());
    // Hits come sorted by offset: count lines incrementally.
    let mut line = pos.base_line;
    let mut counted_to = 0;
    for hit in hits {
        let start = map.map_or(hit.start, |m| map_back(m, hit.start));
        if !report.contains(&start) {
            continue;
        }
        if start > counted_to {
            let part = buf.get(counted_to..start).unwrap_or(&[]);
            line += memchr::memchr_iter(b'\n', part).count() as u64;
            counted_to = start;
        }
        let before = buf.get(..start).unwrap_or(&[]);
        let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
        let head = buf.get(line_start..start).unwrap_or(&[]);
        // Characters, not bytes: count the bytes that start a UTF-8 sequence.
        let mut column = head.iter().filter(|&&b| (b & 0xC0) != 0x80).count() as u64 + 1;
        if line_start == 0 {
            column += pos.base_column;
        }
        // In a binary file, the bytes between line feeds may be megabytes of many strings: the
        // marker counts only in the printable string that holds the hit.
        let suppressed = match &strings {
            Some((s, _)) => line_allows(s, hit.start),
            None => line_allows(buf, start),
        };
        let location = Location::File {
            path: origin.path.clone(),
            members: origin.members.clone(),
            line,
            column,
            offset: pos.base_offset + start as u64,
        };
        col.add(&hit, location, suppressed);
    }
    if let Some(spare) = strings {
        STRINGS.with_borrow_mut(|s| *s = spare);
    }
}

/// Whether the line of `text` that holds byte `at` (the bytes between the line feeds around
/// it) carries [`ALLOW_MARKER`].
pub(super) fn line_allows(text: &[u8], at: usize) -> bool {
    let at = at.min(text.len());
    let (before, after) = text.split_at(at);
    let start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', after).map_or(text.len(), |i| at + i);
    let line = text.get(start..end).unwrap_or(&[]);
    memchr::memmem::find(line, ALLOW_MARKER).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_kinds_apart() {
        assert_eq!(sniff(b"plain text"), Kind::Text);
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0]), Kind::Gzip);
        assert_eq!(sniff(b"PK\x03\x04rest"), Kind::Zip);
        let utf16: Vec<u8> = "password=hunter2-xyz"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            sniff(&utf16),
            Kind::Utf16 {
                little_endian: true,
                bom: false
            }
        );
        assert_eq!(
            sniff(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00"),
            Kind::Binary
        );
    }

    #[test]
    fn binary_strings_are_every_printable_run_of_eight_or_more() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..3000 {
            let len = (round % 97) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if rng.is_multiple_of(5) { 0 } else { b'a' }
                })
                .collect();
            let mut expected = Vec::new();
            let mut starts = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                let s = i;
                while i < raw.len() && raw[i] != 0 {
                    i += 1;
                }
                if i - s >= MIN_STRING_RUN {
                    starts.push((expected.len(), s));
                    expected.extend_from_slice(&raw[s..i]);
                    expected.push(b'\n');
                }
                i += 1;
            }
            assert_eq!(binary_strings(&raw), (expected, starts), "{raw:?}");
        }
    }

    #[test]
    fn binary_strings_map_back_to_raw_offsets() {
        let raw = b"\x00\x01token=abcdefgh12\x00\x00\x02xy\x00another-string\x00";
        let (strings, map) = binary_strings(raw);
        assert_eq!(strings, b"token=abcdefgh12\nanother-string\n");
        let pos = strings.iter().position(|&b| b == b'a').unwrap();
        assert_eq!(raw[map_back(&map, pos)], b'a');
        let second = strings.len() - "another-string\n".len();
        assert_eq!(map_back(&map, second), 24);
    }
}
