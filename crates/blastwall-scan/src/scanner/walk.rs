//! The parallel walk over files and directories (the `ignore` crate's walker).
//!
//! Hidden files are scanned and ignore files are not respected unless asked: a wall scan looks
//! where `.gitignore` would hide things, because that is where secrets are left.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::{WalkBuilder, WalkState};

use crate::scanner::Collector;
use crate::scanner::source::scan_file;
use crate::summary::SkipReason;

pub(super) fn walk(col: &Collector<'_>, paths: &[PathBuf]) {
    let Some((first, rest)) = paths.split_first() else {
        return;
    };
    let opts = col.options();
    let respect = opts.respect_ignore_files;
    let mut builder = WalkBuilder::new(first);
    for p in rest {
        builder.add(p);
    }
    builder
        .hidden(false)
        .ignore(respect)
        .git_ignore(respect)
        .git_global(respect)
        .git_exclude(respect)
        .parents(respect)
        .require_git(false)
        .follow_links(opts.follow_symlinks)
        .same_file_system(opts.same_file_system)
        .threads(opts.threads);
    let excluded: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    if !opts.exclude.is_empty() {
        let exclude = opts.exclude.clone();
        let seen = Arc::clone(&excluded);
        builder.filter_entry(move |entry| {
            let hit = exclude.iter().any(|x| entry.path() == x.as_path());
            if hit && let Ok(mut s) = seen.lock() {
                s.push(entry.path().to_owned());
            }
            !hit
        });
    }
    builder.build_parallel().run(|| {
        Box::new(|result| {
            match result {
                Ok(entry) => {
                    let file_type = entry.file_type();
                    if !file_type.is_some_and(|t| t.is_dir()) {
                        scan_file(col, entry.path(), file_type.is_some_and(|t| t.is_file()));
                    }
                }
                Err(err) => record_error(col, &err),
            }
            WalkState::Continue
        })
    });
    if let Ok(list) = excluded.lock() {
        for p in list.iter() {
            col.skip(p.display().to_string(), SkipReason::Excluded);
        }
    }
}

/// Lists a walk error with its path, as a symlink loop or as unreadable.
fn record_error(col: &Collector<'_>, err: &ignore::Error) {
    let (path, loop_child) = error_path(err);
    let shown = path.map_or_else(|| "<walk>".to_owned(), |p| p.display().to_string());
    if let Some(child) = loop_child {
        col.skip(child.display().to_string(), SkipReason::SymlinkLoop);
        return;
    }
    let io = match err.io_error() {
        Some(e) => std::io::Error::new(e.kind(), e.to_string()),
        None => std::io::Error::other(err.to_string()),
    };
    col.unreadable(shown, &io);
}

fn error_path(err: &ignore::Error) -> (Option<&Path>, Option<&Path>) {
    match err {
        ignore::Error::WithPath { path, err } => {
            let (inner, loop_child) = error_path(err);
            (inner.or(Some(path.as_path())), loop_child)
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => (Some(child.as_path()), Some(child.as_path())),
        ignore::Error::Partial(errs) => errs.first().map_or((None, None), error_path),
        _ => (None, None),
    }
}
