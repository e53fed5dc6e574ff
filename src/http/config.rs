//! Options of `cybertriage serve`: the clap flags, and the validated [`ServeConfig`] they
//! resolve to. Every flag also reads an environment variable; the doc comment of each is the
//! operator's manual (unit and default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::http::HeaderValue;

use crate::infer::{BatchConfig, DEFAULT_MAX_TEXT_TOKENS};
use crate::triage::classifier::default_model_dir;

use super::logging::LogFormat;
use super::request::Limits;

/// The command-line and environment options of the service.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address and port to listen on. Use 0.0.0.0:8080 to accept connections from other hosts,
    /// as in a container.
    #[arg(long, env = "CYBERTRIAGE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Classifier model folder. Default: cybertriage-fr/ in the models folder.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Maximum request body size, in bytes. Larger bodies get 413 `body_too_large`.
    #[arg(long, env = "CYBERTRIAGE_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,

    /// Maximum length of `text` and of each `context` entry, in characters after normalisation. Longer
    /// ones get 413 `text_too_long`, unless --window-long-texts is set.
    #[arg(long, env = "CYBERTRIAGE_MAX_CHARS", default_value_t = 4000)]
    pub max_chars: usize,

    /// Accept texts longer than --max-chars (up to --max-body-bytes) and classify them in
    /// overlapping 512-token windows, instead of rejecting them with 413. Off by default.
    #[arg(long, env = "CYBERTRIAGE_WINDOW_LONG_TEXTS")]
    pub window_long_texts: bool,

    /// Maximum encoder tokens of `text`, special tokens included. Longer texts get 413
    /// `too_many_tokens` before any encoder work, unless --window-long-texts is set. It bounds
    /// the work of one text whatever its script: emoji can take one token per character.
    #[arg(long, env = "CYBERTRIAGE_MAX_TOKENS", default_value_t = DEFAULT_MAX_TEXT_TOKENS)]
    pub max_tokens: usize,

    /// Maximum number of earlier messages in `context`, per input. More get 413 `context_too_long`.
    #[arg(long, env = "CYBERTRIAGE_MAX_CONTEXT_MESSAGES", default_value_t = 20)]
    pub max_context_messages: usize,

    /// Maximum number of inputs in one /v1/classify/batch request. More get 413 `batch_too_large`.
    #[arg(long, env = "CYBERTRIAGE_MAX_BATCH_INPUTS", default_value_t = 32)]
    pub max_batch_inputs: usize,

    /// Maximum number of encoder tokens in one forward pass, summed over the batched inputs (context and
    /// windows included). An input above it runs alone.
    #[arg(long, env = "CYBERTRIAGE_MAX_BATCH_TOKENS", default_value_t = 1024)]
    pub max_batch_tokens: usize,

    /// How long a model worker that already has two or more requests waits for more before
    /// running the batch, in milliseconds. A lone request on an idle worker never waits. 0
    /// turns the wait off.
    #[arg(long, env = "CYBERTRIAGE_BATCH_WAIT_MS", default_value_t = 2)]
    pub batch_wait_ms: u64,

    /// Maximum number of requests waiting for a model worker (a batch request counts as one). When the queue
    /// is full, new requests get 503 `overloaded` at once, with a Retry-After header.
    #[arg(long, env = "CYBERTRIAGE_QUEUE_SIZE", default_value_t = 128)]
    pub queue_size: usize,

    /// Maximum time a classify request may take, queue wait included, in milliseconds. Slower
    /// ones get 504 `timeout`.
    #[arg(long, env = "CYBERTRIAGE_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// Model worker threads, each running one forward pass at a time on the one shared model.
    /// The encoder already spreads a forward pass over the CPU cores, so 1 suits most machines.
    #[arg(long, env = "CYBERTRIAGE_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Bearer token that clients must send as `Authorization: Bearer <key>` on every route but
    /// /health, /ready, /openapi.json and /docs. Unset (the default): no authentication. Prefer
    /// the environment variable, since flags show in the process list.
    #[arg(long, env = "CYBERTRIAGE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Origins that browsers may call the API from, comma-separated, such as
    /// https://chat.example.org. Empty (the default): no CORS headers, so browsers refuse
    /// cross-origin calls.
    #[arg(long, env = "CYBERTRIAGE_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Log format on stderr: `text` for people, `json` (one object per line) for log
    /// collectors. `RUST_LOG` sets the level (default `info`).
    #[arg(long, env = "CYBERTRIAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Validated settings of the router and the inference engine.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    pub batching: BatchConfig,
    /// Maximum time a classify request may take, queue wait included.
    pub timeout: Duration,
    pub api_key: Option<String>,
    /// Empty: no CORS layer.
    pub cors_allow_origins: Vec<HeaderValue>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            batching: BatchConfig::default(),
            timeout: Duration::from_secs(10),
            api_key: None,
            cors_allow_origins: Vec::new(),
        }
    }
}

/// Validated settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub model_dir: PathBuf,
    pub log_format: LogFormat,
    pub service: Config,
}

impl Options {
    /// Checks the options and resolves the defaults that depend on the models folder. Errors
    /// name the flag and its environment variable.
    pub fn resolve(self, models_dir: &Path) -> Result<ServeConfig> {
        positive(self.max_body_bytes, "--max-body-bytes (CYBERTRIAGE_MAX_BODY_BYTES)")?;
        positive(self.max_chars, "--max-chars (CYBERTRIAGE_MAX_CHARS)")?;
        positive(self.max_tokens, "--max-tokens (CYBERTRIAGE_MAX_TOKENS)")?;
        positive(self.max_batch_inputs, "--max-batch-inputs (CYBERTRIAGE_MAX_BATCH_INPUTS)")?;
        positive(self.max_batch_tokens, "--max-batch-tokens (CYBERTRIAGE_MAX_BATCH_TOKENS)")?;
        positive(self.queue_size, "--queue-size (CYBERTRIAGE_QUEUE_SIZE)")?;
        positive(self.workers, "--workers (CYBERTRIAGE_WORKERS)")?;
        positive(self.timeout_ms as usize, "--timeout-ms (CYBERTRIAGE_TIMEOUT_MS)")?;
        if let Some(key) = &self.api_key {
            ensure!(
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()),
                "--api-key (CYBERTRIAGE_API_KEY) must be printable ASCII without spaces; leave it unset to turn \
                 authentication off"
            );
        }
        let cors_allow_origins = self
            .cors_allow_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(parse_origin)
            .collect::<Result<_>>()?;

        Ok(ServeConfig {
            addr: self.addr,
            model_dir: self.model_dir.unwrap_or_else(|| default_model_dir(models_dir)),
            log_format: self.log_format,
            service: Config {
                limits: Limits {
                    max_body_bytes: self.max_body_bytes,
                    max_chars: (!self.window_long_texts).then_some(self.max_chars),
                    max_context_messages: self.max_context_messages,
                    max_batch_inputs: self.max_batch_inputs,
                },
                batching: BatchConfig {
                    max_batch_tokens: self.max_batch_tokens,
                    max_wait: Duration::from_millis(self.batch_wait_ms),
                    queue_size: self.queue_size,
                    workers: self.workers,
                    max_text_tokens: (!self.window_long_texts).then_some(self.max_tokens),
                },
                timeout: Duration::from_millis(self.timeout_ms),
                api_key: self.api_key,
                cors_allow_origins,
            },
        })
    }
}

fn positive(value: usize, flag: &str) -> Result<()> {
    ensure!(value > 0, "{flag} must be at least 1");
    Ok(())
}

/// Parses an origin of the form browsers send: `scheme://host[:port]`, with no path.
fn parse_origin(origin: &str) -> Result<HeaderValue> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        bail!("--cors-allow-origins: `{origin}` is not an origin: write it as https://host or https://host:port")
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        bail!("--cors-allow-origins: `{origin}` is not an origin: write it as https://host or https://host:port, without a path");
    }
    HeaderValue::from_str(origin)
        .with_context(|| format!("--cors-allow-origins: `{origin}` is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn resolve(args: &[&str]) -> Result<ServeConfig> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        cli.options.resolve(Path::new("/m"))
    }

    #[test]
    fn flag_defaults_equal_the_library_defaults() {
        let config = resolve(&[]).unwrap();
        let defaults = Config::default();
        assert_eq!(config.service.limits, defaults.limits);
        assert_eq!(config.service.batching, defaults.batching);
        assert_eq!(config.service.timeout, defaults.timeout);
        assert_eq!(config.model_dir, Path::new("/m/cybertriage-fr"));
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        let error = resolve(&["--queue-size", "0"]).unwrap_err().to_string();
        assert!(error.contains("--queue-size"), "{error}");
        let error = resolve(&["--cors-allow-origins", "https://a.org/path"]).unwrap_err().to_string();
        assert!(error.contains("--cors-allow-origins"), "{error}");
        assert!(resolve(&["--api-key", "has space"]).is_err());
    }

    #[test]
    fn windowing_lifts_text_limits() {
        let windowed = resolve(&["--window-long-texts"]).unwrap();
        assert_eq!(windowed.service.limits.max_chars, None);
        assert_eq!(windowed.service.batching.max_text_tokens, None);
        assert_eq!(resolve(&["--max-tokens", "600"]).unwrap().service.batching.max_text_tokens, Some(600));
        let origins = resolve(&["--cors-allow-origins", "https://a.org, http://localhost:3000"]).unwrap();
        assert_eq!(origins.service.cors_allow_origins.len(), 2);
    }
}
