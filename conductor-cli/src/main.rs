//! The `conductor` binary: everything is in the `conductor_cli` library.

fn main() -> std::process::ExitCode {
    conductor_cli::main_with(std::env::args_os(), None)
}
