//! Command-line entry point: parses the arguments, then runs one subcommand.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = cybertriage::cli::Cli::parse();
    match cybertriage::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc at two arenas. By default glibc may create up to eight arenas per core for
/// threads that allocate concurrently (tokio and rayon workers here). Memory freed in one arena
/// is not reused by the others, so the resident size of the server creeps up under load.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator settings; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
