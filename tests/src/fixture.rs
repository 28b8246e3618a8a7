//! The fixture of the fault tests: a gateway on its own server running the
//! plugins a test gives (a misbehaving one beside a healthy one), a client
//! to send them messages, and readers of the replies the gateway sends back
//! (`Wasmgate-Error` and the payload).
//!
//! What a test does meanwhile (healthy traffic running all along, say) and
//! what it checks at the end stay in the test; the fixture only starts,
//! asks and stops.

use wasmgate::ERROR_HEADER;
use wasmgate::config::PluginConfig;
use wasmgate::status::BindingStatus;

use crate::{NatsServer, Running, WAIT, client, init_logs, test_config};

/// A started, ready gateway running a test's plugins on a server of its own,
/// and a client of that server.
pub struct Fixture {
    pub gw: Running,
    pub nc: async_nats::Client,
    /// Declared last, so that a test that panics drops the gateway before
    /// the server it is connected to.
    _server: NatsServer,
}

impl Fixture {
    /// Start a server and a gateway running `plugins` (see [`test_config`]),
    /// and connect the test's client.
    pub async fn start(plugins: impl IntoIterator<Item = PluginConfig>) -> Fixture {
        init_logs();
        let server = NatsServer::start();
        let mut config = test_config(&[server.url()]);
        config.plugins.extend(plugins);
        let gw = Running::start(config).await;
        let nc = client(&server).await;
        Fixture {
            gw,
            nc,
            _server: server,
        }
    }

    /// A request on `subject`: its reply, within [`WAIT`]. Panics, naming
    /// the payload, on a timeout or a failed request, so a test reads the
    /// reply (an error reply included) without unwrapping.
    pub async fn ask(&self, subject: &str, payload: &str) -> async_nats::Message {
        tokio::time::timeout(
            WAIT,
            self.nc
                .request(subject.to_string(), payload.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{payload}: a reply, not a timeout"))
        .unwrap_or_else(|e| panic!("{payload}: request failed: {e}"))
    }

    /// The counters of `plugin`'s first binding, as `/status` shows them now.
    pub fn binding(&self, plugin: &str) -> BindingStatus {
        self.gw
            .status()
            .bindings
            .into_iter()
            .find(|b| b.plugin == plugin)
            .unwrap_or_else(|| panic!("no binding of plugin {plugin:?}"))
    }

    /// Shut the gateway down and check it ended cleanly; the server goes
    /// with the fixture.
    pub async fn finish(self) {
        self.gw.stop().await;
    }
}

/// A reply's `Wasmgate-Error` kind (`trap`, `timeout`, `reject`, ...), or
/// `None` for a success.
pub fn error_kind(msg: &async_nats::Message) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(ERROR_HEADER))
        .map(|v| v.as_str().to_string())
}

/// A message's payload as text (lossy UTF-8).
pub fn text(msg: &async_nats::Message) -> String {
    String::from_utf8_lossy(&msg.payload).into_owned()
}
