//! Report of the load benchmark: the figures, the machine, the date and the command line, as a
//! table for people and as JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::http::Target;
use super::messages::{self, BenchMessage, Kind};
use super::stats::{median, LatencySummary};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the levels ended, UTC, RFC 3339.
    pub date: String,
    pub command: Vec<String>,
    /// Commit of the source tree this binary was built from, read when the report is made, with
    /// `+uncommitted` when tracked files differ from it. The binary may predate those changes.
    pub source_commit: Option<String>,
    pub machine: Machine,
    pub server: ServerReport,
    pub messages: MixReport,
    pub requests_per_level: usize,
    pub levels: Vec<LevelReport>,
    pub http_overhead: Option<OverheadReport>,
    /// Reason the HTTP overhead was not measured, when its measure failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_overhead_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub os: String,
    /// 1-, 5- and 15-minute load averages when the report is made. They include the benchmark's
    /// own load, so above the core count something else ran too. `None` without /proc/loadavg.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
            os: std::env::consts::OS.to_string(),
            load_average: std::fs::read_to_string("/proc/loadavg").ok().and_then(|text| load_average(&text)),
        }
    }
}

/// Parses the three load averages at the start of `/proc/loadavg`.
fn load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg.split_whitespace().map(str::parse::<f64>);
    Some([fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?])
}

/// Returns the first `model name` of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// True when the benchmark started the server itself.
    pub spawned: bool,
    pub url: String,
    pub serve_args: Vec<String>,
    /// From process spawn to the first 200 from /ready, for each start.
    pub cold_start_seconds: Vec<f64>,
    pub cold_start_median_seconds: Option<f64>,
    /// Resident memory after the warm-up requests, before the first level.
    pub idle_rss_mib: Option<f64>,
}

impl ServerReport {
    pub fn spawned(target: &Target, serve_args: &[String], cold_start_seconds: Vec<f64>) -> Self {
        ServerReport {
            spawned: true,
            url: format!("http://{}", target.authority),
            serve_args: serve_args.to_vec(),
            cold_start_median_seconds: median(&cold_start_seconds),
            cold_start_seconds,
            idle_rss_mib: None,
        }
    }

    pub fn external(target: &Target) -> Self {
        ServerReport {
            spawned: false,
            url: format!("http://{}", target.authority),
            serve_args: Vec::new(),
            cold_start_seconds: Vec::new(),
            cold_start_median_seconds: None,
            idle_rss_mib: None,
        }
    }
}

/// Size of the message mix, by kind.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    pub count: usize,
    pub by_kind: BTreeMap<String, usize>,
    pub with_context: usize,
}

impl MixReport {
    pub fn of(mix: &[BenchMessage]) -> Self {
        MixReport {
            count: mix.len(),
            by_kind: messages::counts(mix).into_iter().map(|(kind, n)| (kind.name().to_string(), n)).collect(),
            with_context: mix.iter().filter(|m| !m.context.is_empty()).count(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub concurrency: usize,
    pub requests: usize,
    /// Responses with status 200.
    pub ok: usize,
    /// Wall time of the level, first request sent to last response read.
    pub seconds: f64,
    /// Successful responses per second.
    pub throughput_rps: f64,
    /// Latency of the successful responses.
    pub latency: Option<LatencySummary>,
    /// Failed requests by `STATUS CODE`, `transport: KIND` or `client timeout`.
    pub errors: BTreeMap<String, usize>,
    /// Highest `VmRSS` sampled during the level.
    pub rss_peak_mib: Option<f64>,
    /// `VmHWM` after the level: the highest resident size since the server started.
    pub vm_hwm_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub rounds: usize,
    /// Id of the message in the mix.
    pub message_id: String,
    pub http_p50_ms: f64,
    pub in_process_p50_ms: f64,
    /// `http_p50_ms - in_process_p50_ms`.
    pub difference_ms: f64,
    /// Median over the rounds of (HTTP time - in-process time) of the same round, which cancels
    /// load changes that last longer than a round.
    pub paired_difference_p50_ms: f64,
}

impl Report {
    pub fn new(server: ServerReport, messages: MixReport, requests_per_level: usize, levels: Vec<LevelReport>) -> Self {
        Report {
            date: utc_rfc3339(SystemTime::now()),
            command: std::env::args().collect(),
            source_commit: source_commit(),
            machine: Machine::detect(),
            server,
            messages,
            requests_per_level,
            levels,
            http_overhead: None,
            http_overhead_error: None,
        }
    }

    /// Formats the figures as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>11} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>13} {:>10}  errors",
            "concurrency", "requests", "ok", "req/s", "p50 ms", "p95 ms", "p99 ms", "RSS peak MiB", "VmHWM MiB"
        );
        for level in &self.levels {
            let _ = writeln!(out, "{}", level.row());
        }

        if let Some(error) = &self.http_overhead_error {
            let _ = writeln!(out);
            let _ = writeln!(out, "HTTP overhead not measured: {error}");
        }
        if let Some(o) = &self.http_overhead {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "HTTP overhead ({} alternating rounds, message {}): server p50 {:.2} ms, in-process p50 {:.2} ms, \
                 difference {:+.2} ms (median of per-round differences {:+.2} ms)",
                o.rounds, o.message_id, o.http_p50_ms, o.in_process_p50_ms, o.difference_ms, o.paired_difference_p50_ms
            );
        }
        out
    }

    /// Writes the lines about the run, the server and the mix.
    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let source = self.source_commit.as_deref().unwrap_or("unknown commit");
        let _ = writeln!(out, "cybertriage bench ({source}), {}, {} cores, {} ({})", self.date, m.cores, m.cpu_model, m.os);
        if let Some([one, five, fifteen]) = m.load_average {
            let _ = writeln!(out, "load average at the end (1, 5, 15 min): {one:.2} {five:.2} {fifteen:.2}");
        }

        let kinds: Vec<String> = Kind::ALL
            .iter()
            .filter_map(|kind| self.messages.by_kind.get(kind.name()).map(|n| format!("{n} {}", kind.name())))
            .collect();
        let _ = writeln!(
            out,
            "server {} ({}); mix of {} messages ({}; {} with context); {} requests per level",
            self.server.url,
            if self.server.spawned { "started by the benchmark" } else { "external" },
            self.messages.count,
            kinds.join(", "),
            self.messages.with_context,
            self.requests_per_level
        );

        if let Some(cold) = self.server.cold_start_median_seconds {
            let each: Vec<String> = self.server.cold_start_seconds.iter().map(|s| format!("{s:.2}")).collect();
            let _ = writeln!(out, "cold start to /ready: {cold:.2} s (median of {}: {} s)", each.len(), each.join(", "));
        }
        if let Some(idle) = self.server.idle_rss_mib {
            let _ = writeln!(out, "server RSS after warm-up: {idle:.0} MiB");
        }
    }
}

impl LevelReport {
    /// Formats the level as one row of [`Report::table`].
    fn row(&self) -> String {
        let (p50, p95, p99) = match &self.latency {
            Some(l) => (format!("{:.1}", l.p50_ms), format!("{:.1}", l.p95_ms), format!("{:.1}", l.p99_ms)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let errors = if self.errors.is_empty() {
            "0".to_string()
        } else {
            self.errors.iter().map(|(k, n)| format!("{n} × {k}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "{:>11} {:>8} {:>6} {:>8.2} {:>8} {:>8} {:>8} {:>13} {:>10}  {}",
            self.concurrency,
            self.requests,
            self.ok,
            self.throughput_rps,
            p50,
            p95,
            p99,
            optional_mib(self.rss_peak_mib),
            optional_mib(self.vm_hwm_mib),
            errors
        )
    }
}

/// `None` outside a git checkout or without git.
fn source_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            // Keeps `git status` from rewriting the index of a tree someone may be committing in.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{head}+uncommitted") } else { head })
}

fn optional_mib(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".to_string())
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub fn utc_rfc3339(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (leap day) 12:34:56 and 2026-12-04 00:00:00, from `date -u -d @…`.
        assert_eq!(utc_rfc3339(UNIX_EPOCH + Duration::from_secs(951_827_696)), "2000-02-29T12:34:56Z");
        assert_eq!(utc_rfc3339(UNIX_EPOCH + Duration::from_secs(1_796_342_400)), "2026-12-04T00:00:00Z");
    }

    #[test]
    fn parses_the_load_average() {
        assert_eq!(load_average("0.52 1.10 1.35 2/345 6789\n"), Some([0.52, 1.10, 1.35]));
        assert_eq!(load_average("0.52 1.10"), None);
        assert_eq!(load_average(""), None);
    }

    #[test]
    fn reads_the_cpu_model() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model(""), None);
    }
}
