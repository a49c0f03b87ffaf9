//! Watches the directories of the config file and of the files it names.
//! Watching directories, not files, is what sees editors that save by
//! renaming a new file over the old one, and Kubernetes, which updates a
//! mounted ConfigMap or Secret by swapping the `..data` symlink next to it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A save is several events (write, rename, chmod; a ConfigMap update is a
/// dozen): the reload waits for this much quiet after the last one.
const QUIET: Duration = Duration::from_millis(250);

/// The file watch; without one (no inotify instance left), reloads come
/// from `SIGHUP` only.
pub struct Watch {
    watcher: Option<RecommendedWatcher>,
    wanted: Arc<Mutex<Wanted>>,
    events: mpsc::UnboundedReceiver<()>,
}

/// The paths whose changes are a reason to reload.
#[derive(Debug, Default)]
struct Wanted {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Wanted {
    fn new(config: &Path, referenced: &[PathBuf]) -> Wanted {
        let mut wanted = Wanted::default();
        for file in std::iter::once(config).chain(referenced.iter().map(PathBuf::as_path)) {
            let Ok(file) = std::path::absolute(file) else {
                continue;
            };
            // A symlinked file is edited where it points to.
            let target = std::fs::canonicalize(&file).ok();
            for file in std::iter::once(file).chain(target) {
                if let Some(dir) = file.parent() {
                    wanted.dirs.insert(dir.to_path_buf());
                }
                wanted.files.insert(file);
            }
        }
        wanted
    }

    fn matches(&self, event: &Event) -> bool {
        // Reading a file (the reload itself does) is no change.
        let reads = matches!(
            event.kind,
            EventKind::Access(AccessKind::Open(_) | AccessKind::Read)
                | EventKind::Access(AccessKind::Close(AccessMode::Read))
        );
        !reads && event.paths.iter().any(|path| self.is_wanted(path))
    }

    fn is_wanted(&self, path: &Path) -> bool {
        if self.files.contains(path) {
            return true;
        }
        // Kubernetes' atomic writer: `..data` and the `..2026_…` directories.
        let swapped = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(".."));
        swapped && path.parent().is_some_and(|dir| self.dirs.contains(dir))
    }
}

impl Watch {
    /// Watches the directories of `config` and of the files it references.
    pub fn start(config: &Path, referenced: &[PathBuf]) -> Watch {
        let (sender, events) = mpsc::unbounded_channel();
        let wanted = Arc::new(Mutex::new(Wanted::default()));
        let filter = Arc::clone(&wanted);
        let handler = move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let wanted = filter.lock().unwrap_or_else(PoisonError::into_inner);
                if wanted.matches(&event) {
                    let _ = sender.send(());
                }
            }
            Err(error) => tracing::warn!(%error, "file watch error"),
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP");
                None
            }
        };
        let mut watch = Watch {
            watcher,
            wanted,
            events,
        };
        watch.watch(config, referenced);
        watch
    }

    /// Changes what is watched, after a reload that may name other files.
    pub fn watch(&mut self, config: &Path, referenced: &[PathBuf]) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        let next = Wanted::new(config, referenced);
        let mut wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        for dir in wanted.dirs.difference(&next.dirs) {
            let _ = watcher.unwatch(dir);
        }
        for dir in next.dirs.difference(&wanted.dirs) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch directory; reload with SIGHUP");
            }
        }
        *wanted = next;
    }

    /// Resolves once a watched file changed and the burst of events is over.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            return std::future::pending().await;
        }
        while let Ok(Some(())) = tokio::time::timeout(QUIET, self.events.recv()).await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_changes_to_wanted_files_count() {
        let wanted = Wanted::new(
            Path::new("/etc/wsgate/wsgate.toml"),
            &[PathBuf::from("/etc/wsgate/certs/site.pem")],
        );
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(wanted.matches(&event(rename, "/etc/wsgate/wsgate.toml")));
        assert!(wanted.matches(&event(
            EventKind::Create(CreateKind::File),
            "/etc/wsgate/certs/site.pem"
        )));
        assert!(
            wanted.matches(&event(rename, "/etc/wsgate/..data")),
            "a ConfigMap update swaps ..data"
        );
        assert!(!wanted.matches(&event(rename, "/etc/wsgate/.wsgate.toml.swp")));
        assert!(!wanted.matches(&event(rename, "/etc/other/..data")));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(
            !wanted.matches(&event(read, "/etc/wsgate/wsgate.toml")),
            "the reload's own read"
        );
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(wanted.matches(&event(written, "/etc/wsgate/wsgate.toml")));
    }
}
