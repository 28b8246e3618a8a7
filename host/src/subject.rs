//! NATS subject syntax as the gateway checks it, once at the edges (config
//! load and guest publishes) so that nothing malformed reaches the
//! connection: [`validate_filter`] for what may be subscribed to,
//! [`validate_publish`] for what may be published to, and [`matches()`] for
//! the wildcard rules.

/// Why a subject is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject is the empty string.
    #[error("subject is empty")]
    Empty,
    /// It contains a space, tab or line break.
    #[error("subject {0:?} contains whitespace")]
    Whitespace(String),
    /// A token between dots is empty.
    #[error("subject {0:?} has an empty token (leading, trailing or double '.')")]
    EmptyToken(String),
    /// `*` or `>` in a subject to publish to.
    #[error("subject {0:?} uses a wildcard where a concrete subject is needed")]
    Wildcard(String),
    /// `>` anywhere but the last token.
    #[error("subject {0:?} uses '>' before its last token")]
    MisplacedTail(String),
}

fn check_tokens(subject: &str, allow_wildcards: bool) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(SubjectError::Whitespace(subject.to_string()));
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken(subject.to_string()));
        }
        let wildcard = token == "*" || token == ">";
        if wildcard && !allow_wildcards {
            return Err(SubjectError::Wildcard(subject.to_string()));
        }
        if token == ">" && tokens.peek().is_some() {
            return Err(SubjectError::MisplacedTail(subject.to_string()));
        }
    }
    Ok(())
}

/// A subject that may be subscribed to: wildcards `*` and a final `>` allowed.
pub fn validate_filter(subject: &str) -> Result<(), SubjectError> {
    check_tokens(subject, true)
}

/// A subject that may be published to: no wildcards.
///
/// On the hot path (every guest publish), so a valid subject is accepted in
/// one pass over its bytes; only a bad one goes through `check_tokens` to
/// say what is wrong.
pub fn validate_publish(subject: &str) -> Result<(), SubjectError> {
    let b = subject.as_bytes();
    let mut token_start = 0;
    let mut ok = !b.is_empty();
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            ok &= i > token_start && !is_wildcard(&b[token_start..i]);
            token_start = i + 1;
        } else {
            ok &= !c.is_ascii_whitespace();
        }
    }
    ok &= b.len() > token_start && !is_wildcard(&b[token_start..]);
    if ok {
        Ok(())
    } else {
        check_tokens(subject, false)
    }
}

fn is_wildcard(token: &[u8]) -> bool {
    token == b"*" || token == b">"
}

/// A queue group name: non-empty, no whitespace.
pub(crate) fn validate_queue(queue: &str) -> Result<(), String> {
    if queue.is_empty() {
        return Err("queue group is empty".into());
    }
    if queue.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(format!("queue group {queue:?} contains whitespace"));
    }
    Ok(())
}

/// Whether `subject` is matched by the subscription `filter` (NATS wildcard rules).
///
/// Every guest publish is checked against `publish_allow` with this, so it
/// walks bytes instead of `str::split`, whose searcher set-up cost more than
/// the short tokens of a subject (about 80 ns for `out.*.bench`).
pub fn matches(filter: &str, subject: &str) -> bool {
    if filter == ">" {
        return !subject.is_empty();
    }
    let mut f = Some(filter.as_bytes());
    let mut s = Some(subject.as_bytes());
    loop {
        match (next_token(&mut f), next_token(&mut s)) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `filter` matches is also matched by `pattern`: a
/// stream with subject `pattern` captures all of a binding on `filter`.
pub(crate) fn covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('.');
    let mut f = filter.split('.');
    loop {
        match (p.next(), f.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The next `.`-separated token of `rest`, as `str::split('.')` yields them.
fn next_token<'a>(rest: &mut Option<&'a [u8]>) -> Option<&'a [u8]> {
    let r = rest.take()?;
    match r.iter().position(|&c| c == b'.') {
        Some(dot) => {
            *rest = Some(&r[dot + 1..]);
            Some(&r[..dot])
        }
        None => Some(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_publish_subjects() {
        assert!(validate_filter("in.>").is_ok());
        assert!(validate_filter("in.*.x").is_ok());
        assert_eq!(validate_filter(""), Err(SubjectError::Empty));
        assert!(matches!(
            validate_filter("a..b"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_filter("a.>.b"),
            Err(SubjectError::MisplacedTail(_))
        ));
        assert!(matches!(
            validate_filter("a b"),
            Err(SubjectError::Whitespace(_))
        ));
        assert!(validate_publish("out.in.x").is_ok());
        assert!(matches!(
            validate_publish("out.*"),
            Err(SubjectError::Wildcard(_))
        ));
        for bad in [
            "", " ", "a b", "a.", ".a", "a..b", "*", ">", "a.*", "a.>.b", "a.*.b", "a\tb",
        ] {
            // The fast pass refuses exactly what the full check refuses, with its error.
            assert!(validate_publish(bad).is_err(), "{bad:?}");
            assert_eq!(validate_publish(bad), check_tokens(bad, false), "{bad:?}");
        }
        for good in ["a", "a.b", "out.in.x", "a.b*", "a.>b", "a-b.c_d"] {
            assert_eq!(validate_publish(good), Ok(()), "{good:?}");
            assert_eq!(check_tokens(good, false), Ok(()), "{good:?}");
        }
        assert!(validate_queue("workers").is_ok());
        assert!(validate_queue("a b").is_err());
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches(">", "in.a.b"));
        assert!(matches(">", "in"));
        assert!(matches("in.>", "in.a.b"));
        assert!(!matches("in.>", "in"));
        assert!(matches("in.*", "in.a"));
        assert!(!matches("in.*", "in.a.b"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.c"));
    }

    #[test]
    fn covering_filters() {
        assert!(covers(">", "in.>"));
        assert!(covers("in.>", "in.>"));
        assert!(covers("in.>", "in.a.*"));
        assert!(covers("in.*", "in.a"));
        assert!(covers("in.*", "in.*"));
        assert!(covers("in.*.x", "in.a.x"));
        assert!(!covers("in.*", "in.>"));
        assert!(!covers("in.a", "in.*"));
        assert!(!covers("in.>", "in"));
        assert!(!covers("other.>", "in.>"));
        assert!(!covers("in.a", "in.a.b"));
        // Against matching: on concrete subjects covering is matching.
        for (p, s) in [
            ("in.*", "in.a"),
            ("in.>", "in.a.b"),
            ("a", "a"),
            ("a.*", "a.b.c"),
        ] {
            assert_eq!(covers(p, s), matches(p, s), "{p} {s}");
        }
    }

    /// The matcher before it walked bytes, kept as the reference.
    fn split_matches(filter: &str, subject: &str) -> bool {
        if filter == ">" {
            return !subject.is_empty();
        }
        let mut f = filter.split('.');
        let mut s = subject.split('.');
        loop {
            match (f.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn byte_matcher_agrees_with_split_on_every_short_pair() {
        let tokens = ["a", "b", "ab", "*", ">", ""];
        let mut all = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = all
                .iter()
                .flat_map(|s| {
                    tokens.iter().map(move |t| {
                        if s.is_empty() {
                            t.to_string()
                        } else {
                            format!("{s}.{t}")
                        }
                    })
                })
                .collect();
            all.extend(longer);
        }
        all.sort();
        all.dedup();
        assert!(all.len() > 200, "{}", all.len());
        for f in &all {
            for s in &all {
                assert_eq!(matches(f, s), split_matches(f, s), "{f:?} vs {s:?}");
            }
        }
    }
}
