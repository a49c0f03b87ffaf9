//! `auth = { ... }` on a route: the htpasswd file of basic auth, read and
//! checked here (weak hashes refused), and its realm.

use std::path::Path;

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::RawAuth;
use crate::credentials::Htpasswd;
use crate::model::{fingerprint, Auth, BasicAuth, Material};

pub(super) fn auth(
    check: &mut Checker,
    raw: &Spanned<RawAuth>,
    route: &str,
    base_dir: &Path,
) -> Option<Auth> {
    let auth = raw.get_ref();
    let Some(file) = &auth.basic else {
        check.error(raw.span(), ConfigError::AuthEmpty);
        return None;
    };
    let realm = match &auth.realm {
        None => route.to_owned(),
        Some(realm) => {
            // A quoted-string in WWW-Authenticate: no quote, backslash or control character.
            let quotable = realm
                .get_ref()
                .chars()
                .all(|c| !c.is_control() && c != '"' && c != '\\');
            if !quotable {
                check.error(realm.span(), ConfigError::BadRealm);
            }
            realm.get_ref().clone()
        }
    };
    let path = base_dir.join(file.get_ref());
    let given = file.get_ref().clone();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => {
            check.error(
                file.span(),
                ConfigError::HtpasswdUnreadable { given, source },
            );
            return None;
        }
    };
    let users = match Htpasswd::parse(&text) {
        Ok(users) => users,
        Err(error) => {
            check.error(file.span(), ConfigError::Htpasswd { given, error });
            return None;
        }
    };
    Some(Auth {
        basic: Some(BasicAuth {
            file: given,
            realm,
            fingerprint: fingerprint([text.as_bytes()]),
            users: Material::new(users),
        }),
    })
}
