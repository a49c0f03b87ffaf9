//! `error_pages`, global or on a route: statuses and the files, read here once.

use std::path::Path;

use bytes::Bytes;

use super::{Checker, ConfigError};
use crate::config::RawErrorPages;
use crate::model::{self, ErrorPage, ErrorPages, Material, StatusMatch};

/// Error pages are answers, not downloads: each is held in memory for
/// every route that names it.
const MAX_PAGE_SIZE: u64 = 1 << 20;

pub(super) fn pages(
    check: &mut Checker,
    raw: &Option<RawErrorPages>,
    base_dir: &Path,
) -> ErrorPages {
    let mut pages = Vec::new();
    for (status, file) in raw.iter().flatten() {
        // The key has no position of its own; its value is on its line.
        let Some(statuses) = StatusMatch::parse(status) else {
            check.error(file.span(), ConfigError::BadErrorStatus(status.clone()));
            continue;
        };
        let given = file.get_ref();
        let content = match read(&base_dir.join(given)) {
            Ok(content) => content,
            Err(error) => {
                let error = match error {
                    Unreadable::Io(source) => ConfigError::ErrorPageUnreadable {
                        given: given.clone(),
                        source,
                    },
                    Unreadable::TooLarge(size) => ConfigError::ErrorPageTooLarge {
                        given: given.clone(),
                        size,
                        limit: MAX_PAGE_SIZE,
                    },
                };
                check.error(file.span(), error);
                continue;
            }
        };
        pages.push(ErrorPage {
            statuses,
            file: given.clone(),
            fingerprint: model::fingerprint([content.as_ref()]),
            content: Material::new(content),
        });
    }
    ErrorPages { pages }
}

enum Unreadable {
    Io(std::io::Error),
    TooLarge(u64),
}

fn read(path: &Path) -> Result<Bytes, Unreadable> {
    let size = std::fs::metadata(path).map_err(Unreadable::Io)?.len();
    if size > MAX_PAGE_SIZE {
        return Err(Unreadable::TooLarge(size));
    }
    std::fs::read(path).map(Bytes::from).map_err(Unreadable::Io)
}
