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

/// The front allocates and frees many small blocks per request, in bursts of a round of
/// events. Under HTTP/2 load glibc's allocator fragmented its heap to 100–300 MiB, and
/// which changes tipped it there was a matter of luck (an allocation more or fewer per
/// request); jemalloc keeps the front at 16 MiB on the same load, at the same CPU time
/// per request (docs/performance.md). Workers are Python processes and keep theirs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    server::main()
}
