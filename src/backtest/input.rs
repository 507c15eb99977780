//! Where a backtest's ticks come from — a file in any supported format, or ticks trellis stored — as one
//! stream of `Result<Tick, HistoryError>`, read as it is consumed so memory does not grow with the history.
//!
//! Stored ticks are read on a thread of their own (the stores' clients are async) and handed over in
//! chunks through a channel two chunks deep: the reader waits while the backtest works.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use super::history::{self, HistoryError, HistoryOptions, TickReader};
use super::parquet::{is_parquet, ParquetTicks};
use crate::domain::Tick;
use crate::storage::clickhouse::ClickHouseConfig;

/// Ticks per chunk read from a store.
const CHUNK: usize = 65_536;

/// Ticks trellis stored: which store, which tenant, symbol and time range (inclusive).
#[derive(Debug, Clone)]
pub struct Stored {
    pub store: Store,
    pub tenant: String,
    pub symbol: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded profile's data directory.
    Embedded(PathBuf),
    ClickHouse(ClickHouseConfig),
}

/// A stream of ticks from one source.
pub enum Ticks {
    Text(Box<TickReader<Box<dyn std::io::BufRead + Send>>>),
    Parquet(Box<ParquetTicks>),
    Stored(StoredTicks),
}

impl Ticks {
    /// A file: Parquet when it starts with Parquet's magic bytes, else text in the detected (or forced)
    /// format. `-` is standard input (text).
    pub fn file(path: &Path, options: HistoryOptions) -> Result<Self, HistoryError> {
        if path != Path::new("-") && is_parquet(path) {
            let digits = options.point.normalize().scale();
            return Ok(Self::Parquet(Box::new(ParquetTicks::open(
                path,
                options.symbol.clone(),
                digits,
            )?)));
        }
        Ok(Self::Text(Box::new(history::open(path, options)?)))
    }

    pub fn stored(source: Stored) -> Self {
        Self::Stored(StoredTicks::start(source))
    }

    /// Lines skipped as bad (with `skip_bad`), and the first of them.
    pub fn skipped(&self) -> (u64, Option<&HistoryError>) {
        match self {
            Self::Text(r) => {
                let (n, first) = r.skipped();
                (n, first.first())
            }
            _ => (0, None),
        }
    }
}

impl Iterator for Ticks {
    type Item = Result<Tick, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Text(r) => r.next(),
            Self::Parquet(r) => r.next(),
            Self::Stored(r) => r.next(),
        }
    }
}

/// Stored ticks arriving in chunks from a reader thread.
pub struct StoredTicks {
    chunks: Receiver<Result<Vec<Tick>, String>>,
    current: std::vec::IntoIter<Tick>,
    failed: bool,
}

impl StoredTicks {
    fn start(source: Stored) -> Self {
        let (tx, rx) = sync_channel(2);
        let spawned = std::thread::Builder::new()
            .name("stored-ticks".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot start a reader: {e}")));
                        return;
                    }
                };
                let sink = |chunk: Vec<Tick>| tx.send(Ok(chunk)).is_ok();
                let Stored {
                    store,
                    tenant,
                    symbol,
                    from_ms,
                    to_ms,
                } = &source;
                let read = runtime.block_on(async {
                    match store {
                        Store::Embedded(dir) => {
                            crate::storage::timeseries::stream_ticks(
                                dir, tenant, symbol, *from_ms, *to_ms, CHUNK, sink,
                            )
                            .await
                        }
                        Store::ClickHouse(cfg) => {
                            crate::storage::clickhouse::stream_ticks(
                                cfg, tenant, symbol, *from_ms, *to_ms, CHUNK, sink,
                            )
                            .await
                        }
                    }
                });
                if let Err(e) = read {
                    let _ = tx.send(Err(e.to_string()));
                }
            });
        let (chunks, failed) = match spawned {
            Ok(_) => (rx, false),
            Err(e) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(format!("cannot start a reader thread: {e}")));
                (rx, false)
            }
        };
        Self {
            chunks,
            current: Vec::new().into_iter(),
            failed,
        }
    }
}

impl Iterator for StoredTicks {
    type Item = Result<Tick, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(t) = self.current.next() {
                return Some(Ok(t));
            }
            if self.failed {
                return None;
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = chunk.into_iter(),
                Ok(Err(e)) => {
                    self.failed = true;
                    return Some(Err(HistoryError::file(e)));
                }
                // The reader finished.
                Err(_) => return None,
            }
        }
    }
}
