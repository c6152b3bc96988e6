//! The `conductor` binary: everything is in the `conductor_cli` library.

fn main() -> std::process::ExitCode {
    // `COMPLETE=<shell> conductor -- <line>`: the shell asking for completions.
    conductor_cli::answer_completion();
    conductor_cli::main_with(std::env::args_os(), None)
}
