//! Secrets out of log lines: the one place where URLs are made safe to log.
//!
//! Endpoints come from operators (`telemetry.otlp_endpoint`, `OTEL_EXPORTER_OTLP_*`) and
//! may carry credentials: userinfo (`http://user:pass@host/`) or tokens in the query string
//! (`?api_key=...`). Whatever logs a URL, or an error message that may quote one (exporter
//! errors do), passes it through [`redact_url`] or [`redact_urls`]. Header values
//! (`Authorization`, `OTEL_EXPORTER_OTLP_HEADERS`) are never logged at all.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// `url` with its userinfo and every query value replaced by `***`:
/// `http://user:pass@host:4318/v1/traces?token=abc` → `http://***@host:4318/v1/traces?token=***`.
/// A string without `://` is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _)) => {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(REDACTED);
                    }
                    // A bare value (`?abcdef`) may itself be the token.
                    None if pair.is_empty() => {}
                    None => out.push_str(REDACTED),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

/// Characters that end a URL quoted inside free text (error messages, `Debug` output).
fn ends_url(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | '\\' | '`'
        )
}

/// `text` with every URL in it (`scheme://...`) passed through [`redact_url`].
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` before `://`.
        let start = rest[..i]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(i, |(j, _)| j);
        let end = rest[i + 3..]
            .find(ends_url)
            .map_or(rest.len(), |j| i + 3 + j);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_redacted() {
        assert_eq!(
            redact_url("http://user:secret@collector:4318/v1/traces?token=abc&x=1#frag"),
            "http://***@collector:4318/v1/traces?token=***&x=***#frag"
        );
        assert_eq!(redact_url("https://secret@h/"), "https://***@h/");
        assert_eq!(redact_url("http://h:4317?secret"), "http://h:4317?***");
        assert_eq!(redact_url("http://h:4317/?"), "http://h:4317/?");
        // An @ after the authority is not userinfo.
        assert_eq!(redact_url("http://h/p@q"), "http://h/p@q");
        assert_eq!(redact_url("http://otel:4317"), "http://otel:4317");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let e =
            "error sending request for url (http://u:secret@127.0.0.1:9/v1/traces?k=tok): refused";
        let r = redact_urls(e);
        assert_eq!(
            r,
            "error sending request for url (http://***@127.0.0.1:9/v1/traces?k=***): refused"
        );
        let dbg = r#"Some("grpc+tls://a:b@h:1") and "http://x:y@z""#;
        let r = redact_urls(dbg);
        assert!(!r.contains(":b@") && !r.contains(":y@"), "{r}");
        assert!(
            r.contains("grpc+tls://***@h:1") && r.contains("http://***@z"),
            "{r}"
        );
        assert!(matches!(redact_urls("no urls here"), Cow::Borrowed(_)));
        assert_eq!(redact_urls("ends with ://"), "ends with ://");
    }
}
