//! The guest plugins, built on demand (once per test process): the Rust ones
//! in `plugins/` with cargo for `wasm32-wasip2`, the Python and JavaScript
//! ones with `scripts/build-polyglot.sh` (which installs its pinned tools
//! project-locally when missing and skips unchanged components).
//!
//! This module uses only `std`, so the host crate's own tests include it with
//! `#[path]` too. A build that fails panics with the tool's output: tests
//! never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root: the first folder above the crate being compiled
/// (`tests/` or `host/`) that holds `wit/` and `plugins/`.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("wit").is_dir() && dir.join("plugins/Cargo.toml").is_file())
        .unwrap_or_else(|| panic!("no repository root above {}", manifest.display()))
        .to_path_buf()
}

/// Build the Rust guest plugins (once per test process) and return the path of one.
/// `name` is the crate name (`uppercase`, `echo`, `faulty`, `jsprobe`, `jsprobe-batched`, `sleepy`, `probe-wasi`, `wrong-world`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let plugins = repo_root().join("plugins");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&plugins)
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .map_err(|e| format!("running cargo for the plugins: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(plugins.join("target/wasm32-wasip2/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "plugin {name} not built at {}",
        path.display()
    );
    path
}

/// Build one of the polyglot plugins with `scripts/build-polyglot.sh` (once
/// per test process) and return its path: `python-uppercase`, `js-uppercase`,
/// `python-enrich` or `js-enrich`.
pub fn polyglot_wasm(name: &str) -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static JS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static PYTHON_ENRICH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static JS_ENRICH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let (cell, target) = match name {
        "python-uppercase" => (&PYTHON, "python"),
        "js-uppercase" => (&JS, "js"),
        "python-enrich" => (&PYTHON_ENRICH, "python-enrich"),
        "js-enrich" => (&JS_ENRICH, "js-enrich"),
        other => panic!(
            "unknown polyglot plugin {other:?} (python-uppercase, js-uppercase, python-enrich or js-enrich)"
        ),
    };
    let file = format!("{}.wasm", name.replace('-', "_"));
    cell.get_or_init(|| {
        let root = repo_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/build-polyglot.sh"))
            .arg(target)
            .current_dir(&root)
            .output()
            .map_err(|e| format!("running scripts/build-polyglot.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/build-polyglot.sh {target} failed ({}); it installs componentize-py \
                 (PyPI) into .local/venv and componentize-js (npm) into \
                 plugins/js-uppercase/node_modules, so it needs python3 with venv, node and npm:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = root.join("plugins/target/polyglot").join(&file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "scripts/build-polyglot.sh {target} succeeded but {} is missing",
                path.display()
            ))
        }
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("{e}"))
    .clone()
}
