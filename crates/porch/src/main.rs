//! The `porch` executable: start-up, signals, privileges and the supervision of worker
//! processes. It links no Python: workers are the app's own interpreter running porch's
//! worker extension (crates/porch-worker), started by [`supervisor`].

mod hooks;
mod interpreter;
mod process;
mod reload;
mod server;
mod supervisor;
mod systemd;

fn main() -> std::process::ExitCode {
    server::main()
}
