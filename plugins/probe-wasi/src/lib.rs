//! Test plugin that reports what it can see of the host through WASI. The
//! payload is a command; the reply starts with `ok:` or `err:`.
//!
//! - `env`: every environment variable as `NAME=value` lines, sorted;
//! - `read:<path>`: the file's contents;
//! - `write:<path>`: create the file and write `x` to it;
//! - `ls:<path>`: the directory's entries, one per line, sorted;
//! - `connect:<host:port>`: open a TCP connection;
//! - `print:<text>`: write the text to stdout and `<text> (stderr)` to stderr;
//! - `clock`: whether the wall clock reads later than 2020.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use std::io::Write;

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};

struct Probe;

fn answer<T, E: std::fmt::Display>(r: Result<T, E>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => format!("ok:{}", ok(v)),
        Err(e) => format!("err:{e}"),
    }
}

impl Guest for Probe {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let payload = String::from_utf8_lossy(&msg.payload).into_owned();
        let (command, arg) = payload.split_once(':').unwrap_or((payload.as_str(), ""));
        let reply = match command {
            "env" => {
                let mut vars: Vec<String> =
                    std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                vars.sort();
                format!("ok:{}", vars.join("\n"))
            }
            "read" => answer(std::fs::read_to_string(arg), |s| s),
            "write" => answer(
                std::fs::File::create(arg).and_then(|mut f| f.write_all(b"x")),
                |()| String::new(),
            ),
            "ls" => answer(
                std::fs::read_dir(arg).and_then(|entries| {
                    let mut names = entries
                        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<Result<Vec<_>, _>>()?;
                    names.sort();
                    Ok(names)
                }),
                |names| names.join("\n"),
            ),
            "connect" => answer(std::net::TcpStream::connect(arg), |_| "connected".into()),
            "print" => {
                println!("{arg}");
                eprintln!("{arg} (stderr)");
                let _ = std::io::stdout().flush();
                "ok:printed".to_string()
            }
            "clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                format!("ok:{}", now > 1_577_836_800)
            }
            other => return Err(HandleError::Reject(format!("unknown command {other:?}"))),
        };
        Ok(Some(reply.into_bytes()))
    }
}

export!(Probe);
