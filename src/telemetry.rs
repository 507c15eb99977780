//! Logging: `tracing` with structured fields, human-readable (`pretty`) or one JSON object per line (`json`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber once; later calls (tests starting several apps) are no-ops. Besides the
/// console (or the log shipper reading it), trellis's own events reach the log tiers
/// ([`crate::storage::logs::writer::AppLogLayer`]).
pub fn init(settings: &LogSettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::storage::logs::writer::AppLogLayer);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi);
    let _ = match settings.format {
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
}

/// Routes panics through `tracing` so they reach the same sink as everything else. Contained panics (see
/// `runtime::supervisor::contain`) are reported again, with context, as supervision events.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = crate::runtime::supervisor::panic_message(info.payload());
        tracing::error!(%location, "{message}");
    }));
}
