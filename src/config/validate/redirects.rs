//! A route's `redirect`, `rewrite` and `trailing_slash`.

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{RawRedirect, RawRewrite, RawRoute};
use crate::model::{Redirect, Rewrite, Target, TrailingSlash};

pub(super) fn redirect(check: &mut Checker, raw: &Spanned<RawRedirect>) -> Option<Redirect> {
    let raw = raw.get_ref();
    let status = match &raw.status {
        None => Some(Redirect::DEFAULT_STATUS),
        Some(status) => {
            let valid = u16::try_from(*status.get_ref())
                .ok()
                .filter(|code| Redirect::STATUSES.contains(code));
            if valid.is_none() {
                check.error(
                    status.span(),
                    ConfigError::BadRedirectStatus(*status.get_ref()),
                );
            }
            valid
        }
    };
    let to = match Target::parse(raw.to.get_ref()) {
        Ok(target) => Some(target),
        Err(error) => {
            check.error(raw.to.span(), error.into());
            None
        }
    };
    Some(Redirect {
        to: to?,
        status: status?,
    })
}

pub(super) fn rewrite(check: &mut Checker, raw: &Spanned<RawRewrite>) -> Option<Rewrite> {
    let raw = raw.get_ref();
    let rewrite = Rewrite {
        from: raw.from.get_ref().clone(),
        to: raw.to.get_ref().clone(),
    };
    let mut valid = true;
    match crate::redirects::Rewrite::compile(&rewrite) {
        Ok(compiled) => {
            for group in compiled.unknown_groups() {
                check.error(raw.to.span(), ConfigError::UnknownGroup(group));
                valid = false;
            }
        }
        Err(error) => {
            let error = ConfigError::BadRewritePattern(error.to_string());
            check.error(raw.from.span(), error);
            valid = false;
        }
    }
    let to = raw.to.get_ref();
    if !to.starts_with('/') || to.contains(['?', '#', '\\']) {
        check.error(raw.to.span(), ConfigError::RewriteNotPath);
        valid = false;
    }
    valid.then_some(rewrite)
}

pub(super) fn trailing_slash(
    check: &mut Checker,
    raw: &Spanned<String>,
    route: &RawRoute,
) -> Option<TrailingSlash> {
    let rule = match raw.get_ref().as_str() {
        "add" => TrailingSlash::Add,
        "remove" => TrailingSlash::Remove,
        other => {
            check.error(raw.span(), ConfigError::BadTrailingSlash(other.to_owned()));
            return None;
        }
    };
    if rule == TrailingSlash::Remove && route.static_files.is_some() {
        check.error(raw.span(), ConfigError::SlashRemovedFromStatic);
        return None;
    }
    Some(rule)
}
