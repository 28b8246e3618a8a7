//! The example wasmgate plugin: upper-cases each payload (ASCII), publishes it
//! to `<prefix>.<subject>` (`prefix` from the plugin's config, default `out`)
//! with the incoming headers, and replies with the same bytes when the message
//! has a reply-to subject. A publish the host refuses rejects the message
//! (`publish failed: ...`). The Python and JavaScript examples
//! (`plugins/python-uppercase`, `plugins/js-uppercase`) behave the same.

use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};

struct Uppercase;

impl Handler for Uppercase {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let prefix: String = config::get_or("prefix", "out".to_string())?;
        let upper = msg.payload.to_ascii_uppercase();
        let target = format!("{prefix}.{}", msg.subject);
        wasmgate_plugin::debug!("{} -> {target} ({} bytes)", msg.subject, upper.len());
        publish(&target, &upper, msg.headers)?;
        Ok(msg.reply(upper))
    }
}

wasmgate_plugin::export!(Uppercase);
