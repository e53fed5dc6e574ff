//! Log output of the service, and a panic hook that keeps panic messages out of the logs.

use std::panic::PanicHookInfo;

/// Format of the lines written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Crates whose debug and trace events quote the text they process: the `tokenizers` crate logs
/// the message character by character while it normalises it. They are capped at `warn`
/// whatever level `RUST_LOG` sets, so that no log level writes message text.
const TEXT_QUOTING_TARGETS: &[&str] = &["tokenizers"];

/// Returns the log filter of every command: `RUST_LOG` (default `info`), with the crates of
/// [`TEXT_QUOTING_TARGETS`] capped at `warn`.
pub fn env_filter() -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in TEXT_QUOTING_TARGETS {
        filter = filter.add_directive(format!("{target}=warn").parse().expect("a crate name and a level make a valid directive"));
    }
    filter
}

/// Installs the global subscriber: stderr, in `format`, filtered by [`env_filter`]. Returns
/// false when a subscriber was already installed, which then stays in place.
pub fn init(format: LogFormat) -> bool {
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter()).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init().is_ok(),
    }
}

/// Replaces the default panic hook, which prints the panic message to stderr, by one that logs
/// only the thread and source location. A panic message can quote the input: slicing a `str`
/// at a bad index prints the whole string.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info: &PanicHookInfo<'_>| {
        let thread = std::thread::current();
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), location, "panic (message withheld from the log)");
    }));
}
