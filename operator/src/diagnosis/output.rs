//! What the last lines of a failed `mall` process say, in one line. `mall migrate` and `mall serve` end
//! with anyhow's report on stderr (`Error: cannot open the auth database at mysql://mall:***@host:3306/…`,
//! then `Caused by:` and one numbered line per cause, the driver's own words last); their logs before
//! that are tracing's JSON lines. The database errors an operator can act on are named; anything else
//! is the deepest cause as printed.

/// What kind of failure a log tail shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The database refused the credentials.
    PasswordRefused,
    /// The database could not be reached (refused, unresolvable, no answer).
    Unreachable,
    Other,
}

/// One failure, explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explained {
    pub kind: Kind,
    pub text: String,
}

/// The longest line quoted from a log.
const MAX_LINE: usize = 160;

/// Explains the tail of a failed process's log. `database` is where the database is expected when the
/// log does not say (the managed MySQL's Service). `None` when the tail has nothing to quote.
pub fn explain(tail: &str, database: Option<&str>) -> Option<Explained> {
    let lines: Vec<String> = tail.lines().filter_map(meaningful).collect();
    let all = lines.join("\n");
    if let Some(user) = quoted_after(&all, "Access denied for user '") {
        let text = match quoted_after(&all, "to database '") {
            Some(db) => format!("database user {user} may not use database {db}"),
            None => format!("database refused the password for user {user}"),
        };
        return Some(Explained { kind: Kind::PasswordRefused, text });
    }
    if let Some(how) = unreachable(&all) {
        // The gateway and the services also wait for the cache at start: that is not the database.
        let lower = all.to_ascii_lowercase();
        if lower.contains("cannot reach the cache") || lower.contains("redis at") {
            return Some(Explained { kind: Kind::Other, text: format!("cache unreachable ({how})") });
        }
        let text = match address(&all).or_else(|| database.map(str::to_owned)) {
            Some(at) => format!("database unreachable at {at} ({how})"),
            None => format!("database unreachable ({how})"),
        };
        return Some(Explained { kind: Kind::Unreachable, text });
    }
    let last = lines.last()?;
    Some(Explained { kind: Kind::Other, text: shorten(last) })
}

/// A log line worth quoting, without anyhow's decoration; a JSON log line as its message (and error).
fn meaningful(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line == "Caused by:" {
        return None;
    }
    if line.starts_with('{')
        && let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
    {
        let field = |name: &str| {
            fields
                .get(name)
                .or_else(|| fields.get("fields").and_then(|f| f.get(name)))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        return match (field("message"), field("error")) {
            (Some(message), Some(error)) => Some(format!("{message}: {error}")),
            (Some(message), None) => Some(message),
            (None, error) => error,
        };
    }
    let line = line.strip_prefix("Error: ").unwrap_or(line);
    // "0: database error: …" under "Caused by:".
    let line = match line.split_once(": ") {
        Some((number, rest)) if !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    };
    Some(line.to_owned())
}

/// The text between `prefix` and the next `'`.
fn quoted_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let len = text[start..].find('\'')?;
    Some(text[start..start + len].to_owned())
}

/// How the database was unreachable, if the text says so (sqlx's and the OS's words).
fn unreachable(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&["connection refused"]) {
        Some("connection refused")
    } else if has(&[
        "failed to lookup address",
        "name or service not known",
        "temporary failure in name resolution",
        "no address associated",
    ]) {
        Some("name not resolved")
    } else if has(&[
        "did not answer within",
        "timed out",
        "pooltimedout",
        "no route to host",
        "network is unreachable",
    ]) {
        Some("no answer")
    } else {
        None
    }
}

/// `host:port` of the first database URL in `text` (3306 when it names no port).
fn address(text: &str) -> Option<String> {
    let start = ["mysql://", "mariadb://"].iter().find_map(|s| text.find(s).map(|i| i + s.len()))?;
    let rest = &text[start..];
    let authority = &rest[..rest.find(['/', '?', '#', ' ', '\n', '"', '\'']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && !p.contains(']'));
    Some(if has_port { host_port.to_owned() } else { format!("{host_port}:3306") })
}

/// `line`, cut to [`MAX_LINE`] characters.
pub(crate) fn shorten(line: &str) -> String {
    if line.chars().count() <= MAX_LINE {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(MAX_LINE - 1).collect();
    cut.push('…');
    cut
}
