//! An in-memory cache of small, hot files with a total size bound.
//!
//! A hit costs a read lock and, at most once per [`REVALIDATE_AFTER`], one
//! `stat` to notice that the file changed on disk. When the budget is full,
//! a CLOCK sweep drops the entries nobody asked for since the last sweep.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lookup::{self, FileIdentity, Validators};

/// How stale a cached file may be before a hit checks it on disk again.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// Bookkeeping per entry beyond its content, so many tiny files cannot
/// exceed the budget unnoticed.
const ENTRY_OVERHEAD: u64 = 256;

/// The memory all file caches of one snapshot may use together.
#[derive(Debug)]
pub struct CacheBudget {
    limit: u64,
    max_file: u64,
    used: AtomicU64,
}

impl CacheBudget {
    pub fn new(limit: u64, max_file: u64) -> CacheBudget {
        CacheBudget {
            limit,
            max_file,
            used: AtomicU64::new(0),
        }
    }

    /// Files up to this size are read whole and cached.
    pub fn max_file(&self) -> u64 {
        self.max_file
    }

    fn reserve(&self, cost: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(cost).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, cost: u64) {
        self.used.fetch_sub(cost, Ordering::AcqRel);
    }
}

/// One small file held in memory with its precomputed headers.
#[derive(Debug)]
pub struct CachedFile {
    /// The path as requested below the root, stat'ed to notice changes
    /// (including a symlink that now points elsewhere).
    path: PathBuf,
    identity: FileIdentity,
    pub content: Bytes,
    pub validators: Validators,
    checked_at_ms: AtomicU64,
    referenced: AtomicBool,
}

impl CachedFile {
    pub fn new(
        path: PathBuf,
        identity: FileIdentity,
        content: Bytes,
        validators: Validators,
    ) -> CachedFile {
        CachedFile {
            path,
            identity,
            content,
            validators,
            checked_at_ms: AtomicU64::new(now_ms()),
            referenced: AtomicBool::new(true),
        }
    }

    /// Another form of the same file (compressed): checked against the
    /// same file on disk, so it goes when the file changes.
    pub fn variant(&self, content: Bytes, validators: Validators) -> CachedFile {
        CachedFile::new(self.path.clone(), self.identity, content, validators)
    }

    fn cost(&self, key: &str) -> u64 {
        self.content.len() as u64 + key.len() as u64 + ENTRY_OVERHEAD
    }

    /// Whether the entry still describes the file on disk, checking at most
    /// once per [`REVALIDATE_AFTER`].
    fn is_fresh(&self) -> bool {
        let now = now_ms();
        let checked = self.checked_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(checked) < REVALIDATE_AFTER.as_millis() as u64 {
            return true;
        }
        let fresh = lookup::unchanged(&self.path, &self.identity);
        if fresh {
            self.checked_at_ms.store(now, Ordering::Relaxed);
        }
        fresh
    }
}

/// The small-file cache of one static route, drawing on a shared budget.
#[derive(Debug)]
pub struct FileCache {
    budget: Arc<CacheBudget>,
    entries: RwLock<HashMap<Box<str>, Arc<CachedFile>>>,
}

impl FileCache {
    pub fn new(budget: Arc<CacheBudget>) -> FileCache {
        FileCache {
            budget,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn budget(&self) -> &CacheBudget {
        &self.budget
    }

    /// The cached file for `key` if it is still current on disk.
    pub fn get(&self, key: &str) -> Option<Arc<CachedFile>> {
        let entry = self.entries.read().ok()?.get(key).cloned()?;
        if entry.is_fresh() {
            entry.referenced.store(true, Ordering::Relaxed);
            Some(entry)
        } else {
            self.remove(key);
            None
        }
    }

    /// Caches `file` under `key` if the budget allows, evicting cold entries.
    pub fn insert(&self, key: &str, file: Arc<CachedFile>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if let Some(old) = entries.remove(key) {
            self.budget.release(old.cost(key));
        }
        let cost = file.cost(key);
        if !self.budget.reserve(cost) {
            self.sweep(&mut entries);
            if !self.budget.reserve(cost) {
                return;
            }
        }
        entries.insert(key.into(), file);
    }

    fn remove(&self, key: &str) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if let Some(old) = entries.remove(key) {
            self.budget.release(old.cost(key));
        }
    }

    /// One CLOCK pass: drop unreferenced entries, clear the mark on the rest.
    fn sweep(&self, entries: &mut HashMap<Box<str>, Arc<CachedFile>>) {
        entries.retain(|key, entry| {
            let keep = entry.referenced.swap(false, Ordering::Relaxed);
            if !keep {
                self.budget.release(entry.cost(key));
            }
            keep
        });
    }
}

impl Drop for FileCache {
    fn drop(&mut self) {
        let entries = self
            .entries
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for (key, entry) in entries {
            self.budget.release(entry.cost(&key));
        }
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, size: usize) -> Arc<CachedFile> {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; size]).expect("write");
        let meta = std::fs::metadata(&path).expect("stat");
        let identity = FileIdentity::of(&meta);
        let validators = Validators::new(&identity, name);
        Arc::new(CachedFile::new(
            path,
            identity,
            Bytes::from(vec![b'x'; size]),
            validators,
        ))
    }

    #[test]
    fn the_budget_bounds_the_cache_and_cold_entries_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = Arc::new(CacheBudget::new(3 * (1000 + 256 + 2), 1000));
        let cache = FileCache::new(Arc::clone(&budget));
        for name in ["/a", "/b", "/c"] {
            cache.insert(name, file(dir.path(), name.trim_start_matches('/'), 1000));
        }
        assert!(cache.get("/a").is_some());
        // Every entry is marked referenced on insert; one sweep clears the marks,
        // so "/d" is refused, then "/a" (used since) survives the next sweep.
        cache.insert("/d", file(dir.path(), "d", 1000));
        assert!(cache.get("/a").is_some());
        cache.insert("/e", file(dir.path(), "e", 1000));
        assert!(cache.get("/e").is_some());
        assert!(cache.get("/a").is_some());
        assert!(budget.used.load(Ordering::Relaxed) <= budget.limit);
        drop(cache);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_changed_file_is_noticed_after_the_revalidation_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = FileCache::new(Arc::new(CacheBudget::new(1 << 20, 1 << 16)));
        let entry = file(dir.path(), "a", 10);
        entry.checked_at_ms.store(0, Ordering::Relaxed);
        cache.insert("/a", entry);
        std::fs::write(dir.path().join("a"), "changed content").expect("rewrite");
        std::thread::sleep(REVALIDATE_AFTER + Duration::from_millis(50));
        assert!(cache.get("/a").is_none());
    }
}
