//! One SQL text for both engines. Statements are written with `?` placeholders, each bound once
//! and in order. SQLite runs them as written; for PostgreSQL, [`stmt`] numbers them `$1, $2,
//! ...`. (SQLite takes `$NNN` too, but looks a named parameter up linearly on every bind: a
//! 2,000-parameter multi-row insert becomes quadratic, five times slower in all.) Each distinct
//! statement is numbered once and kept for the life of the process: the store has a fixed set of
//! statement shapes (a few hundred at most, multi-row statements included).

use std::collections::HashMap;

use crate::Backend;
use std::sync::{Mutex, OnceLock};

/// `text` as `backend` runs it: for PostgreSQL with its `?` placeholders numbered (a `?` inside a
/// quoted literal is left alone).
pub(crate) fn stmt(backend: Backend, text: &str) -> &str {
    match backend {
        Backend::Sqlite => text,
        Backend::Postgres => numbered(text),
    }
}

/// Who runs on this connection (a transaction's, in code that has no store at hand).
pub(crate) fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    match conn.backend_name() {
        "PostgreSQL" => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

fn numbered(text: &str) -> &'static str {
    static NUMBERED: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let cache = NUMBERED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(done) = cache.get(text) {
        return done;
    }
    let done: &'static str = Box::leak(number(text).into_boxed_str());
    cache.insert(text.to_owned(), done);
    done
}

fn number(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut n, mut quoted) = (0u32, false);
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_outside_literals() {
        assert_eq!(number("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)"), "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)");
        assert_eq!(number("UPDATE t SET a = 'it''s ?' WHERE b = ?"), "UPDATE t SET a = 'it''s ?' WHERE b = $1");
        assert!(std::ptr::eq(stmt(Backend::Postgres, "SELECT ?"), stmt(Backend::Postgres, "SELECT ?")), "numbered once");
        assert_eq!(stmt(Backend::Sqlite, "SELECT ?"), "SELECT ?");
    }
}
