//! Golden outputs of `wasmgate invoke` and `wasmgate check`: the real binary
//! runs from the repository root with relative paths, and its exit code,
//! stdout and stderr must match `tests/golden/cli/<case>.out`.
//! `UPDATE_GOLDEN=1 cargo test --test cli_golden` rewrites them.
//!
//! These tests live in the host crate because only its tests get
//! `CARGO_BIN_EXE_wasmgate`, the binary cargo built for this very test run.
//! They need no NATS server: `invoke` and `check` never connect.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/plugins.rs"]
#[allow(dead_code)]
mod plugins;

use std::path::{Path, PathBuf};
use std::process::Command;

use plugins::{plugin_wasm, polyglot_wasm, repo_root};

const RUST_UPPERCASE: &str = "plugins/target/wasm32-wasip2/release/uppercase.wasm";
const FAULTY: &str = "plugins/target/wasm32-wasip2/release/faulty.wasm";
const WRONG_WORLD: &str = "plugins/target/wasm32-wasip2/release/wrong_world.wasm";
const ENRICH: &str = "plugins/target/wasm32-wasip2/release/enrich.wasm";
const PYTHON_UPPERCASE: &str = "plugins/target/polyglot/python_uppercase.wasm";
const JS_UPPERCASE: &str = "plugins/target/polyglot/js_uppercase.wasm";

/// The arguments of the shared uppercase case: headers (one repeated), a
/// non-default prefix, a reply-to, and a non-ASCII letter that stays as it is.
const UPPERCASE_ARGS: &[&str] = &[
    "--subject",
    "in.greeting",
    "--payload",
    "hello, wäsm",
    "--header",
    "X-Trace=abc",
    "--header",
    "X-Trace=def",
    "--config",
    "prefix=up",
    "--reply-to",
    "inbox.1",
];

/// Run the binary from the repository root; the golden text of the run.
fn wasmgate(args: &[&str]) -> String {
    let root = repo_root();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .current_dir(&root)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the wasmgate binary");
    let code = out
        .status
        .code()
        .map_or_else(|| format!("signal ({})", out.status), |c| c.to_string());
    let text = format!(
        "exit: {code}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing machine-specific may reach a golden file.
    text.replace(&root.display().to_string(), "<repo>")
}

fn golden_path(case: &str) -> PathBuf {
    repo_root()
        .join("tests/golden/cli")
        .join(format!("{case}.out"))
}

fn check_golden(case: &str, got: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path(case), got).unwrap();
        return;
    }
    assert_golden(case, got);
}

/// Compare with a golden file another test writes (never rewritten here).
fn assert_golden(case: &str, got: &str) {
    let path = golden_path(case);
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with UPDATE_GOLDEN=1\ngot:\n{got}",
            path.display()
        )
    });
    assert_eq!(got, want, "{case}: output differs from {}", path.display());
}

fn invoke(plugin: &str, args: &[&str]) -> String {
    let mut all = vec!["invoke", plugin];
    all.extend_from_slice(args);
    wasmgate(&all)
}

fn invoke_case(case: &str, plugin: &str, args: &[&str]) -> String {
    let got = invoke(plugin, args);
    check_golden(case, &got);
    got
}

fn exit_code(got: &str) -> &str {
    got.lines()
        .next()
        .and_then(|l| l.strip_prefix("exit: "))
        .unwrap()
}

#[test]
fn invoke_uppercase_publishes_and_replies() {
    plugin_wasm("uppercase");
    let got = invoke_case("invoke_uppercase", RUST_UPPERCASE, UPPERCASE_ARGS);
    assert_eq!(exit_code(&got), "0");
    assert!(got.contains("publish up.in.greeting (12 bytes): \"HELLO, WäSM\""));
}

#[test]
fn invoke_python_uppercase_matches_the_rust_one() {
    polyglot_wasm("python-uppercase");
    // The same golden file as the Rust plugin: same logs, publishes, reply.
    assert_golden(
        "invoke_uppercase",
        &invoke(PYTHON_UPPERCASE, UPPERCASE_ARGS),
    );
}

#[test]
fn invoke_js_uppercase_matches_the_rust_one() {
    polyglot_wasm("js-uppercase");
    assert_golden("invoke_uppercase", &invoke(JS_UPPERCASE, UPPERCASE_ARGS));
}

#[test]
fn invoke_without_reply_to_and_default_prefix() {
    plugin_wasm("uppercase");
    let got = invoke_case(
        "invoke_no_reply_to",
        RUST_UPPERCASE,
        &["--subject", "in.x", "--payload", "abc"],
    );
    assert_eq!(exit_code(&got), "0");
}

/// A handler that makes a request, run without `--nats`: the request fails
/// as `unavailable`, saying how to give it a connection, and `?` makes that
/// a retry.
#[test]
fn invoke_a_request_without_nats_says_it_needs_one() {
    plugin_wasm("enrich");
    let got = invoke_case(
        "invoke_request_without_nats",
        ENRICH,
        &[
            "--subject",
            "in.x",
            "--payload",
            "hi",
            "--request-allow",
            "lookup",
        ],
    );
    assert_eq!(exit_code(&got), "4");
}

#[test]
fn invoke_refused_publish_rejects() {
    plugin_wasm("uppercase");
    let got = invoke_case(
        "invoke_publish_refused",
        RUST_UPPERCASE,
        &[
            "--subject",
            "in.x",
            "--payload",
            "abc",
            "--config",
            "prefix=bad prefix",
        ],
    );
    assert_eq!(exit_code(&got), "5");
}

#[test]
fn invoke_faulty_trap_reject_retry() {
    plugin_wasm("faulty");
    let base = ["--subject", "f.x", "--reply-to", "inbox.1", "--payload"];
    for (payload, code) in [("trap", "6"), ("reject", "5"), ("retry", "4")] {
        let mut args = base.to_vec();
        args.push(payload);
        let got = invoke_case(&format!("invoke_faulty_{payload}"), FAULTY, &args);
        assert_eq!(exit_code(&got), code, "{payload}");
    }
}

#[test]
fn invoke_deadline_interrupts_a_looping_handler() {
    plugin_wasm("faulty");
    let got = invoke_case(
        "invoke_faulty_timeout",
        FAULTY,
        &[
            "--subject",
            "f.x",
            "--payload",
            "loop",
            "--timeout",
            "200ms",
        ],
    );
    assert_eq!(exit_code(&got), "7");
}

#[test]
fn invoke_load_errors() {
    plugin_wasm("wrong-world");
    let cases = [
        ("invoke_missing_file", "plugins/target/no-such-plugin.wasm"),
        ("invoke_wrong_world", WRONG_WORLD),
        ("invoke_not_wasm", "README.md"),
    ];
    for (case, plugin) in cases {
        let got = invoke_case(case, plugin, &["--subject", "in.x"]);
        assert_eq!(exit_code(&got), "3", "{case}");
    }
}

#[test]
fn invoke_bad_arguments() {
    let got = invoke_case(
        "invoke_bad_header",
        RUST_UPPERCASE,
        &["--subject", "in.x", "--header", "no-equals-sign"],
    );
    assert_eq!(exit_code(&got), "2");
    let got = invoke_case("invoke_bad_subject", RUST_UPPERCASE, &["--subject", "in.*"]);
    assert_eq!(exit_code(&got), "2");
}

fn check_case(case: &str, config: &str) -> String {
    let got = wasmgate(&["check", config]);
    check_golden(case, &got);
    got
}

#[test]
fn check_loads_every_plugin_in_every_language() {
    plugin_wasm("uppercase");
    polyglot_wasm("python-uppercase");
    polyglot_wasm("js-uppercase");
    let got = check_case("check_ok", "tests/golden/cli/check_ok.toml");
    assert_eq!(exit_code(&got), "0");
}

#[test]
fn check_warns_of_wide_and_reserved_grants() {
    plugin_wasm("uppercase");
    let got = check_case("check_grants", "tests/golden/cli/check_grants.toml");
    assert_eq!(exit_code(&got), "0", "warnings do not fail the check");
    let warnings: Vec<&str> = got.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{got}");
    assert!(warnings[0].starts_with("plugin \"anywhere\": warning: publish_allow = \">\""));
    assert!(
        warnings[1].starts_with(
            "plugin \"settings-writer\": warning: publish_allow[1] \"$KV.settings.>\""
        )
    );
}

#[test]
fn check_reports_each_plugin_that_fails() {
    plugin_wasm("uppercase");
    let got = check_case(
        "check_plugin_errors",
        "tests/golden/cli/check_plugin_errors.toml",
    );
    assert_eq!(exit_code(&got), "3");
}

#[test]
fn check_refuses_a_bad_config() {
    let got = check_case("check_bad_config", "tests/golden/cli/check_bad_config.toml");
    assert_eq!(exit_code(&got), "2");
    let got = check_case(
        "check_missing_config",
        "tests/golden/cli/no-such-config.toml",
    );
    assert_eq!(exit_code(&got), "2");
}

#[test]
fn golden_files_hold_no_absolute_paths() {
    let dir = repo_root().join("tests/golden/cli");
    let root = repo_root().display().to_string();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&root) && !text.contains("/tmp/"),
            "{} holds a machine-specific path",
            Path::new(&path).display()
        );
    }
}
