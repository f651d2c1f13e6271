//! The `runtime` binary: parses the command line and prints what the engine
//! answers (`cli`), with logs set up by `telemetry`.

mod cli;
mod telemetry;

fn main() -> std::process::ExitCode {
    cli::main()
}
