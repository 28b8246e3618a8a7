//! The `wasmgate` binary: the command line in [`cli`], over the library's
//! public API.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
