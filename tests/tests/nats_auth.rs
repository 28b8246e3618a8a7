//! The auth and TLS kit ([`wasmgate_tests::auth`]) against real nats-server
//! processes: for each method a bare async-nats client with the right
//! credentials gets a request/reply round trip, and the wrong ones are
//! refused at connect.
//!
//! Refusals print the async-nats error, its `kind()` and its `source()`
//! chain (run with `--nocapture`): which kind a refusal surfaces as is what
//! the gateway's error handling has to tell apart, and it differs by method
//! (an auth error from the server, a TLS handshake that fails in I/O).
//! The kinds that both the distro's nats-server and the current release
//! agree on are asserted.

use std::error::Error as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions};
use futures::StreamExt;
use wasmgate_tests::{NatsServer, WAIT, auth, nats_server_bin};

/// Short, so a refusal that hangs instead of failing shows up as `TimedOut`
/// in seconds rather than holding the test. Anything else a test waits for
/// (a request, JetStream) is bounded by the kit's [`WAIT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn options() -> ConnectOptions {
    ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT)
}

/// One connect attempt (no retry on initial connect), bounded in time.
async fn connect(server: &NatsServer, opts: ConnectOptions) -> Result<Client, ConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT * 2, opts.connect(server.url()))
        .await
        .expect("connect returns within its own timeout")
}

/// `nats-server --version`, for labelling the printed refusals.
fn server_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = std::process::Command::new(nats_server_bin())
            .arg("--version")
            .output()
            .expect("run nats-server --version");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// A request/reply round trip over `nc`, answered by `nc` itself.
async fn assert_round_trip(nc: &Client, case: &str) {
    let mut requests = nc.subscribe("auth.echo").await.expect("subscribe");
    let responder = nc.clone();
    let echo = tokio::spawn(async move {
        let msg = requests.next().await.expect("a request arrives");
        let reply = msg.reply.expect("a request has a reply subject");
        responder
            .publish(reply, msg.payload)
            .await
            .expect("publish the reply");
        responder.flush().await.expect("flush the reply");
    });
    let reply = tokio::time::timeout(WAIT, nc.request("auth.echo", case.to_string().into()))
        .await
        .unwrap_or_else(|_| panic!("{case}: no reply within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{case}: request failed: {e}"));
    assert_eq!(reply.payload, case.as_bytes(), "{case}: echoed payload");
    echo.await.expect("responder finishes");
}

/// Connect with `opts`, which the server must accept, and do a round trip.
async fn assert_accepted(server: &NatsServer, opts: ConnectOptions, case: &str) -> Client {
    let nc = connect(server, opts).await.unwrap_or_else(|e| {
        panic!(
            "{case}: connect refused: {e} ({:?})\n{}",
            e.kind(),
            server.log()
        )
    });
    assert_round_trip(&nc, case).await;
    eprintln!("ACCEPTED [{}] {case}", server_version());
    nc
}

/// Connect with `opts`, which the server must refuse; print the error, its
/// kind and source chain, and the server's log lines about it; return the kind.
async fn refused(server: &NatsServer, opts: ConnectOptions, case: &str) -> ConnectErrorKind {
    let log_before = server.log().len();
    let err = match connect(server, opts).await {
        Ok(_) => panic!("{case}: connected, but the server should have refused"),
        Err(err) => err,
    };
    let mut chain = String::new();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push_str(&format!("\n    source: {s}\n      debug: {s:?}"));
        source = s.source();
    }
    // The server logs its side of the refusal around when the client sees it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log: Vec<String> = server.log()[log_before..]
        .lines()
        .filter(|l| l.contains("[ERR]") || l.contains("[WRN]"))
        .map(|l| format!("\n    server: {l}"))
        .collect();
    eprintln!(
        "REFUSED [{}] {case}\n    kind: {:?}\n    error: {err}{chain}{}",
        server_version(),
        err.kind(),
        log.concat()
    );
    err.kind()
}

#[tokio::test]
async fn token() {
    let server = NatsServer::start_with_config(&auth::token_config("s3cret-token"));
    assert_accepted(&server, options().token("s3cret-token".into()), "token").await;

    let kind = refused(
        &server,
        options().token("wrong-token".into()),
        "wrong token",
    )
    .await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
    let kind = refused(&server, options(), "no token").await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
}

#[tokio::test]
async fn user_and_password() {
    let server = NatsServer::start_with_config(&auth::user_password_config("gateway", "pa55"));
    let good = options().user_and_password("gateway".into(), "pa55".into());
    assert_accepted(&server, good, "user and password").await;

    let wrong = options().user_and_password("gateway".into(), "wrong".into());
    let kind = refused(&server, wrong, "wrong password").await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
}

#[tokio::test]
async fn nkey() {
    let user = auth::user_nkey();
    assert!(user.public.starts_with('U') && user.seed.starts_with("SU"));
    let server = NatsServer::start_with_config(&auth::nkey_config(&user.public));
    assert_accepted(&server, options().nkey(user.seed.clone()), "nkey").await;

    let stranger = auth::user_nkey();
    let kind = refused(&server, options().nkey(stranger.seed), "unknown nkey").await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
}

async fn creds(path: &Path) -> ConnectOptions {
    options()
        .credentials_file(path)
        .await
        .expect("async-nats reads the creds file")
}

#[tokio::test]
async fn jwt_operator_mode_with_jetstream() {
    let operator = auth::Operator::new();
    let server = NatsServer::start_with_config(&operator.server_config());
    let files = tempfile::tempdir().expect("temp dir for creds");

    let user = operator.user().write(files.path(), "user");
    let nc = assert_accepted(&server, creds(&user).await, "user JWT").await;

    let js = async_nats::jetstream::new(nc);
    let stream = tokio::time::timeout(
        WAIT,
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "AUTH".into(),
            subjects: vec!["auth.js.>".into()],
            ..Default::default()
        }),
    )
    .await
    .expect("create_stream answers in time")
    .unwrap_or_else(|e| panic!("JetStream under operator mode: {e}\n{}", server.log()));
    let ack = js
        .publish("auth.js.one", "stored".into())
        .await
        .expect("JetStream publish")
        .await
        .expect("JetStream ack");
    assert_eq!(ack.stream, "AUTH");
    assert_eq!(stream.cached_info().config.name, "AUTH");
    eprintln!(
        "ACCEPTED [{}] JetStream create_stream + publish under operator mode",
        server_version()
    );

    let expired = operator.expired_user().write(files.path(), "expired");
    let kind = refused(&server, creds(&expired).await, "expired user JWT").await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);

    let stranger = operator
        .unknown_account_user()
        .write(files.path(), "stranger");
    let kind = refused(
        &server,
        creds(&stranger).await,
        "user JWT of an unknown account",
    )
    .await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
}

#[tokio::test]
async fn restart_keeps_the_config_file() {
    let mut server = NatsServer::start_with_config(&auth::token_config("kept"));
    server.restart();
    assert_accepted(
        &server,
        options().token("kept".into()),
        "token after restart",
    )
    .await;
    let kind = refused(&server, options(), "no token after restart").await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
}

#[tokio::test]
async fn set_config_and_restart_revokes_credentials() {
    let old = auth::Operator::new();
    let mut server = NatsServer::start_with_config(&old.server_config());
    let files = tempfile::tempdir().expect("temp dir for creds");
    let held = old.user().write(files.path(), "held");
    let nc = assert_accepted(&server, creds(&held).await, "user JWT before the change").await;
    drop(nc);

    let new = auth::Operator::new();
    server.set_config(&new.server_config());
    server.restart();
    let kind = refused(
        &server,
        creds(&held).await,
        "user JWT of the replaced operator",
    )
    .await;
    assert_eq!(kind, ConnectErrorKind::AuthorizationViolation);
    let fresh = new.user().write(files.path(), "fresh");
    assert_accepted(&server, creds(&fresh).await, "user JWT of the new operator").await;
}

fn tls_options(files: &auth::TlsFiles) -> ConnectOptions {
    options()
        .require_tls(true)
        .add_root_certificates(files.ca.clone())
}

#[tokio::test]
async fn tls_server_certificate() {
    let dir = tempfile::tempdir().expect("temp dir for certs");
    let files = auth::tls_files(dir.path());
    let server = NatsServer::start_with_config(&files.server_config(false));
    assert_accepted(&server, tls_options(&files), "TLS to 127.0.0.1").await;

    // The certificate names `localhost` too.
    let nc = tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        tls_options(&files).connect(format!("tls://localhost:{}", server.port)),
    )
    .await
    .expect("connect returns in time")
    .expect("TLS to localhost");
    assert_round_trip(&nc, "TLS to localhost").await;

    let untrusting = options()
        .require_tls(true)
        .add_root_certificates(files.untrusted_ca.clone());
    let kind = refused(
        &server,
        untrusting,
        "server certificate from an untrusted CA",
    )
    .await;
    // A failed handshake is I/O (the alert or certificate error inside), not `Tls`.
    assert_eq!(kind, ConnectErrorKind::Io, "untrusted CA");

    // `Tls` is the client's own TLS set-up failing, before any handshake.
    let missing_ca = options()
        .require_tls(true)
        .add_root_certificates(dir.path().join("no-such-ca.pem"));
    let kind = refused(&server, missing_ca, "CA file missing on the client").await;
    assert_eq!(kind, ConnectErrorKind::Tls);
}

#[tokio::test]
async fn tls_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir for certs");
    let files = auth::tls_files(dir.path());
    let server = NatsServer::start_with_config(&files.server_config(true));
    let mutual = tls_options(&files)
        .add_client_certificate(files.client_cert.clone(), files.client_key.clone());
    assert_accepted(&server, mutual, "mutual TLS").await;

    let kind = refused(&server, tls_options(&files), "no client certificate").await;
    // A failed handshake is I/O (the alert or certificate error inside), not `Tls`.
    assert_eq!(kind, ConnectErrorKind::Io, "missing client certificate");

    let stranger = tls_options(&files).add_client_certificate(
        files.untrusted_client_cert.clone(),
        files.untrusted_client_key.clone(),
    );
    let kind = refused(&server, stranger, "client certificate from an untrusted CA").await;
    // A failed handshake is I/O (the alert or certificate error inside), not `Tls`.
    assert_eq!(kind, ConnectErrorKind::Io, "untrusted client certificate");
}
