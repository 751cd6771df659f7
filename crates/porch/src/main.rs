use std::process::ExitCode;

fn main() -> ExitCode {
    // Workers are this same binary, re-executed by the supervisor.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__worker") {
        return porch::worker::main();
    }
    porch::server::main()
}
