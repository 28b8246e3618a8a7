//! Credentials and TLS material for tests that start an authenticating
//! nats-server ([`NatsServer::start_with_config`](crate::NatsServer::start_with_config)):
//! the server-config snippets for token, user and password, nkey, JWT
//! (operator mode) and TLS, and the client side of each (nkey seeds, user
//! JWTs and `.creds` files, CA and certificate PEM files).
//!
//! Everything is generated when a test runs, nothing is checked in: keys
//! and certificates in the repository would be secrets to rotate and
//! certificates that expire.
//!
//! JWTs are built here rather than with a JWT library because NATS JWTs are
//! their own flavour (nkey issuers, `ed25519-nkey` signatures over header and
//! claims, the `nats` claim) and the fixtures need to mint broken ones too.
//! The layout follows nats-io/jwt v2, which is what nats-server decodes.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

// ---------------------------------------------------------------------------
// Simple auth: token, user and password, nkey.

/// `authorization` block: clients must send `token`.
pub fn token_config(token: &str) -> String {
    format!("authorization {{\n  token: {}\n}}\n", quote(token))
}

/// `authorization` block with one user and its password.
pub fn user_password_config(user: &str, password: &str) -> String {
    format!(
        "authorization {{\n  users = [\n    {{ user: {}, password: {} }}\n  ]\n}}\n",
        quote(user),
        quote(password)
    )
}

/// `authorization` block with one nkey user, by its public key (`U...`).
pub fn nkey_config(public_key: &str) -> String {
    format!(
        "authorization {{\n  users = [\n    {{ nkey: {} }}\n  ]\n}}\n",
        quote(public_key)
    )
}

/// A user nkey: the server is configured with `public` (`U...`), the
/// client signs the server's nonce with `seed` (`SU...`).
pub struct UserNkey {
    pub public: String,
    pub seed: String,
}

/// A fresh user nkey pair.
pub fn user_nkey() -> UserNkey {
    let kp = KeyPair::new_user();
    UserNkey {
        public: kp.public_key(),
        seed: seed(&kp),
    }
}

// ---------------------------------------------------------------------------
// JWT: operator, account, user.

/// Seconds since the Unix epoch, as JWTs count time.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn seed(kp: &KeyPair) -> String {
    kp.seed().expect("a generated key pair has its seed")
}

/// The registered claims, in nats-io/jwt's field order so the `jti`
/// computed over them is the one nats-io/jwt would compute.
#[derive(Serialize)]
struct StandardClaims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    jti: &'a str,
    iat: i64,
    iss: &'a str,
    name: &'a str,
    sub: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(flatten)]
    standard: StandardClaims<'a>,
    nats: Value,
}

/// A NATS v2 JWT for `subject`, issued and signed by `issuer`, expiring at
/// `exp` (Unix seconds) if given; `nats` is the type-specific claim (see
/// [`operator_jwt`], [`account_jwt`], [`user_jwt`]).
///
/// `jti` is nats-io/jwt's: unpadded base32 of SHA-512/256 over the
/// registered claims with `jti` empty. nats-server does not check it, but a
/// unique id keeps two otherwise equal JWTs apart in its caches and logs.
pub fn encode_jwt(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    exp: Option<i64>,
    nats: Value,
) -> String {
    let iss = issuer.public_key();
    let mut standard = StandardClaims {
        exp,
        jti: "",
        iat: unix_now(),
        iss: &iss,
        name,
        sub: subject,
    };
    let unsigned = serde_json::to_vec(&standard).expect("claims serialise");
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(unsigned));
    standard.jti = &jti;
    let claims = serde_json::to_vec(&Claims { standard, nats }).expect("claims serialise");

    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signed = format!("{header}.{}", BASE64URL_NOPAD.encode(&claims));
    let signature = issuer
        .sign(signed.as_bytes())
        .expect("a seeded key pair signs");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// The operator's JWT, self-signed: what `operator:` in the server config
/// trusts.
pub fn operator_jwt(operator: &KeyPair, name: &str) -> String {
    encode_jwt(
        operator,
        &operator.public_key(),
        name,
        None,
        json!({ "type": "operator", "version": 2 }),
    )
}

/// An account's JWT, issued by `operator`, without limits. With
/// `jetstream` its JetStream limits are unlimited too (memory and disk
/// storage, streams, consumers); without, they are absent, which is how an
/// account JWT says JetStream is off for it (as the system account's must
/// be).
pub fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": true,
        "conn": -1,
        "leaf": -1,
    });
    if jetstream {
        for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[limit] = json!(-1);
        }
    }
    encode_jwt(
        operator,
        &account.public_key(),
        name,
        None,
        json!({
            "limits": limits,
            "default_permissions": { "pub": {}, "sub": {} },
            "type": "account",
            "version": 2,
        }),
    )
}

/// A user's JWT, issued by `account`, with no permission or limit, expiring
/// at `exp` (Unix seconds) if given.
pub fn user_jwt(account: &KeyPair, user_public: &str, name: &str, exp: Option<i64>) -> String {
    encode_jwt(
        account,
        user_public,
        name,
        exp,
        json!({
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        }),
    )
}

/// A `.creds` file's text, as `nsc` writes it: what
/// `ConnectOptions::credentials_file` (and every NATS client) reads.
pub fn creds_file_text(user_jwt: &str, user_seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A user's JWT and nkey seed: a client's credentials in operator mode.
pub struct UserCreds {
    pub jwt: String,
    pub seed: String,
}

impl UserCreds {
    /// A fresh user key pair with a JWT issued by `account`.
    pub fn issue(account: &KeyPair, name: &str, exp: Option<i64>) -> UserCreds {
        let user = KeyPair::new_user();
        UserCreds {
            jwt: user_jwt(account, &user.public_key(), name, exp),
            seed: seed(&user),
        }
    }

    /// The `.creds` file text ([`creds_file_text`]).
    pub fn creds_file_text(&self) -> String {
        creds_file_text(&self.jwt, &self.seed)
    }

    /// Write the `.creds` file to `dir/name.creds` and return its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, self.creds_file_text()).expect("write the creds file");
        path
    }
}

/// Decentralised auth (operator mode): an operator that the server trusts
/// and the account `APP` it issued, with JetStream enabled, for the users;
/// plus the system account `SYS`, without JetStream, that a server running
/// JetStream in operator mode refuses to start without ("system account not
/// setup"). Both are preloaded into the server's memory resolver. Mints
/// user credentials of `APP`, good ones and refused ones.
pub struct Operator {
    pub operator_jwt: String,
    pub account_jwt: String,
    pub system_account_jwt: String,
    account: KeyPair,
    system_account: KeyPair,
}

impl Operator {
    /// New operator and account keys and their JWTs.
    pub fn new() -> Operator {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let system_account = KeyPair::new_account();
        Operator {
            operator_jwt: operator_jwt(&operator, "wasmgate-test-operator"),
            account_jwt: account_jwt(&operator, &account, "APP", true),
            system_account_jwt: account_jwt(&operator, &system_account, "SYS", false),
            account,
            system_account,
        }
    }

    /// The users' account's public key (`A...`).
    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    /// The system account's public key (`A...`).
    pub fn system_account_public_key(&self) -> String {
        self.system_account.public_key()
    }

    /// Server config: trust the operator, resolve both accounts from memory.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            self.operator_jwt,
            self.system_account_public_key(),
            self.account_public_key(),
            self.account_jwt,
            self.system_account_public_key(),
            self.system_account_jwt,
        )
    }

    /// A user of the account, valid and without expiry.
    pub fn user(&self) -> UserCreds {
        UserCreds::issue(&self.account, "app-user", None)
    }

    /// A user of the account whose JWT expired a minute ago.
    pub fn expired_user(&self) -> UserCreds {
        UserCreds::issue(&self.account, "expired-user", Some(unix_now() - 60))
    }

    /// A user issued by another account, one the server has no JWT for:
    /// well-formed and validly signed, just not by anyone the server trusts.
    pub fn unknown_account_user(&self) -> UserCreds {
        UserCreds::issue(&KeyPair::new_account(), "stranger", None)
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// TLS.

/// PEM files for TLS tests, written by [`tls_files`]: a CA, a server
/// certificate for `127.0.0.1` and `localhost` and a client certificate,
/// both signed by that CA; and a second CA that nothing here trusts, with a
/// client certificate of its own.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub untrusted_ca: PathBuf,
    pub untrusted_client_cert: PathBuf,
    pub untrusted_client_key: PathBuf,
}

impl TlsFiles {
    /// Server `tls` block. With `verify_clients` the server asks for a client
    /// certificate and checks it against the CA; without, any client gets
    /// in over TLS (and `ca_file` is left out, the server has no use for it).
    pub fn server_config(&self, verify_clients: bool) -> String {
        let ca = if verify_clients {
            format!("  ca_file: {}\n", quote_path(&self.ca))
        } else {
            String::new()
        };
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n{ca}  verify: {verify_clients}\n  timeout: 2\n}}\n",
            quote_path(&self.server_cert),
            quote_path(&self.server_key),
        )
    }
}

/// A CA: its certificate (PEM) and the issuer that signs with its key.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().expect("generate a CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`, for `sans` (IP addresses become IP
/// SANs: rustls checks an IP address against those only), usable for
/// `usage`. Returns the certificate and key PEM.
fn signed_cert(
    ca: &Ca,
    name: &str,
    sans: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(sans).expect("valid SANs");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, &ca.issuer).expect("CA signs");
    (cert.pem(), key.serialize_pem())
}

/// Generate the CAs, certificates and keys and write them as PEM files into
/// `dir` (which must exist).
pub fn tls_files(dir: &Path) -> TlsFiles {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    let trusted = ca("wasmgate test CA");
    let (server_cert, server_key) = signed_cert(
        &trusted,
        "nats-server",
        &["127.0.0.1", "localhost"],
        ServerAuth,
    );
    let (client_cert, client_key) = signed_cert(&trusted, "wasmgate", &["wasmgate"], ClientAuth);
    let untrusted = ca("untrusted test CA");
    let (stranger_cert, stranger_key) =
        signed_cert(&untrusted, "stranger", &["stranger"], ClientAuth);
    TlsFiles {
        ca: write("ca.pem", &trusted.pem),
        server_cert: write("server-cert.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client-cert.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        untrusted_ca: write("untrusted-ca.pem", &untrusted.pem),
        untrusted_client_cert: write("untrusted-client-cert.pem", &stranger_cert),
        untrusted_client_key: write("untrusted-client-key.pem", &stranger_key),
    }
}

// ---------------------------------------------------------------------------

/// A string in the server config's syntax, double-quoted. The values here
/// are generated keys, tokens and temp paths, which need no escaping; the
/// assert keeps it that way.
fn quote(s: &str) -> String {
    assert!(
        !s.contains(['"', '\\', '\n']),
        "config value {s:?} needs escaping, which the fixtures don't do"
    );
    format!("\"{s}\"")
}

fn quote_path(p: &Path) -> String {
    quote(p.to_str().expect("temp paths are UTF-8"))
}
