//! Every bad config under `golden/config/` is refused with the error in the
//! matching `.err` file: it names the file, the key and the reason.
//! `UPDATE_GOLDEN=1 cargo test --test config_golden` rewrites the `.err` files.

use std::path::Path;

#[test]
fn bad_configs_give_their_golden_errors() {
    let dir = Path::new("golden/config");
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .expect("golden/config exists (tests run from the tests/ crate)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected the golden cases, found {}",
        cases.len()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for case in &cases {
        let err = match wasmgate::Config::load(case) {
            Ok(_) => panic!("{} should be refused", case.display()),
            Err(e) => format!("{e}\n"),
        };
        assert!(
            err.contains(&case.display().to_string()),
            "error names the file: {err}"
        );
        let golden = case.with_extension("err");
        if update {
            std::fs::write(&golden, &err).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", golden.display()));
        if want != err {
            mismatches.push(format!(
                "--- {}\nwant:\n{want}got:\n{err}",
                golden.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn missing_file_names_the_path() {
    let err = wasmgate::Config::load("golden/config/does-not-exist.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "golden/config/does-not-exist.toml: cannot read config: No such file or directory (os error 2)"
    );
}

#[test]
fn default_config_round_trips_and_validates() {
    let text = wasmgate::Config::default_toml();
    let parsed = wasmgate::Config::parse(&text, "default").unwrap();
    assert_eq!(parsed, wasmgate::Config::default());
    // Every example config is valid too.
    let mut examples = 0;
    for entry in std::fs::read_dir("../examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            wasmgate::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            examples += 1;
        }
    }
    assert!(examples >= 2);
}
