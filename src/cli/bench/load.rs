//! The load benchmark, `cybertriage bench`: cold start, `POST /v1/classify` at several
//! concurrency levels over the message mix, the server's memory, and the HTTP overhead against
//! in-process classification of the same message.
//!
//! Each level sends a bounded number of requests over as many keep-alive connections as its
//! concurrency; the connections open before the clock starts. The client runs on one thread so
//! that it takes as little CPU as possible from the server. Latency counts successful
//! responses only; every other outcome is counted under its status and error code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::http::{request_bytes, Connection, Response, Target};
use super::messages::{self, BenchMessage};
use super::report::{LevelReport, MixReport, OverheadReport, Report, ServerReport};
use super::server::{require_base, Memory, RssSampler, ServerCommand, SpawnedServer};
use super::stats::{median, LatencySummary};
use crate::triage::classifier::{default_model_dir, Classifier, Classify};

/// Seed of the order in which the mix is sent; every level uses the same order.
const ORDER_SEED: u64 = 7;
/// Interval between two `VmRSS` readings during a level.
const RSS_INTERVAL: Duration = Duration::from_millis(50);
/// Rounds run before the HTTP overhead is recorded, to warm both paths.
const OVERHEAD_WARMUP: usize = 3;
/// How long the server may take to serve a lone request again after a level.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of a running server, such as http://127.0.0.1:8080. Unset (the default): the
    /// benchmark starts `cybertriage serve` itself on a free loopback port and stops it at the end.
    #[arg(long, env = "CYBERTRIAGE_BENCH_URL")]
    pub url: Option<String>,

    /// Allow a --url whose host is not a loopback address. Off by default, so that a load test
    /// never leaves the machine by mistake.
    #[arg(long, env = "CYBERTRIAGE_BENCH_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// With --url: process id of the server, to report its memory (Linux only). Without it,
    /// memory is reported only for a server the benchmark starts.
    #[arg(long, env = "CYBERTRIAGE_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,

    /// Concurrency levels, comma-separated: the number of connections that each keep one
    /// request in flight.
    #[arg(long, env = "CYBERTRIAGE_BENCH_CONCURRENCY", value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,

    /// Requests per concurrency level.
    #[arg(long, env = "CYBERTRIAGE_BENCH_REQUESTS", default_value_t = 200)]
    pub requests: usize,

    /// Requests sent one at a time before the first level, not counted.
    #[arg(long, env = "CYBERTRIAGE_BENCH_WARMUP", default_value_t = 5)]
    pub warmup: usize,

    /// JSONL file of `{"id", "kind", "text", "context"?}` messages to send, in the proportions
    /// of the file. Default: the invented mix of benches/messages.jsonl, compiled in.
    #[arg(long, env = "CYBERTRIAGE_BENCH_MESSAGES")]
    pub messages: Option<PathBuf>,

    /// Rounds of the HTTP overhead measure: one request at concurrency 1 and one in-process
    /// classification of the same short message per round. 0 skips it (and loading the
    /// classifier in the benchmark process).
    #[arg(long, env = "CYBERTRIAGE_BENCH_OVERHEAD_ROUNDS", default_value_t = 50)]
    pub overhead_rounds: usize,

    /// Classifier model folder, for the started server and the in-process classifier. Default:
    /// cybertriage-fr/ in the models folder.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// How many times to start the server, stopping all but the last, to report the median
    /// cold start. Only when the benchmark starts the server.
    #[arg(long, env = "CYBERTRIAGE_BENCH_COLD_STARTS", default_value_t = 1)]
    pub cold_starts: usize,

    /// Extra arguments for the started `cybertriage serve`, space-separated, such as
    /// "--workers 2". Repeatable.
    #[arg(long, env = "CYBERTRIAGE_BENCH_SERVE_ARGS", value_delimiter = ' ', allow_hyphen_values = true)]
    pub serve_arg: Vec<String>,

    /// File that receives the started server's log. Default: the log is discarded.
    #[arg(long, env = "CYBERTRIAGE_BENCH_SERVER_LOG")]
    pub server_log: Option<PathBuf>,

    /// How long to wait for the started server's /ready to return 200, in seconds.
    #[arg(long, env = "CYBERTRIAGE_BENCH_READY_TIMEOUT", default_value_t = 120)]
    pub ready_timeout: u64,

    /// Client-side limit on one request, in seconds; a slower request counts as an error.
    #[arg(long, env = "CYBERTRIAGE_BENCH_REQUEST_TIMEOUT", default_value_t = 60)]
    pub request_timeout: u64,

    /// API key sent as `Authorization: Bearer <key>`, and given to the started server. Unset:
    /// no key.
    #[arg(long, env = "CYBERTRIAGE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Also write the figures, the machine, the date and the command line to this JSON file.
    #[arg(long, env = "CYBERTRIAGE_BENCH_JSON")]
    pub json: Option<PathBuf>,
}

/// The server under test.
#[derive(Debug, Clone)]
pub enum ServerMode {
    Spawn { command: ServerCommand, cold_starts: usize },
    Url { target: Target, pid: Option<u32> },
}

/// Validated settings of the load benchmark.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: ServerMode,
    pub concurrency: Vec<usize>,
    pub requests: usize,
    pub warmup: usize,
    pub messages: Vec<BenchMessage>,
    pub overhead_rounds: usize,
    pub models_dir: PathBuf,
    pub model_dir: PathBuf,
    pub api_key: Option<String>,
    pub request_timeout: Duration,
    pub json: Option<PathBuf>,
}

impl LoadArgs {
    /// Checks the options and resolves the server to test. Errors name the flag.
    pub fn resolve(self, models_dir: &Path) -> Result<LoadConfig> {
        ensure!(!self.concurrency.is_empty(), "--concurrency needs at least one level, such as 1,4,16,64");
        ensure!(self.concurrency.iter().all(|&c| c > 0), "--concurrency levels must be at least 1");
        ensure!(self.requests > 0, "--requests must be at least 1");
        ensure!(self.request_timeout > 0, "--request-timeout must be at least 1 second");
        let server = match &self.url {
            Some(url) => {
                for (set, flag) in [
                    (!self.serve_arg.is_empty(), "--serve-arg"),
                    (self.server_log.is_some(), "--server-log"),
                    (self.cold_starts != 1, "--cold-starts"),
                ] {
                    ensure!(!set, "{flag} applies only to a server the benchmark starts, not with --url");
                }
                let target = Target::parse(url)?;
                if !target.loopback && !self.allow_remote {
                    bail!("--url {url} is not a loopback address: pass --allow-remote to load a server on another host");
                }
                ServerMode::Url { target, pid: self.server_pid }
            }
            None => {
                ensure!(self.server_pid.is_none(), "--server-pid applies only with --url");
                ensure!(self.cold_starts > 0, "--cold-starts must be at least 1");
                let command = ServerCommand {
                    exe: std::env::current_exe().context("failed to find this program's path, needed to start the server")?,
                    models_dir: models_dir.to_path_buf(),
                    model_dir: self.model_dir.clone(),
                    serve_args: self.serve_arg.into_iter().filter(|a| !a.is_empty()).collect(),
                    api_key: self.api_key.clone(),
                    log: self.server_log,
                    ready_timeout: Duration::from_secs(self.ready_timeout),
                };
                ServerMode::Spawn { command, cold_starts: self.cold_starts }
            }
        };
        Ok(LoadConfig {
            server,
            concurrency: self.concurrency,
            requests: self.requests,
            warmup: self.warmup,
            messages: messages::load(self.messages.as_deref())?,
            overhead_rounds: self.overhead_rounds,
            models_dir: models_dir.to_path_buf(),
            model_dir: self.model_dir.unwrap_or_else(|| default_model_dir(models_dir)),
            api_key: self.api_key,
            request_timeout: Duration::from_secs(self.request_timeout),
            json: self.json,
        })
    }
}

pub fn run(models_dir: &Path, args: LoadArgs) -> Result<ExitCode> {
    let config = args.resolve(models_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(measure(&config))?;
    print!("{}", report.table());
    if let Some(path) = &config.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The server under test while the benchmark runs.
struct Server {
    target: Target,
    pid: Option<u32>,
    spawned: Option<SpawnedServer>,
    report: ServerReport,
}

async fn measure(config: &LoadConfig) -> Result<Report> {
    let mut server = start_server(config).await?;
    let outcome = drive(config, &mut server).await;
    if let Some(spawned) = server.spawned.take() {
        spawned.stop()?;
    }
    outcome
}

async fn start_server(config: &LoadConfig) -> Result<Server> {
    match &config.server {
        ServerMode::Url { target, pid } => Ok(Server {
            target: target.clone(),
            pid: *pid,
            spawned: None,
            report: ServerReport::external(target),
        }),
        ServerMode::Spawn { command, cold_starts } => {
            require_base(&config.models_dir)?;
            let mut cold = Vec::new();
            for attempt in 1..=*cold_starts {
                tracing::info!(attempt, of = cold_starts, "starting the server");
                let spawned = SpawnedServer::start(command).await?;
                tracing::info!(seconds = spawned.cold_start.as_secs_f64(), "server ready");
                cold.push(spawned.cold_start.as_secs_f64());
                if attempt < *cold_starts {
                    spawned.stop()?;
                    continue;
                }
                let report = ServerReport::spawned(&spawned.target, &command.serve_args, cold);
                return Ok(Server { target: spawned.target.clone(), pid: Some(spawned.pid()), spawned: Some(spawned), report });
            }
            unreachable!("--cold-starts is at least 1")
        }
    }
}

async fn drive(config: &LoadConfig, server: &mut Server) -> Result<Report> {
    let bodies: Vec<Vec<u8>> = config
        .messages
        .iter()
        .map(|m| request_bytes("POST", "/v1/classify", &server.target, Some(&m.classify_body()), config.api_key.as_deref()))
        .collect();
    let mut order: Vec<usize> = (0..bodies.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(ORDER_SEED));
    let plan = Arc::new(Plan { bodies, order, timeout: config.request_timeout });

    if config.warmup > 0 {
        tracing::info!(requests = config.warmup, "warm-up");
        let warmup = run_level(server.target.addr, &plan, 1, config.warmup).await?;
        if let Some((key, count)) = warmup.errors.iter().next() {
            bail!(
                "{count} of {} warm-up requests failed with {key}: check that the server is ready and the API key is right",
                config.warmup
            );
        }
    }
    server.report.idle_rss_mib = server.pid.and_then(|pid| Memory::read(pid).ok()).map(|m| mib(m.rss_kib));

    let probe = request_bytes(
        "POST",
        "/v1/classify",
        &server.target,
        Some(&messages::single(&config.messages)?.classify_body()),
        config.api_key.as_deref(),
    );
    let mut levels = Vec::new();
    for &concurrency in &config.concurrency {
        settle(server.target.addr, &probe).await?;
        tracing::info!(concurrency, requests = config.requests, "level");
        let sampler = server.pid.map(|pid| RssSampler::start(pid, RSS_INTERVAL));
        let outcome = run_level(server.target.addr, &plan, concurrency, config.requests).await?;
        let rss_peak_mib = sampler.map(|s| mib(s.finish()));
        let vm_hwm_mib = server.pid.and_then(|pid| Memory::read(pid).ok()).map(|m| mib(m.hwm_kib));
        levels.push(outcome.report(concurrency, config.requests, rss_peak_mib, vm_hwm_mib));
    }

    let mut report = Report::new(server.report.clone(), MixReport::of(&config.messages), config.requests, levels);
    if config.overhead_rounds > 0 {
        // A failure here keeps the level figures: it is reported instead of the overhead.
        let overhead = match settle(server.target.addr, &probe).await {
            Ok(()) => http_overhead(config, &server.target, config.overhead_rounds).await,
            Err(error) => Err(error),
        };
        match overhead {
            Ok(overhead) => report.http_overhead = Some(overhead),
            Err(error) => report.http_overhead_error = Some(format!("{error:#}")),
        }
    }
    Ok(report)
}

/// Waits until the server returns 200 to a lone request. Requests whose clients gave up (504)
/// may still be in a forward pass after a level, and would otherwise slow the next one.
async fn settle(addr: SocketAddr, probe: &[u8]) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut connection = Connection::open(addr).await.with_context(|| format!("failed to connect to {addr}"))?;
        let response = connection.send(probe).await.context("the settling request failed")?;
        if response.status == 200 {
            return Ok(());
        }
        if started.elapsed() > SETTLE_LIMIT {
            bail!(
                "the server still returns {} to a lone request {} s after the load stopped",
                response.status,
                SETTLE_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The requests of a run: one pre-built request per message, and the order they are sent in.
struct Plan {
    bodies: Vec<Vec<u8>>,
    order: Vec<usize>,
    timeout: Duration,
}

impl Plan {
    fn request(&self, index: usize) -> &[u8] {
        &self.bodies[self.order[index % self.order.len()]]
    }
}

/// Figures recorded by one level.
struct LevelOutcome {
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
}

impl LevelOutcome {
    fn report(self, concurrency: usize, requests: usize, rss_peak_mib: Option<f64>, vm_hwm_mib: Option<f64>) -> LevelReport {
        let seconds = self.elapsed.as_secs_f64();
        LevelReport {
            concurrency,
            requests,
            ok: self.latencies.len(),
            seconds,
            throughput_rps: self.latencies.len() as f64 / seconds,
            latency: LatencySummary::of(&self.latencies),
            errors: self.errors,
            rss_peak_mib,
            vm_hwm_mib,
        }
    }
}

/// Outcome of one request: its latency when it succeeded, else the key it is counted under.
type RequestOutcome = std::result::Result<Duration, String>;

/// Sends `total` requests from `concurrency` connections, each keeping one request in flight.
async fn run_level(addr: SocketAddr, plan: &Arc<Plan>, concurrency: usize, total: usize) -> Result<LevelOutcome> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(addr).await.with_context(|| format!("failed to connect to {addr}"))?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|connection| tokio::spawn(client(addr, Arc::clone(plan), Arc::clone(&next), total, connection)))
        .collect();
    let mut outcomes = Vec::with_capacity(total);
    for task in tasks {
        outcomes.extend(task.await?);
    }
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(total);
    let mut errors = BTreeMap::new();
    for outcome in outcomes {
        match outcome {
            Ok(latency) => latencies.push(latency),
            Err(key) => *errors.entry(key).or_insert(0) += 1,
        }
    }
    Ok(LevelOutcome { elapsed, latencies, errors })
}

/// Runs one connection: takes the next request index until `total` are taken.
async fn client(addr: SocketAddr, plan: Arc<Plan>, next: Arc<AtomicUsize>, total: usize, connection: Connection) -> Vec<RequestOutcome> {
    let mut connection = Some(connection);
    let mut outcomes = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= total {
            return outcomes;
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(plan.timeout, send(&mut connection, addr, plan.request(index))).await;
        let latency = started.elapsed();
        outcomes.push(match sent {
            Ok(Ok(response)) => {
                if response.close {
                    connection = None;
                }
                classify_outcome(&response, latency)
            }
            Ok(Err(error)) => {
                connection = None;
                Err(format!("transport: {:?}", error.kind()))
            }
            Err(_) => {
                connection = None;
                Err("client timeout".to_string())
            }
        });
    }
}

/// Sends on the connection, opening a new one if the last was dropped.
async fn send(connection: &mut Option<Connection>, addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    if connection.is_none() {
        *connection = Some(Connection::open(addr).await?);
    }
    connection.as_mut().expect("opened above").send(request).await
}

fn classify_outcome(response: &Response, latency: Duration) -> RequestOutcome {
    if response.status == 200 {
        Ok(latency)
    } else {
        Err(format!("{} {}", response.status, response.error_code().unwrap_or_else(|| "-".to_string())))
    }
}

/// Alternates one request to the server and one in-process classification of the same short
/// message, so that both see the same machine load, and compares their medians.
async fn http_overhead(config: &LoadConfig, target: &Target, rounds: usize) -> Result<OverheadReport> {
    let message = messages::single(&config.messages)?;
    tracing::info!(model_dir = %config.model_dir.display(), "loading the classifier in-process for the HTTP overhead");
    let classifier = Classifier::load(&config.models_dir, &config.model_dir)?;
    let request = request_bytes("POST", "/v1/classify", target, Some(&message.classify_body()), config.api_key.as_deref());
    let input = [message.input()];
    let mut connection = Connection::open(target.addr).await.with_context(|| format!("failed to connect to {}", target.addr))?;
    let (mut http_ms, mut local_ms) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..OVERHEAD_WARMUP + rounds {
        let started = Instant::now();
        let response = connection.send(&request).await.context("HTTP overhead request failed")?;
        let http = started.elapsed();
        ensure!(response.status == 200, "HTTP overhead request got status {}", response.status);
        let started = Instant::now();
        classifier.classify(&input).map_err(anyhow::Error::from)?;
        let local = started.elapsed();
        if round >= OVERHEAD_WARMUP {
            http_ms.push(http.as_secs_f64() * 1000.0);
            local_ms.push(local.as_secs_f64() * 1000.0);
        }
    }
    let (http_p50, local_p50) = (median(&http_ms).unwrap_or(0.0), median(&local_ms).unwrap_or(0.0));
    let paired: Vec<f64> = http_ms.iter().zip(&local_ms).map(|(http, local)| http - local).collect();
    Ok(OverheadReport {
        rounds,
        message_id: message.id.clone(),
        http_p50_ms: http_p50,
        in_process_p50_ms: local_p50,
        difference_ms: http_p50 - local_p50,
        paired_difference_p50_ms: median(&paired).unwrap_or(0.0),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn resolve(args: &[&str]) -> Result<LoadConfig> {
        let cli = Cli::try_parse_from(["cybertriage", "bench"].iter().chain(args)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Command::Bench(bench) = cli.command else { panic!("not the bench command") };
        assert!(bench.mode.is_none());
        bench.load.resolve(Path::new("/models"))
    }

    #[test]
    fn defaults_start_a_server_with_four_levels() {
        let config = resolve(&[]).unwrap();
        assert_eq!(config.concurrency, vec![1, 4, 16, 64]);
        assert_eq!(config.requests, 200);
        assert_eq!(config.model_dir, Path::new("/models/cybertriage-fr"));
        assert!(matches!(config.server, ServerMode::Spawn { cold_starts: 1, .. }));
    }

    #[test]
    fn parses_levels_and_serve_args() {
        let config = resolve(&["--concurrency", "2,8", "--serve-arg", "--workers 2", "--serve-arg=--batch-wait-ms=0"]).unwrap();
        assert_eq!(config.concurrency, vec![2, 8]);
        let ServerMode::Spawn { command, .. } = config.server else { panic!("expected a spawned server") };
        assert_eq!(command.serve_args, ["--workers", "2", "--batch-wait-ms=0"]);
    }

    #[test]
    fn refuses_bad_levels_and_remote_urls() {
        assert!(resolve(&["--concurrency", "1,0"]).unwrap_err().to_string().contains("--concurrency"));
        assert!(resolve(&["--requests", "0"]).is_err());
        let remote = resolve(&["--url", "http://192.0.2.1:8080"]).unwrap_err().to_string();
        assert!(remote.contains("--allow-remote"), "{remote}");
        assert!(resolve(&["--url", "http://192.0.2.1:8080", "--allow-remote"]).is_ok());
        assert!(resolve(&["--url", "http://127.0.0.1:8080", "--cold-starts", "3"]).is_err());
        assert!(resolve(&["--server-pid", "1"]).is_err());
        assert!(matches!(resolve(&["--url", "http://localhost:8080"]).unwrap().server, ServerMode::Url { .. }));
    }

    #[test]
    fn errors_are_keyed_by_status_and_code() {
        let overloaded = Response { status: 503, body: br#"{"error":{"code":"overloaded","message":"m"}}"#.to_vec(), close: false };
        assert_eq!(classify_outcome(&overloaded, Duration::ZERO), Err("503 overloaded".to_string()));
        let ok = Response { status: 200, body: b"{}".to_vec(), close: false };
        assert_eq!(classify_outcome(&ok, Duration::from_millis(3)), Ok(Duration::from_millis(3)));
    }
}
