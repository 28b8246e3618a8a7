//! Test plugin that exports a world other than `wasmgate:plugin`, so the host's
//! load-time check has something to reject.

wit_bindgen::generate!({ path: "wit", world: "greeter-world" });

use exports::other::thing::greeter::Guest;

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
