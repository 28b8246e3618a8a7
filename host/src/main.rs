//! The `wasmgate` binary; the commands live in [`wasmgate::cli`].

fn main() -> std::process::ExitCode {
    wasmgate::cli::main()
}
