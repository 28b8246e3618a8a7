//! Which of a round's subscriptions the server refused. A server answers a
//! refused `SUB` with an `-ERR` and keeps the connection: a permissions
//! violation names the subject (and queue group), `maximum subscriptions
//! exceeded` names nothing. The server checks permissions first and then the
//! limit, and answers in order, so once the connection is at its limit every
//! later subscription in the round is refused: the last ones the limit
//! errors count, leaving out those refused for permissions.

use std::collections::HashMap;

/// One binding's subscriptions in a round, in the order they were made.
pub(super) struct Made<'a> {
    pub index: usize,
    pub subject: &'a str,
    /// The binding's own queue group (`None`: none, or a private one).
    pub queue: Option<&'a str>,
    /// How many subscriptions it made (one per worker).
    pub subs: usize,
}

/// The bindings the errors refuse, each with the server's words. `lost`
/// counts errors of the round that are no longer kept: they are taken as
/// limit errors (a round loses texts only when thousands were refused).
pub(super) fn refused(errors: &[String], lost: u64, made: &[Made<'_>]) -> HashMap<usize, String> {
    let mut out = violations(errors, made);
    let mut over_limit = lost as usize;
    let mut limit_text = None;
    for e in errors {
        if e.to_ascii_lowercase()
            .contains("maximum subscriptions exceeded")
        {
            over_limit += 1;
            limit_text.get_or_insert_with(|| e.clone());
        }
    }
    let limit_text = limit_text.unwrap_or_else(|| "maximum subscriptions exceeded".to_string());
    // A refused binding's other subscriptions were made and count toward the
    // limit; only those the permissions refused did not.
    let permitted: Vec<&Made<'_>> = made
        .iter()
        .filter(|m| !out.contains_key(&m.index))
        .collect();
    for m in permitted.iter().rev() {
        if over_limit == 0 {
            break;
        }
        over_limit = over_limit.saturating_sub(m.subs);
        out.insert(
            m.index,
            format!("the server refused the subscription: {limit_text}"),
        );
    }
    out
}

/// The bindings a permissions violation among `errors` names.
pub(super) fn violations(errors: &[String], made: &[Made<'_>]) -> HashMap<usize, String> {
    let mut out = HashMap::new();
    for e in errors {
        let Some((subject, queue)) = subscription_violation(e) else {
            continue;
        };
        for m in made {
            let same_queue = match (queue, m.queue) {
                (None, None) => true,
                (Some(q), Some(mine)) => q == mine,
                // A private group is the gateway's own name for the
                // binding's workers.
                (Some(q), None) => q.starts_with("_wasmgate."),
                (None, Some(_)) => false,
            };
            if m.subject == subject && same_queue {
                out.entry(m.index).or_insert_with(|| e.clone());
            }
        }
    }
    out
}

/// Whether a server error refuses a subscription (one a binding reports).
pub(super) fn is_subscription_refusal(e: &str) -> bool {
    subscription_violation(e).is_some()
        || e.to_ascii_lowercase()
            .contains("maximum subscriptions exceeded")
}

/// `Permissions Violation for Subscription to "S"` (with ` using queue "Q"`).
fn subscription_violation(e: &str) -> Option<(&str, Option<&str>)> {
    const PREFIX: &str = "permissions violation for subscription to \"";
    let start = e.to_ascii_lowercase().find(PREFIX)? + PREFIX.len();
    let rest = &e[start..];
    let end = rest.find('"')?;
    let subject = &rest[..end];
    let queue = rest[end + 1..]
        .strip_prefix(" using queue \"")
        .and_then(|q| q.find('"').map(|i| &q[..i]));
    Some((subject, queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(list: &[(usize, &'static str, Option<&'static str>, usize)]) -> Vec<Made<'static>> {
        list.iter()
            .map(|&(index, subject, queue, subs)| Made {
                index,
                subject,
                queue,
                subs,
            })
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_errors_refuse_nothing() {
        let m = made(&[(0, "a", None, 1), (1, "b", None, 1)]);
        assert!(refused(&[], 0, &m).is_empty());
    }

    #[test]
    fn a_violation_refuses_the_binding_it_names() {
        let m = made(&[(0, "a", None, 1), (1, "b", None, 1), (2, "b", Some("q"), 1)]);
        let r = refused(
            &strings(&["Permissions Violation for Subscription to \"b\""]),
            0,
            &m,
        );
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(r[&1].contains("\"b\""));
        let r = refused(
            &strings(&["Permissions Violation for Subscription to \"b\" using queue \"q\""]),
            0,
            &m,
        );
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_private_group_matches_a_binding_without_a_queue() {
        let m = made(&[(4, "a", None, 3)]);
        let r = refused(
            &strings(&[
                "Permissions Violation for Subscription to \"a\" using queue \"_wasmgate.x.b4\"",
            ]),
            0,
            &m,
        );
        assert!(r.contains_key(&4));
    }

    #[test]
    fn limit_errors_refuse_the_last_subscriptions() {
        // As a server with room for three answers five single subscriptions.
        let m = made(&[
            (0, "a", None, 1),
            (1, "b", None, 1),
            (2, "c", None, 1),
            (3, "d", None, 1),
            (4, "e", None, 1),
        ]);
        let errors = strings(&[
            "maximum subscriptions exceeded",
            "maximum subscriptions exceeded",
        ]);
        let mut r: Vec<usize> = refused(&errors, 0, &m).into_keys().collect();
        r.sort();
        assert_eq!(r, vec![3, 4]);
    }

    #[test]
    fn permission_refusals_take_no_room() {
        // "c" is refused for permissions; the limit refused the last one.
        let m = made(&[
            (0, "a", None, 1),
            (1, "c", None, 1),
            (2, "d", None, 1),
            (3, "e", None, 1),
        ]);
        let errors = strings(&[
            "Permissions Violation for Subscription to \"c\"",
            "maximum subscriptions exceeded",
        ]);
        let mut r: Vec<usize> = refused(&errors, 0, &m).into_keys().collect();
        r.sort();
        assert_eq!(r, vec![1, 3]);
    }

    #[test]
    fn a_binding_with_several_workers_is_refused_once_any_is() {
        // Two workers each: the limit refused the last worker of binding 1
        // only, and binding 1 is refused as a whole.
        let m = made(&[(0, "a", None, 2), (1, "b", None, 2)]);
        let r = refused(&strings(&["maximum subscriptions exceeded"]), 0, &m);
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![1]);
        // Three refused: binding 1's two and binding 0's second.
        let r = refused(&strings(&["maximum subscriptions exceeded"; 3]), 0, &m);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn errors_no_longer_kept_count_as_limit_errors() {
        let m = made(&[(0, "a", None, 1), (1, "b", None, 1), (2, "c", None, 1)]);
        let r = refused(&[], 2, &m);
        let mut r: Vec<usize> = r.into_keys().collect();
        r.sort();
        assert_eq!(r, vec![1, 2]);
    }

    #[test]
    fn other_errors_refuse_nothing() {
        let m = made(&[(0, "a", None, 1)]);
        let errors = strings(&[
            "Permissions Violation for Publish to \"a\"",
            "Maximum Payload Violation",
        ]);
        assert!(refused(&errors, 0, &m).is_empty());
    }
}
