//! Logging: `tracing` with structured fields, human-readable (`pretty`) or one JSON object per line (`json`).
//!
//! The console is written by a thread of its own (`tracing-appender`'s non-blocking writer): an actor that
//! logs formats its line and hands it over, it never waits for a terminal or a pipe that is slow to read. The
//! hand-over queue is bounded; when a reader falls that far behind, lines are dropped rather than trading
//! threads held, and counted (`trellis_log_lines_dropped_total`). What must not be lost is not a log line:
//! orders, fills and the audit chain are records in the stores, and the log tiers have their own writer.
//! [`LogGuard`] flushes what is queued when the process ends normally (SIGTERM included).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Lines the console writer's queue can hold before it drops (a burst of a few seconds of a busy process).
const CONSOLE_QUEUE_LINES: usize = 64 * 1024;

/// The console writer of this process, once installed: its count of dropped lines.
static CONSOLE: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Lines the console writer dropped because its queue was full.
pub fn console_lines_dropped() -> u64 {
    CONSOLE.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keep it for the life of the process: dropping it flushes the console writer's queue.
#[must_use = "dropping the guard stops the console writer"]
pub struct LogGuard(Option<tracing_appender::non_blocking::WorkerGuard>);

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogGuard").field(&self.0.is_some()).finish()
    }
}

/// Installs the global subscriber once; later calls (tests starting several apps) are no-ops and return an
/// empty guard. Besides the console (or the log shipper reading it), trellis's own events reach the log tiers
/// ([`crate::storage::logs::writer::AppLogLayer`]).
pub fn init(settings: &LogSettings) -> LogGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(CONSOLE_QUEUE_LINES)
        .lossy(true)
        .thread_name("trellis-log")
        .finish(std::io::stdout());
    let dropped = writer.error_counter();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::storage::logs::writer::AppLogLayer);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match settings.format {
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    match installed {
        Ok(()) => {
            let _ = CONSOLE.set(dropped);
            crate::metrics::count_console_drops(console_lines_dropped);
            LogGuard(Some(guard))
        }
        Err(_) => LogGuard(None),
    }
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
