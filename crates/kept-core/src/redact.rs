//! Database URLs as they may be shown: passwords replaced, in the URL and in a driver's
//! messages about it. Pure string work, shared by the PostgreSQL store and the connectors.

/// `url` with any password (in the user info, or a `password=` or `sslpassword=` parameter)
/// replaced by `***`. The one redactor of database URLs: the server's configuration, the
/// PostgreSQL store and the connectors to the company's own databases show URLs through it.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    for (start, end) in password_spans(url).into_iter().rev() {
        out.replace_range(start..end, "***");
    }
    out
}

/// Byte ranges of `url` that hold a password. Over-matching is harmless, missing one is not, and
/// a password that should have been percent-encoded often is not, so the user info runs from
/// the scheme (or the start, when `://` is missing) to the last `@` before the query, or to the
/// last `@` of all when none comes before a `?` (a `?` in the password).
fn password_spans(url: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let user_start = url.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let rest = url.get(user_start..).unwrap_or_default();
    let before_query = rest.find('?').unwrap_or(rest.len());
    let at = rest
        .get(..before_query)
        .and_then(|head| head.rfind('@'))
        .or_else(|| rest.rfind('@'));
    let mut after_user = user_start;
    if let Some(at) = at
        && let Some(colon) = rest.get(..at).and_then(|userinfo| userinfo.find(':'))
    {
        spans.push((user_start + colon + 1, user_start + at));
        after_user = user_start + at + 1;
    }
    let Some(query) = url.get(after_user..).and_then(|tail| tail.find('?')) else {
        return spans;
    };
    let mut offset = after_user + query + 1;
    for pair in url.get(offset..).unwrap_or_default().split('&') {
        if let Some((k, v)) = pair.split_once('=')
            && k.to_ascii_lowercase().contains("password")
            && !v.is_empty()
        {
            let start = offset + k.len() + 1;
            spans.push((start, start + v.len()));
        }
        offset += pair.len() + 1;
    }
    spans
}

/// Removes `url`'s password, as written and percent-decoded, from a driver message.
pub fn scrub(message: &str, url: &str) -> String {
    let mut out = message.to_string();
    for (start, end) in password_spans(url) {
        if let Some(raw) = url.get(start..end) {
            for secret in [raw.to_string(), percent_decode(raw)] {
                if !secret.is_empty() {
                    out = out.replace(&secret, "***");
                }
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub};

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://kept:s3cret@db:5432/kept"),
            "postgres://kept:***@db:5432/kept"
        );
        assert_eq!(
            redact_url("postgresql://kept:p@ss@db/kept?sslmode=require"),
            "postgresql://kept:***@db/kept?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/kept?user=kept&password=s3cret"),
            "postgres://db/kept?user=kept&password=***"
        );
        assert_eq!(
            redact_url("postgres://kept:pa/ss@db/kept"),
            "postgres://kept:***@db/kept"
        );
        assert_eq!(
            scrub("auth failed for p@ss w/ p%40ss", "postgres://k:p%40ss@db/x"),
            "auth failed for *** w/ ***"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }
}
