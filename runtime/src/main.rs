//! The `runtime` binary; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    runtime::cli::main()
}
