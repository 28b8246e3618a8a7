//! Every NATS authentication method through a whole gateway, against real
//! servers that require it: token, user + password, nkey, a creds file with
//! a user JWT (operator mode), TLS with a CA, TLS with a client certificate.
//! Each connects, handles a message through a plugin, survives a server
//! restart and shows nothing secret in `/status`. Each wrong case is refused
//! at once (no attempts burnt) with one line naming the method and the key
//! or file; credentials revoked while running make the state `failed`.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmgate::ConnectionState;
use wasmgate::config::{Config, OnExhausted, Secret};
use wasmgate_tests::auth::{self, Operator};
use wasmgate_tests::*;

/// The gateway config for `server` with `uppercase` on `in.>` (prefix `out`),
/// and attempts that a refusal must not use up.
fn gateway_config(url: String) -> Config {
    let mut config = upper_config(&[url]);
    config.reconnect.max_attempts = 30;
    config.reconnect.on_exhausted = OnExhausted::Exit;
    config
}

/// One message in, its upper-cased copy out, through the gateway.
async fn round_trip(nc: &async_nats::Client, n: u32) {
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    nc.publish(format!("in.{n}"), format!("hello {n}").into())
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap_or_else(|_| panic!("message {n} handled in time"))
        .unwrap();
    assert_eq!(msg.subject.as_str(), format!("out.in.{n}"));
    assert_eq!(&msg.payload[..], format!("HELLO {n}").as_bytes());
}

/// Connect with `config`, handle a message, restart the server, handle
/// another; `/status` never shows any of `secrets`. `client` connects the
/// test's own client (with the same kind of credentials).
async fn works_and_survives_a_restart<F, Fut>(
    server: &mut NatsServer,
    config: Config,
    secrets: &[&str],
    client: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = async_nats::Client>,
{
    let gw = Running::start(config).await;
    let nc = client().await;
    round_trip(&nc, 1).await;

    server.restart();
    // Ready alone could still be the state from before the restart.
    eventually(WAIT, "a reconnect, and ready again", || async {
        let s = gw.status();
        (s.total_reconnects >= 1 && s.ready).then_some(())
    })
    .await;
    let nc = client().await;
    round_trip(&nc, 2).await;

    let addr = gw.http_addr().expect("status endpoint");
    let status = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in secrets {
        assert!(!status.contains(secret), "/status shows a secret: {status}");
        let debug = format!("{:?}", gw.status());
        assert!(!debug.contains(secret), "status Debug shows a secret");
    }
    gw.stop().await;
}

/// Start a gateway that the server must refuse; return its one-line error
/// and check it came at once, without burning the 30 attempts.
async fn refused(config: Config) -> String {
    let started = Instant::now();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(config, shutdown.clone())
        .await
        .expect("the config is valid");
    let err = tokio::time::timeout(WAIT, gw.wait())
        .await
        .expect("a refused gateway stops by itself")
        .expect_err("the server refuses it");
    let text = wasmgate::errors::chain(&err);
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains("gave up after"), "no attempts burnt: {text}");
    // 30 attempts of the test backoff would take seconds; a refusal is one attempt.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    text
}

/// The server's connections speak `nats://` on its port, TLS or not.
fn url(server: &NatsServer) -> String {
    server.url()
}

fn once(text: &str, needle: &str) -> bool {
    text.matches(needle).count() == 1
}

#[tokio::test]
async fn token() {
    init_logs();
    let token = "tok-5c1a7e9b";
    let mut server = NatsServer::start_with_config(&auth::token_config(token));
    let mut config = gateway_config(url(&server));
    config.nats.auth.token = Some(Secret::new(token));
    let port = server.port;
    works_and_survives_a_restart(&mut server, config, &[token], || async move {
        async_nats::ConnectOptions::with_token(token.into())
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap()
    })
    .await;

    let mut wrong = gateway_config(url(&server));
    wrong.nats.auth.token = Some(Secret::new("not-the-token"));
    let err = refused(wrong).await;
    assert_eq!(
        err,
        "cannot connect to NATS: authorization violation: the server refused nats.auth.token"
    );
    assert!(once(&err, "authorization violation"), "{err}");
}

#[tokio::test]
async fn user_and_password_also_from_the_url() {
    init_logs();
    let (user, password) = ("gw", "pw-8d0f3b2a");
    let mut server = NatsServer::start_with_config(&auth::user_password_config(user, password));
    let port = server.port;
    // Written into the URL: moved into [nats.auth] when the config is read.
    let from_file = Config::parse(
        &format!("[nats]\nservers = [\"nats://{user}:{password}@127.0.0.1:{port}\"]\n"),
        "inline",
    )
    .unwrap();
    assert_eq!(from_file.nats.servers, [format!("nats://127.0.0.1:{port}")]);
    assert_eq!(from_file.nats.auth.user.as_deref(), Some(user));
    assert!(
        !format!("{from_file:?}").contains(password),
        "Debug redacts"
    );

    let mut config = gateway_config(from_file.nats.servers[0].clone());
    config.nats.auth = from_file.nats.auth.clone();
    works_and_survives_a_restart(&mut server, config, &[password], || async move {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap()
    })
    .await;

    let mut wrong = gateway_config(url(&server));
    wrong.nats.auth.user = Some(user.into());
    wrong.nats.auth.password = Some(Secret::new("wrong-password"));
    let err = refused(wrong).await;
    assert_eq!(
        err,
        "cannot connect to NATS: authorization violation: the server refused nats.auth.user \
         \"gw\" with nats.auth.password"
    );
}

#[tokio::test]
async fn nkey() {
    init_logs();
    let key = auth::user_nkey();
    let mut server = NatsServer::start_with_config(&auth::nkey_config(&key.public));
    let mut config = gateway_config(url(&server));
    config.nats.auth.nkey_seed = Some(Secret::new(&key.seed));
    let port = server.port;
    let seed = key.seed.clone();
    works_and_survives_a_restart(&mut server, config, &[&key.seed], || {
        let seed = seed.clone();
        async move {
            async_nats::ConnectOptions::with_nkey(seed)
                .connect(format!("nats://127.0.0.1:{port}"))
                .await
                .unwrap()
        }
    })
    .await;

    let stranger = auth::user_nkey();
    let mut wrong = gateway_config(url(&server));
    wrong.nats.auth.nkey_seed = Some(Secret::new(&stranger.seed));
    let err = refused(wrong).await;
    assert_eq!(
        err,
        format!(
            "cannot connect to NATS: authorization violation: the server refused \
             nats.auth.nkey_seed (public key {})",
            stranger.public
        )
    );
    assert!(!err.contains(&stranger.seed));
}

#[tokio::test]
async fn creds_file_with_a_user_jwt() {
    init_logs();
    let operator = Operator::new();
    let mut server = NatsServer::start_with_config(&operator.server_config());
    let dir = tempfile::tempdir().unwrap();
    let user = operator.user();
    let creds = user.write(dir.path(), "gateway");
    let mut config = gateway_config(url(&server));
    config.nats.auth.creds_file = Some(creds.clone());
    let port = server.port;
    let client_creds = creds.clone();
    works_and_survives_a_restart(&mut server, config, &[&user.seed, &user.jwt], || {
        let creds = client_creds.clone();
        async move {
            async_nats::ConnectOptions::with_credentials_file(creds)
                .await
                .unwrap()
                .connect(format!("nats://127.0.0.1:{port}"))
                .await
                .unwrap()
        }
    })
    .await;

    let stranger = operator
        .unknown_account_user()
        .write(dir.path(), "stranger");
    let mut wrong = gateway_config(url(&server));
    wrong.nats.auth.creds_file = Some(stranger.clone());
    let err = refused(wrong).await;
    assert_eq!(
        err,
        format!(
            "cannot connect to NATS: authorization violation: the server refused the user JWT \
             in nats.auth.creds_file {}",
            stranger.display()
        )
    );

    let expired = operator.expired_user().write(dir.path(), "expired");
    let mut wrong = gateway_config(url(&server));
    wrong.nats.auth.creds_file = Some(expired.clone());
    let err = refused(wrong).await;
    let named = format!(
        "cannot connect to NATS: authorization violation: the server refused the user JWT in \
         nats.auth.creds_file {} (it expired at ",
        expired.display()
    );
    assert!(err.starts_with(&named), "{err}");
}

/// A TLS server; the client trusts `ca` and presents `client` (cert, key).
fn tls_config(server: &NatsServer, ca: &Path, client: Option<(&Path, &Path)>) -> Config {
    let mut config = gateway_config(url(server));
    config.nats.tls.required = true;
    config.nats.tls.ca = Some(ca.to_path_buf());
    if let Some((cert, key)) = client {
        config.nats.tls.cert = Some(cert.to_path_buf());
        config.nats.tls.key = Some(key.to_path_buf());
    }
    config
}

async fn tls_client(port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> async_nats::Client {
    let mut options = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.to_path_buf());
    if let Some((cert, key)) = client {
        options = options.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
    }
    options
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_with_a_ca() {
    init_logs();
    let certs = tempfile::tempdir().unwrap();
    let files = auth::tls_files(certs.path());
    let mut server = NatsServer::start_with_config(&files.server_config(false));
    let port = server.port;
    let config = tls_config(&server, &files.ca, None);
    let ca = files.ca.clone();
    works_and_survives_a_restart(&mut server, config, &[], || {
        let ca = ca.clone();
        async move { tls_client(port, &ca, None).await }
    })
    .await;

    let wrong = tls_config(&server, &files.untrusted_ca, None);
    let err = refused(wrong).await;
    let want = format!(
        "the server's certificate is not signed by nats.tls.ca {}",
        files.untrusted_ca.display()
    );
    assert!(
        err.starts_with("cannot connect to NATS: TLS handshake failed: ")
            && err.ends_with(&format!("({want})")),
        "{err}"
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    init_logs();
    let certs = tempfile::tempdir().unwrap();
    let files = auth::tls_files(certs.path());
    let mut server = NatsServer::start_with_config(&files.server_config(true));
    let port = server.port;
    let pair = (files.client_cert.as_path(), files.client_key.as_path());
    let config = tls_config(&server, &files.ca, Some(pair));
    let (ca, cert, key) = (
        files.ca.clone(),
        files.client_cert.clone(),
        files.client_key.clone(),
    );
    works_and_survives_a_restart(&mut server, config, &[], || {
        let (ca, cert, key) = (ca.clone(), cert.clone(), key.clone());
        async move { tls_client(port, &ca, Some((&cert, &key))).await }
    })
    .await;

    let err = refused(tls_config(&server, &files.ca, None)).await;
    assert!(
        err.starts_with("cannot connect to NATS: TLS handshake failed: ")
            && err.contains(
                "the server wants a client certificate: set nats.tls.cert and nats.tls.key"
            ),
        "{err}"
    );
    let untrusted = (
        files.untrusted_client_cert.as_path(),
        files.untrusted_client_key.as_path(),
    );
    let err = refused(tls_config(&server, &files.ca, Some(untrusted))).await;
    assert!(
        err.starts_with("cannot connect to NATS: TLS handshake failed: ")
            && err.contains(&format!(
                "the server refused the client certificate nats.tls.cert {}",
                files.untrusted_client_cert.display()
            )),
        "{err}"
    );
}

#[tokio::test]
async fn revoked_credentials_fail_the_gateway_instead_of_burning_attempts() {
    init_logs();
    let mut server = NatsServer::start_with_config(&auth::token_config("first-token"));
    let mut config = gateway_config(url(&server));
    config.nats.auth.token = Some(Secret::new("first-token"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(config, shutdown.clone())
        .await
        .unwrap();
    gw.ready(WAIT).await.unwrap();

    // The operator rotates the token on the server; the gateway still has the old one.
    server.set_config(&auth::token_config("second-token"));
    server.restart();
    let watch = gw.status_watch();
    let err = tokio::time::timeout(WAIT, gw.wait())
        .await
        .expect("the gateway stops by itself")
        .expect_err("refused after the restart");
    let text = wasmgate::errors::chain(&err);
    assert_eq!(
        text,
        "cannot connect to NATS: authorization violation: the server refused nats.auth.token \
         (on reconnect, by every server)"
    );
    let status = watch.borrow().clone();
    assert_eq!(status.state, ConnectionState::Failed);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("the server refused nats.auth.token")),
        "{status:?}"
    );
}

#[tokio::test]
async fn keep_trying_waits_for_the_credentials_to_work_again() {
    init_logs();
    let mut server = NatsServer::start_with_config(&auth::token_config("other-token"));
    let mut config = gateway_config(url(&server));
    config.nats.auth.token = Some(Secret::new("gateway-token"));
    config.reconnect.on_exhausted = OnExhausted::KeepTrying;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(config, shutdown.clone())
        .await
        .unwrap();
    eventually(WAIT, "state failed with the cause", || async {
        let s = gw.status();
        (s.state == ConnectionState::Failed
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("the server refused nats.auth.token")))
        .then_some(())
    })
    .await;

    server.set_config(&auth::token_config("gateway-token"));
    server.restart();
    gw.ready(WAIT)
        .await
        .expect("connected once the token works");
    let port = server.port;
    let nc = async_nats::ConnectOptions::with_token("gateway-token".into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    round_trip(&nc, 1).await;
    shutdown.cancel();
    gw.wait().await.unwrap();
}
