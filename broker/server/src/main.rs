//! The `halyard` binary: see `halyard --help`.

fn main() -> std::process::ExitCode {
    halyard_server::cli::main()
}
