//! The server under test when the benchmark starts it: a `cybertriage serve` child process on
//! a free loopback port, its cold start, its memory as Linux reports it in `/proc/PID/status`,
//! and its shutdown.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::http::{request_bytes, Connection, Target};

/// How often `/ready` is polled during a cold start.
const READY_POLL: Duration = Duration::from_millis(10);
/// How long a stopped server may take to finish before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    pub exe: PathBuf,
    pub models_dir: PathBuf,
    pub model_dir: Option<PathBuf>,
    /// Extra `serve` arguments, such as `--workers 2`.
    pub serve_args: Vec<String>,
    pub api_key: Option<String>,
    /// File that receives the server's stdout and stderr. `None` discards them.
    pub log: Option<PathBuf>,
    pub ready_timeout: Duration,
}

/// A running child server. Dropping it kills the process.
pub struct SpawnedServer {
    child: Child,
    pub target: Target,
    /// From spawning the process to the first 200 from `/ready`.
    pub cold_start: Duration,
}

impl SpawnedServer {
    /// Starts `cybertriage serve` on a free loopback port and waits for `/ready` to return 200.
    pub async fn start(command: &ServerCommand) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?));
        let mut process = Command::new(&command.exe);
        process.arg("--models-dir").arg(&command.models_dir).arg("serve").arg("--addr").arg(addr.to_string());
        if let Some(model_dir) = &command.model_dir {
            process.arg("--model-dir").arg(model_dir);
        }
        process.args(&command.serve_args).stdin(Stdio::null());
        if let Some(key) = &command.api_key {
            // Passed in the environment rather than as a flag, which would show in the process list.
            process.env("CYBERTRIAGE_API_KEY", key);
        }
        match &command.log {
            Some(path) => {
                let file = std::fs::File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
                process.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                process.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let started = Instant::now();
        let child = process.spawn().with_context(|| format!("failed to start {}", command.exe.display()))?;
        let mut server = SpawnedServer { child, target: Target::from_addr(addr), cold_start: Duration::ZERO };
        server.cold_start = server.wait_ready(started, command).await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self, started: Instant, command: &ServerCommand) -> Result<Duration> {
        let request = request_bytes("GET", "/ready", &self.target, None, None);
        let log_hint = match &command.log {
            Some(path) => format!("see {}", path.display()),
            None => "rerun with --server-log FILE to keep its log".to_string(),
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited ({status}) before /ready returned 200: {log_hint}");
            }
            if let Ok(mut connection) = Connection::open(self.target.addr).await {
                if matches!(connection.send(&request).await, Ok(response) if response.status == 200) {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > command.ready_timeout {
                bail!("/ready did not return 200 within {} s: {log_hint}", command.ready_timeout.as_secs());
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Sends SIGTERM, waits for the graceful shutdown, and kills the process if it takes longer
    /// than [`STOP_GRACE`].
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().map(|s| s.success()).unwrap_or(false);
        if signalled {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if self.child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::warn!(pid, "the server did not stop within {} s of SIGTERM: killing it", STOP_GRACE.as_secs());
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Returns a port that was free a moment ago. Another process could take it before the server
/// binds it, and the server would then fail to start with an error naming the address.
fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("failed to find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Resident and peak resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident size since the process started.
    pub hwm_kib: u64,
}

impl Memory {
    pub fn read(pid: u32) -> Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
        parse_status(&text).with_context(|| format!("{} has no VmRSS or VmHWM line", path.display()))
    }
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
        line[name.len() + 1..].trim().strip_suffix("kB")?.trim().parse().ok()
    };
    Some(Memory { rss_kib: field("VmRSS")?, hwm_kib: field("VmHWM")? })
}

/// Samples a process's `VmRSS` on a thread until stopped, and keeps the highest value.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(memory) = Memory::read(pid) {
                    peak = peak.max(memory.rss_kib);
                }
                std::thread::sleep(interval);
            }
            peak
        });
        RssSampler { stop, handle }
    }

    /// Stops sampling and returns the highest `VmRSS` seen, in KiB (0 if none was read).
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// Checks that the base encoder is on disk, so that a cold start does not include a download.
pub fn require_base(models_dir: &Path) -> Result<()> {
    let base_dir = crate::model::base::PinnedBase::load()?.output_dir(models_dir);
    crate::model::base::BaseInfo::read(&base_dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tcybertriage\nVmPeak:\t 2000 kB\nVmHWM:\t  812345 kB\nVmRSS:\t  700001 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_status(text), Some(Memory { rss_kib: 700_001, hwm_kib: 812_345 }));
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let memory = Memory::read(std::process::id()).unwrap();
        assert!(memory.rss_kib > 0);
        assert!(memory.hwm_kib >= memory.rss_kib);
    }
}
