//! A route's `compress`.

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::RawCompress;
use crate::model::{Coding, Compress};

pub(super) fn compress(check: &mut Checker, raw: &Spanned<RawCompress>) -> Option<Compress> {
    let raw = raw.get_ref();
    let mut valid = true;
    let mut codings: Vec<Coding> = Vec::new();
    match &raw.algorithms {
        None => codings.extend(Coding::ALL),
        Some(list) => {
            for name in list.get_ref() {
                match Coding::from_token(name.get_ref()) {
                    Some(coding) if codings.contains(&coding) => {
                        check.error(
                            name.span(),
                            ConfigError::RepeatedCoding(name.get_ref().clone()),
                        );
                        valid = false;
                    }
                    Some(coding) => codings.push(coding),
                    None => {
                        check.error(
                            name.span(),
                            ConfigError::UnknownCoding(name.get_ref().clone()),
                        );
                        valid = false;
                    }
                }
            }
            if list.get_ref().is_empty() {
                check.error(list.span(), ConfigError::NoCodings);
                valid = false;
            }
        }
    }
    let mut levels: Vec<(Coding, i32)> = codings
        .iter()
        .map(|&coding| (coding, coding.default_level()))
        .collect();
    for (name, level) in raw.levels.iter().flatten() {
        // The key has no position of its own; its value is on its line.
        let Some(coding) = Coding::from_token(name) else {
            check.error(level.span(), ConfigError::UnknownCoding(name.clone()));
            valid = false;
            continue;
        };
        let range = coding.levels();
        let given = *level.get_ref();
        match i32::try_from(given).ok().filter(|l| range.contains(l)) {
            Some(chosen) => match levels.iter_mut().find(|(c, _)| *c == coding) {
                Some(entry) => {
                    entry.1 = chosen;
                    let slow = match coding {
                        Coding::Brotli => chosen > 6,
                        Coding::Zstd => chosen > 9,
                        Coding::Gzip => false,
                    };
                    if slow {
                        let warning = ConfigError::SlowLevel {
                            coding: coding.token(),
                            level: chosen,
                        };
                        check.warn(level.span(), warning);
                    }
                }
                None => {
                    let error = ConfigError::LevelWithoutCoding(coding.token());
                    check.error(level.span(), error);
                    valid = false;
                }
            },
            None => {
                let error = ConfigError::BadLevel {
                    coding: coding.token(),
                    min: *range.start(),
                    max: *range.end(),
                    given,
                };
                check.error(level.span(), error);
                valid = false;
            }
        }
    }
    let min_size = check.size(&raw.min_size, Compress::DEFAULT_MIN_SIZE);
    let types = match &raw.types {
        None => Compress::DEFAULT_TYPES.map(str::to_owned).to_vec(),
        Some(list) if list.get_ref().is_empty() => {
            check.error(list.span(), ConfigError::NoTypes);
            valid = false;
            Vec::new()
        }
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|pattern| {
                let text = pattern.get_ref().to_ascii_lowercase();
                let ok = is_media_pattern(&text);
                if !ok {
                    check.error(
                        pattern.span(),
                        ConfigError::BadMediaType(pattern.get_ref().clone()),
                    );
                    valid = false;
                }
                ok.then_some(text)
            })
            .collect(),
    };
    valid.then_some(Compress {
        codings: levels,
        min_size,
        types,
    })
}

/// `type/subtype`, `type/*` or `type/*+suffix`, each part a token.
fn is_media_pattern(text: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let Some((kind, subtype)) = text.split_once('/') else {
        return false;
    };
    let subtype_ok =
        subtype == "*" || subtype.strip_prefix("*+").is_some_and(token) || token(subtype);
    token(kind) && subtype_ok
}
