//! Log output of the service, and a panic hook that keeps panic messages out of the logs.

use std::panic::PanicHookInfo;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Format of the lines written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Crates whose debug and trace events quote the text they process: the `tokenizers` crate logs
/// the message character by character while it normalises it. Their events below `warn` are
/// dropped whatever `RUST_LOG` sets, module paths and span directives included, so that no log
/// level writes message text.
const TEXT_QUOTING_TARGETS: &[&str] = &["tokenizers"];

/// Returns the log filter that `RUST_LOG` sets (default `info`).
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Tells whether an event may be written: any event at `warn` or above, and below that only
/// events outside [`TEXT_QUOTING_TARGETS`] and their modules.
fn keeps_message_text_out(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let quotes_text = TEXT_QUOTING_TARGETS
        .iter()
        .any(|quoting| target.strip_prefix(quoting).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")));
    !quotes_text || *metadata.level() <= Level::WARN
}

/// Installs the global subscriber of every command: stderr, in `format`, filtered by `RUST_LOG`
/// (default `info`) and by [`keeps_message_text_out`]. Returns false when a subscriber was
/// already installed, which then stays in place.
pub fn init(format: LogFormat) -> bool {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(env_filter()).with_filter(filter_fn(keeps_message_text_out)))
        .try_init()
        .is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::callsite::{Callsite, Identifier};
    use tracing::metadata::Kind;

    struct NoCallsite;
    impl Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("only its identity is used")
        }
    }
    static CALLSITE: NoCallsite = NoCallsite;

    fn event(target: &'static str, level: Level) -> Metadata<'static> {
        let fields = tracing::field::FieldSet::new(&[], Identifier(&CALLSITE));
        Metadata::new("event", target, level, None, None, None, fields, Kind::EVENT)
    }

    #[test]
    fn tokenizer_events_below_warn_are_dropped() {
        assert!(!keeps_message_text_out(&event("tokenizers", Level::TRACE)));
        assert!(!keeps_message_text_out(&event("tokenizers::tokenizer::normalizer", Level::TRACE)));
        assert!(!keeps_message_text_out(&event("tokenizers::tokenizer", Level::DEBUG)));
        assert!(!keeps_message_text_out(&event("tokenizers", Level::INFO)));
        assert!(keeps_message_text_out(&event("tokenizers::tokenizer", Level::WARN)));
        assert!(keeps_message_text_out(&event("tokenizers", Level::ERROR)));
        assert!(keeps_message_text_out(&event("tokenizers_extra", Level::TRACE)));
        assert!(keeps_message_text_out(&event("cybertriage::http", Level::TRACE)));
    }
}
