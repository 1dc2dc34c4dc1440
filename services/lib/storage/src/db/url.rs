//! Database URL helpers: which backend a URL names, one database per service
//! derived from a shared base URL, SQLite file URLs, and password redaction.
//!
//! Plain string handling on purpose: the formats involved are small, and
//! SQLite's `sqlite:` URLs are not well served by generic URL parsers.

use std::path::{Path, PathBuf};

use super::Backend;
use crate::StorageError;

/// A URL for the SQLite file `<dir>/<service>.db`, created if missing (`?mode=rwc`).
///
/// Absolute directories give `sqlite:///abs/dir/<service>.db?mode=rwc`,
/// relative ones `sqlite:rel/dir/<service>.db?mode=rwc`. Characters that have a
/// meaning in URLs (`%`, `?`, `#`, space) are percent-encoded.
pub fn sqlite_url_in(dir: &Path, service: &str) -> String {
    let path = dir.join(format!("{service}.db"));
    let text = path.to_string_lossy();
    let mut encoded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            ' ' => encoded.push_str("%20"),
            c => encoded.push(c),
        }
    }
    let scheme = if path.is_absolute() { "sqlite://" } else { "sqlite:" };
    format!("{scheme}{encoded}?mode=rwc")
}

/// The URL of `service`'s own database, derived from one base URL shared by
/// every service.
///
/// * MySQL/MariaDB: the database name gets `_<service>` appended
///   (`mysql://u:p@h:3306/mall?x=y` + `auth` → `mysql://u:p@h:3306/mall_auth?x=y`);
///   without a database name in the base, `mall_<service>` is used.
/// * SQLite: the file stem gets `_<service>` appended, keeping directory,
///   extension and query (`sqlite:///data/mall.db?mode=rwc` →
///   `sqlite:///data/mall_auth.db?mode=rwc`). In-memory URLs are returned
///   unchanged: every pool gets its own in-memory database anyway.
///
/// `service` must be 1–32 ASCII letters, digits or `_`.
pub fn service_database_url(base: &str, service: &str) -> Result<String, StorageError> {
    check_name(service, 32, "service name")?;
    let stem = match Backend::from_url(base)? {
        Backend::MySql => {
            let parts = MySqlParts::split(base)?;
            let db = parts.database.trim_matches('/');
            if db.is_empty() { "mall".to_string() } else { db.to_string() }
        }
        Backend::Sqlite => {
            let parts = SqliteParts::split(base)?;
            if parts.is_memory() {
                return Ok(base.to_string());
            }
            parts.file_stem(base)?.to_string()
        }
    };
    replace_database(base, &format!("{stem}_{service}"))
}

/// `url` with its database replaced by `name`: the MySQL database name, or the
/// SQLite file stem (directory, extension and query are kept; in-memory SQLite
/// URLs are returned unchanged).
///
/// `name` must be 1–64 ASCII letters, digits or `_`. Tests use this with
/// `mall_testkit::unique_name("mall_t")` to get a throw-away database.
pub fn database_url_with_name(url: &str, name: &str) -> Result<String, StorageError> {
    check_name(name, 64, "database name")?;
    replace_database(url, name)
}

fn replace_database(url: &str, name: &str) -> Result<String, StorageError> {
    match Backend::from_url(url)? {
        Backend::MySql => {
            let p = MySqlParts::split(url)?;
            Ok(format!("{}/{name}{}", p.scheme_authority, p.rest))
        }
        Backend::Sqlite => {
            let p = SqliteParts::split(url)?;
            if p.is_memory() {
                return Ok(url.to_string());
            }
            let stem = p.file_stem(url)?;
            let file = p.file_name();
            let dir = &p.path[..p.path.len() - file.len()];
            let extension = &file[stem.len()..];
            Ok(format!("{}{dir}{name}{extension}{}", p.scheme, p.query))
        }
    }
}

/// `url` with the password of its userinfo (`user:password@`) replaced by
/// `***`; URLs without a password are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let start = scheme_end + 3;
    let authority_len = url[start..].find(['/', '?', '#']).unwrap_or(url.len() - start);
    let authority = &url[start..start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    format!("{}{}:***{}", &url[..start], &userinfo[..colon], &url[start + at..])
}

/// The database name of a MySQL URL; an error when there is none or when it
/// has characters other than ASCII letters, digits, `_`, `$` and `-`.
pub(crate) fn mysql_database_name(url: &str) -> Result<&str, StorageError> {
    let name = MySqlParts::split(url)?.database.trim_matches('/');
    let reason = if name.is_empty() {
        "the URL names no database (derive one with service_database_url)"
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-')) {
        "the database name may only have ASCII letters, digits, '_', '$' and '-'"
    } else {
        return Ok(name);
    };
    Err(StorageError::InvalidUrl { url: redact_url(url), reason: reason.into() })
}

/// The SQLite file a URL points at, percent-decoded, or `None` for in-memory databases.
pub(crate) fn sqlite_file_path(url: &str) -> Result<Option<PathBuf>, StorageError> {
    let p = SqliteParts::split(url)?;
    if p.is_memory() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(percent_decode(p.path))))
}

/// `url` with `mode=rwc` added when it names no `mode`, so the file is created if missing.
pub(crate) fn sqlite_with_create_mode(url: &str) -> Result<String, StorageError> {
    let p = SqliteParts::split(url)?;
    let has_mode = p.query.trim_start_matches('?').split('&').any(|kv| kv.starts_with("mode="));
    Ok(match (has_mode, p.query.is_empty()) {
        (true, _) => url.to_string(),
        (false, true) => format!("{url}?mode=rwc"),
        (false, false) => format!("{url}&mode=rwc"),
    })
}

/// An identifier that may be spliced into SQL: 1 to `max` ASCII letters, digits or `_`.
pub(super) fn check_name(name: &str, max: usize, what: &str) -> Result<(), StorageError> {
    let ok =
        !name.is_empty() && name.len() <= max && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidArgument(format!(
            "{what} {name:?} must be 1-{max} ASCII letters, digits or '_'"
        )))
    }
}

/// `scheme://authority` + `/database` + `?query#fragment`.
struct MySqlParts<'a> {
    scheme_authority: &'a str,
    database: &'a str,
    rest: &'a str,
}

impl<'a> MySqlParts<'a> {
    fn split(url: &'a str) -> Result<Self, StorageError> {
        let start = url.find("://").map(|i| i + 3).ok_or_else(|| StorageError::InvalidUrl {
            url: redact_url(url),
            reason: "expected `mysql://[user[:password]@]host[:port][/database]`".into(),
        })?;
        let after = &url[start..];
        let authority_end = start + after.find(['/', '?', '#']).unwrap_or(after.len());
        let rest_start =
            authority_end + url[authority_end..].find(['?', '#']).unwrap_or(url.len() - authority_end);
        let database = &url[authority_end..rest_start];
        if database.trim_matches('/').contains('/') {
            return Err(StorageError::InvalidUrl {
                url: redact_url(url),
                reason: "the database name must not contain '/'".into(),
            });
        }
        Ok(MySqlParts { scheme_authority: &url[..authority_end], database, rest: &url[rest_start..] })
    }
}

/// `sqlite://` or `sqlite:` + path + `?query`.
struct SqliteParts<'a> {
    scheme: &'a str,
    path: &'a str,
    query: &'a str,
}

impl<'a> SqliteParts<'a> {
    fn split(url: &'a str) -> Result<Self, StorageError> {
        let scheme_len = if url.starts_with("sqlite://") {
            "sqlite://".len()
        } else if url.starts_with("sqlite:") {
            "sqlite:".len()
        } else {
            return Err(StorageError::UnsupportedUrl { url: redact_url(url) });
        };
        let query_start = url.find('?').unwrap_or(url.len());
        if query_start < scheme_len {
            return Err(StorageError::UnsupportedUrl { url: redact_url(url) });
        }
        Ok(SqliteParts {
            scheme: &url[..scheme_len],
            path: &url[scheme_len..query_start],
            query: &url[query_start..],
        })
    }

    fn is_memory(&self) -> bool {
        self.path.is_empty() && self.query.is_empty()
            || self.path == ":memory:"
            || self.query.trim_start_matches('?').split('&').any(|kv| kv == "mode=memory")
    }

    fn file_name(&self) -> &'a str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }

    fn file_stem(&self, url: &str) -> Result<&'a str, StorageError> {
        let file = self.file_name();
        let stem = match file.rfind('.') {
            Some(dot) if dot > 0 => &file[..dot],
            _ => file,
        };
        if stem.is_empty() {
            return Err(StorageError::InvalidUrl {
                url: redact_url(url),
                reason: "the SQLite URL names no file".into(),
            });
        }
        Ok(stem)
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
