//! What a plugin may address on NATS: the one rule every interface that takes
//! a subject from a guest goes through (`publisher`, the publishes a
//! `handle-batch` call returns, and `requester`).
//!
//! A grant is a list of subject patterns (`publish_allow`, `request_allow`). On top of the
//! plain NATS wildcard match, two rules keep the gateway's own connection from
//! becoming the plugin's:
//!
//! - **Reserved namespaces.** A subject whose first token starts with `$`
//!   (`$JS`, `$JSC`, `$KV`, `$O`, `$SYS`, `$NRG`, …) or is `_INBOX` belongs
//!   to the server and to request-reply. A wildcard first token (`>`, `*`)
//!   never reaches one: only a pattern that names the namespace literally
//!   (`$KV.settings.>`) does. Without this, the default grant of `>` let a
//!   plugin delete streams through `$JS.API` and query the server via `$SYS`.
//! - **Settlement is the host's.** No grant reaches `$JS.ACK`: a plugin
//!   settles its messages only through its handler's result, never by
//!   publishing to a message's ack subject (its own or another binding's).
//!
//! - **Headers that reach past the subject.** A few NATS headers make the
//!   server act on more than the message they ride on: `Nats-Rollup` purges
//!   a stream's other subjects, `Nats-Schedule*` publishes later to a target
//!   subject of its own. A plugin may not set them; malformed header names
//!   and values (which the client would panic on) are refused too.
//!
//! Replies the host sends for `ok(some(bytes))` are not publishes and do not
//! come through here, so `_INBOX` reply subjects keep working. But the reply
//! subject is the *sender's* choice, and the host publishes to it with its
//! own credentials: [`may_reply`] keeps a sender from pointing it at the
//! server's API (`$JS.API.STREAM.DELETE.…` as a reply-to).

use std::fmt;

/// The prefix of JetStream acknowledgement subjects (ack, nak, term, in-progress).
const SETTLEMENT: &str = "$JS.ACK";

/// Why a subject is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No pattern of the grant matches.
    NotGranted,
    /// The subject is in a reserved namespace that no pattern names literally.
    Reserved { namespace: String },
    /// A JetStream acknowledgement subject: never granted.
    Settlement,
}

impl Denied {
    /// The text a guest gets in `publish-error::forbidden`: the subject and the rule.
    pub fn reason(&self, subject: &str) -> String {
        match self {
            Denied::NotGranted => subject.to_string(),
            Denied::Reserved { namespace } => format!(
                "{subject}: {namespace} is a reserved namespace; wildcard grants do not reach it \
                 (grant a pattern starting with {namespace:?})"
            ),
            Denied::Settlement => format!(
                "{subject}: settling JetStream messages is the host's; no grant reaches {SETTLEMENT}"
            ),
        }
    }
}

/// The reserved namespace `subject` (or pattern) lies in: its first token
/// when that starts with `$`, or `_INBOX`.
pub fn reserved_namespace(subject: &str) -> Option<&str> {
    let first = subject.split('.').next().unwrap_or_default();
    (first.starts_with('$') || first == "_INBOX").then_some(first)
}

fn is_settlement(subject: &str) -> bool {
    subject == SETTLEMENT
        || subject
            .strip_prefix(SETTLEMENT)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `pattern` names a settlement subject literally (`$JS.ACK...`):
/// such a pattern can never grant anything, so the config refuses it.
pub fn names_settlement(pattern: &str) -> bool {
    is_settlement(pattern)
}

/// Whether one grant pattern reaches `subject`: the NATS match, except that a
/// reserved subject needs the pattern's first token to be literal.
pub fn reaches(pattern: &str, subject: &str) -> bool {
    if reserved_namespace(subject).is_some() {
        let first = pattern.split('.').next().unwrap_or_default();
        if first == "*" || first == ">" {
            return false;
        }
    }
    crate::subject::matches(pattern, subject)
}

/// Check `subject` against the grant `patterns`.
pub fn check(patterns: &[String], subject: &str) -> Result<(), Denied> {
    // The common case first: a subject outside every reserved namespace.
    let reserved = reserved_namespace(subject);
    if reserved.is_none() {
        return if patterns.iter().any(|p| crate::subject::matches(p, subject)) {
            Ok(())
        } else {
            Err(Denied::NotGranted)
        };
    }
    if is_settlement(subject) {
        return Err(Denied::Settlement);
    }
    if patterns.iter().any(|p| reaches(p, subject)) {
        return Ok(());
    }
    match reserved {
        Some(namespace) if patterns.iter().any(|p| crate::subject::matches(p, subject)) => {
            // A wildcard would have matched: say which rule refused it.
            Err(Denied::Reserved {
                namespace: namespace.to_string(),
            })
        }
        _ => Err(Denied::NotGranted),
    }
}

/// Whether the host may send a reply (or error reply) to a reply subject a
/// sender chose: anything but a `$` namespace (`_INBOX` and ordinary
/// subjects are what requesters use).
pub fn may_reply(to: &str) -> bool {
    !to.starts_with('$')
}

/// Header names a plugin may not set (compared case-insensitively; a name
/// ending in `*` is a prefix).
const RESERVED_HEADERS: &[&str] = &["Nats-Rollup", "Nats-Schedule*"];

/// Why a header of a publish is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderDenied {
    /// Not a NATS header: the text says why.
    Malformed(String),
    /// A header that makes the server act beyond the message.
    Reserved(String),
}

/// Check one header a plugin wants to publish with.
pub fn check_header(name: &str, value: &str) -> Result<(), HeaderDenied> {
    use std::str::FromStr;
    if name.is_empty() || async_nats::HeaderName::from_str(name).is_err() {
        return Err(HeaderDenied::Malformed(format!(
            "header name {name:?} is not a NATS header name (ASCII, no ':' or control characters)"
        )));
    }
    if async_nats::HeaderValue::from_str(value).is_err() {
        return Err(HeaderDenied::Malformed(format!(
            "the value of header {name:?} contains a line break"
        )));
    }
    let reserved = RESERVED_HEADERS.iter().any(|r| match r.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        None => name.eq_ignore_ascii_case(r),
    });
    if reserved {
        return Err(HeaderDenied::Reserved(format!(
            "header {name}: it makes the server act beyond this message; no grant reaches it"
        )));
    }
    Ok(())
}

/// Something about a grant an operator should look at (`wasmgate check`
/// prints these, `run` logs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `>`: every subject outside the reserved namespaces.
    Unrestricted { key: String },
    /// A pattern that names a reserved namespace literally.
    Reserved {
        key: String,
        pattern: String,
        namespace: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Unrestricted { key } => write!(
                f,
                "{key} = \">\" lets it {} any subject outside the reserved namespaces; \
                 list only the subjects it needs",
                if key.starts_with("request_allow") {
                    "send requests to"
                } else {
                    "publish to"
                }
            ),
            Warning::Reserved {
                key,
                pattern,
                namespace,
            } => write!(
                f,
                "{key} {pattern:?} grants the reserved namespace {namespace}: the plugin can \
                 reach the server's own API there"
            ),
        }
    }
}

/// The warnings for one grant list; `key` names it (e.g. `publish_allow`).
pub fn warnings(key: &str, patterns: &[String]) -> Vec<Warning> {
    let mut out = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        if pattern == ">" {
            out.push(Warning::Unrestricted {
                key: key.to_string(),
            });
        } else if let Some(namespace) = reserved_namespace(pattern) {
            out.push(Warning::Reserved {
                key: format!("{key}[{i}]"),
                pattern: pattern.clone(),
                namespace: namespace.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(patterns: &[&str]) -> Vec<String> {
        patterns.iter().map(|p| p.to_string()).collect()
    }

    const RESERVED: &[&str] = &[
        "$JS.API.STREAM.DELETE.orders",
        "$JS.API.INFO",
        "$JSC.R.abc",
        "$KV.b.k",
        "$O.bucket.C.x",
        "$SYS.REQ.SERVER.PING",
        "$NRG.AE.x",
        "$G",
        "$ANYTHING.new.namespace",
        "_INBOX.abc.1",
        "_INBOX",
    ];

    #[test]
    fn no_wildcard_form_reaches_a_reserved_namespace() {
        let wildcards = [
            ">",
            "*",
            "*.>",
            "*.*",
            "*.*.>",
            "*.*.*",
            "*.*.*.*",
            "*.*.*.*.*",
            "*.*.*.*.>",
            "*.API.>",
            "*.b.k",
            "*.REQ.SERVER.PING",
        ];
        for subject in RESERVED {
            for w in wildcards {
                assert!(!reaches(w, subject), "{w:?} reached {subject:?}");
            }
            assert!(
                check(&grant(&wildcards), subject).is_err(),
                "all wildcards together reached {subject:?}"
            );
        }
        assert_eq!(
            check(&grant(&[">"]), "$JS.API.STREAM.DELETE.orders"),
            Err(Denied::Reserved {
                namespace: "$JS".into()
            })
        );
        assert_eq!(
            check(&grant(&["*.*.*"]), "_INBOX.abc.1"),
            Err(Denied::Reserved {
                namespace: "_INBOX".into()
            })
        );
        assert_eq!(
            check(&grant(&["out.>"]), "$SYS.REQ.SERVER.PING"),
            Err(Denied::NotGranted)
        );
    }

    #[test]
    fn wildcards_still_reach_everything_else() {
        for subject in [
            "out.x",
            "a",
            "JS.API.x",
            "x.$JS.API",
            "INBOX.x",
            "_INBOXES.x",
            "$",
        ] {
            let expect_ok = !subject.starts_with('$');
            assert_eq!(
                check(&grant(&[">"]), subject).is_ok(),
                expect_ok,
                "{subject}"
            );
        }
        assert!(check(&grant(&["*.$JS"]), "x.$JS").is_ok());
        assert!(check(&grant(&["out.*"]), "out.x").is_ok());
        assert_eq!(
            check(&grant(&["out.*"]), "out.x.y"),
            Err(Denied::NotGranted)
        );
        assert_eq!(check(&grant(&[]), "out.x"), Err(Denied::NotGranted));
    }

    #[test]
    fn a_literal_first_token_grants_its_namespace() {
        assert!(check(&grant(&["$KV.settings.>"]), "$KV.settings.color").is_ok());
        assert_eq!(
            check(&grant(&["$KV.settings.>"]), "$KV.other.color"),
            Err(Denied::NotGranted)
        );
        assert!(check(&grant(&["$KV.>"]), "$KV.any.key").is_ok());
        assert!(check(&grant(&["$KV.*.k"]), "$KV.b.k").is_ok());
        assert!(check(&grant(&["_INBOX.>"]), "_INBOX.abc").is_ok());
        assert!(check(&grant(&["$SYS.REQ.SERVER.PING"]), "$SYS.REQ.SERVER.PING").is_ok());
        // A literal namespace grants only itself.
        assert_eq!(
            check(&grant(&["$KV.>"]), "$JS.API.INFO"),
            Err(Denied::NotGranted)
        );
    }

    #[test]
    fn settlement_subjects_are_never_granted() {
        let ack = "$JS.ACK.orders.worker.1.5.5.1700000000000000000.0";
        for g in [&[">"][..], &["$JS.>"], &["$JS.ACK.>"], &["$JS.*.>"], &[ack]] {
            assert_eq!(check(&grant(g), ack), Err(Denied::Settlement), "{g:?}");
        }
        assert_eq!(
            check(&grant(&["$JS.>"]), "$JS.ACK"),
            Err(Denied::Settlement)
        );
        // Only the ACK token itself: a stream API subject is not settlement.
        assert!(check(&grant(&["$JS.>"]), "$JS.ACKS.x").is_ok());
        assert!(check(&grant(&["$JS.>"]), "$JS.API.INFO").is_ok());
        assert!(names_settlement("$JS.ACK.>"));
        assert!(!names_settlement("$JS.>"));
        assert!(Denied::Settlement.reason(ack).contains("$JS.ACK"));
    }

    #[test]
    fn reasons_name_the_rule() {
        let r = Denied::Reserved {
            namespace: "$JS".into(),
        }
        .reason("$JS.API.INFO");
        assert!(
            r.starts_with("$JS.API.INFO: $JS is a reserved namespace"),
            "{r}"
        );
        assert_eq!(Denied::NotGranted.reason("secret.x"), "secret.x");
    }

    #[test]
    fn replies_never_go_to_a_dollar_namespace() {
        assert!(may_reply("_INBOX.abc.1"));
        assert!(may_reply("reply.here"));
        assert!(!may_reply("$JS.API.STREAM.DELETE.ORDERS"));
        assert!(!may_reply("$JS.ACK.S.C.1.1.1.1.0"));
        assert!(!may_reply("$SYS.REQ.SERVER.PING"));
    }

    #[test]
    fn headers_that_reach_past_the_message_or_break_the_client_are_refused() {
        assert_eq!(check_header("X-Trace", "abc"), Ok(()));
        assert_eq!(check_header("Nats-Msg-Id", "in-1"), Ok(()));
        assert_eq!(check_header("Nats-Expected-Stream", "OUT"), Ok(()));
        for reserved in [
            "Nats-Rollup",
            "nats-rollup",
            "Nats-Schedule",
            "Nats-Schedule-Target",
        ] {
            assert!(
                matches!(
                    check_header(reserved, "all"),
                    Err(HeaderDenied::Reserved(_))
                ),
                "{reserved}"
            );
        }
        for (name, value) in [
            ("a:b", "x"),
            ("", "x"),
            ("ä", "x"),
            ("a\nb", "x"),
            ("ok", "x\r\ny"),
        ] {
            assert!(
                matches!(check_header(name, value), Err(HeaderDenied::Malformed(_))),
                "{name:?}: {value:?}"
            );
        }
    }

    #[test]
    fn warnings_for_unrestricted_and_reserved_grants() {
        let w = warnings("publish_allow", &grant(&[">", "out.>", "$KV.settings.>"]));
        assert_eq!(
            w,
            vec![
                Warning::Unrestricted {
                    key: "publish_allow".into()
                },
                Warning::Reserved {
                    key: "publish_allow[2]".into(),
                    pattern: "$KV.settings.>".into(),
                    namespace: "$KV".into()
                }
            ]
        );
        assert!(warnings("publish_allow", &grant(&["out.>", "*.x"])).is_empty());
    }
}
