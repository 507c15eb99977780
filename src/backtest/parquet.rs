//! Ticks in Parquet: the fastest way to feed history to a backtest.
//!
//! Parquet stores each column apart (all times, then all bids, then all asks), encoded and compressed
//! (zstd here), so a file is several times smaller than the same ticks as CSV and is decoded a column
//! batch at a time instead of parsed character by character. Files are cut into row groups; both sides
//! here work one row group at a time, so memory stays constant whatever the length of the history:
//!
//! - [`write_ticks`] buffers [`ROW_GROUP_ROWS`] ticks, writes them as a row group and starts again. The
//!   schema is `time_msc INT64 (TIMESTAMP millis, UTC), bid DOUBLE, ask DOUBLE[, symbol BYTE_ARRAY UTF8]`
//!   with the key-value metadata `trellis.ticks = 1`.
//! - [`ParquetTicks`] reads [`BATCH_ROWS`] values of each column at a time from the current row group
//!   (never the whole file) and yields ticks one by one, checked like the CSV reader of `sim::feed`.
//!
//! Files written by other tools (pandas, polars, DuckDB, exports of MT5 ticks) are read too: columns are
//! found by name, whatever their order, and the usual types are converted (see [`ParquetTicks`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{
    Compression, ConvertedType, LogicalType, TimeUnit, Type as PhysicalType, ZstdLevel,
};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{
    ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnDescriptor;
use rust_decimal::Decimal;

use crate::backtest::history::HistoryError;
use crate::domain::{Symbol, Tick};

/// Rows per row group written by [`write_ticks`] (and so ticks held in memory while writing).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Values of each column decoded at a time by [`ParquetTicks`].
pub const BATCH_ROWS: usize = 64 * 1024;
/// Key-value metadata that marks a file written by [`write_ticks`] (value: the layout version, `1`).
pub const METADATA_KEY: &str = "trellis.ticks";

const SCHEMA: &str = "message ticks {
    required int64 time_msc (TIMESTAMP(MILLIS,true));
    required double bid;
    required double ask;
}";

const SCHEMA_WITH_SYMBOL: &str = "message ticks {
    required int64 time_msc (TIMESTAMP(MILLIS,true));
    required double bid;
    required double ask;
    required binary symbol (STRING);
}";

/// Names accepted for the time column, in order of preference (compared case-insensitively).
const TIME_NAMES: [&str; 3] = ["time_msc", "time", "timestamp"];

fn write_error(e: ParquetError) -> HistoryError {
    HistoryError::file(format!("cannot write Parquet: {e}"))
}

fn row_error(
    line: u64,
    column: &str,
    value: Option<String>,
    reason: impl Into<String>,
) -> HistoryError {
    HistoryError {
        line,
        column: Some(column.to_owned()),
        value,
        reason: reason.into(),
    }
}

/// Writes `ticks` to `out` as Parquet (zstd, row groups of [`ROW_GROUP_ROWS`] rows) and returns how many
/// rows were written. Prices are stored as DOUBLE, which every tool reads; [`ParquetTicks`] gives the
/// exact decimals back by rounding to the symbol's digits.
///
/// Without `with_symbol` the file has no symbol column (the reader is told the symbol), so all ticks must
/// be of one symbol: a tick of a second symbol is an error naming its row.
///
/// The first `Err` of `ticks` (or of the writing) is returned as it is and the writing stops: what was
/// already written to `out` is not a valid Parquet file (it has no footer) and must be discarded.
pub fn write_ticks<W: Write + Send>(
    out: W,
    ticks: impl Iterator<Item = Result<Tick, HistoryError>>,
    with_symbol: bool,
) -> Result<u64, HistoryError> {
    let schema = parse_message_type(if with_symbol {
        SCHEMA_WITH_SYMBOL
    } else {
        SCHEMA
    })
    .map_err(write_error)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            METADATA_KEY.to_owned(),
            "1".to_owned(),
        )]))
        .build();
    let mut writer =
        SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props)).map_err(write_error)?;
    let mut group = RowGroup::with_capacity(if with_symbol { ROW_GROUP_ROWS } else { 0 });
    let mut only_symbol: Option<Symbol> = None;
    let mut rows = 0u64;
    for tick in ticks {
        let tick = tick?;
        rows += 1;
        if with_symbol {
            group
                .symbols
                .push(ByteArray::from(tick.symbol.as_str().as_bytes().to_vec()));
        } else {
            match &only_symbol {
                None => only_symbol = Some(tick.symbol),
                Some(first) if *first == tick.symbol => {}
                Some(first) => {
                    return Err(row_error(
                        rows,
                        "symbol",
                        Some(tick.symbol.into_string()),
                        format!(
                        "ticks of a second symbol (the first was {first}) need the symbol column"
                    ),
                    ))
                }
            }
        }
        group.times.push(tick.time_msc);
        group.bids.push(tick.bid.as_f64());
        group.asks.push(tick.ask.as_f64());
        if group.times.len() >= ROW_GROUP_ROWS {
            group.write(&mut writer)?;
        }
    }
    if !group.times.is_empty() {
        group.write(&mut writer)?;
    }
    writer.close().map_err(write_error)?;
    Ok(rows)
}

/// The ticks of one row group being written, column by column.
struct RowGroup {
    times: Vec<i64>,
    bids: Vec<f64>,
    asks: Vec<f64>,
    symbols: Vec<ByteArray>,
}

impl RowGroup {
    fn with_capacity(symbols: usize) -> Self {
        Self {
            times: Vec::with_capacity(ROW_GROUP_ROWS),
            bids: Vec::with_capacity(ROW_GROUP_ROWS),
            asks: Vec::with_capacity(ROW_GROUP_ROWS),
            symbols: Vec::with_capacity(symbols),
        }
    }

    /// Writes the buffered ticks as a row group and empties the buffers (keeping their capacity).
    fn write<W: Write + Send>(
        &mut self,
        writer: &mut SerializedFileWriter<W>,
    ) -> Result<(), HistoryError> {
        let mut group = writer.next_row_group().map_err(write_error)?;
        let mut index = 0;
        while let Some(mut column) = group.next_column().map_err(write_error)? {
            let written = match (index, column.untyped()) {
                (0, ColumnWriter::Int64ColumnWriter(w)) => w.write_batch(&self.times, None, None),
                (1, ColumnWriter::DoubleColumnWriter(w)) => w.write_batch(&self.bids, None, None),
                (2, ColumnWriter::DoubleColumnWriter(w)) => w.write_batch(&self.asks, None, None),
                (3, ColumnWriter::ByteArrayColumnWriter(w)) => {
                    w.write_batch(&self.symbols, None, None)
                }
                _ => {
                    return Err(HistoryError::file(format!(
                        "cannot write Parquet: unexpected column {index} in the schema"
                    )))
                }
            };
            written.map_err(write_error)?;
            column.close().map_err(write_error)?;
            index += 1;
        }
        group.close().map_err(write_error)?;
        self.times.clear();
        self.bids.clear();
        self.asks.clear();
        self.symbols.clear();
        Ok(())
    }
}

/// True when the file starts with the Parquet magic bytes `PAR1` (false when it cannot be read).
pub fn is_parquet(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1"
}

/// Unit of an INT64 time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKind {
    Millis,
    Micros,
    Nanos,
}

impl TimeKind {
    fn to_millis(self, v: i64) -> i64 {
        match self {
            Self::Millis => v,
            Self::Micros => v.div_euclid(1_000),
            Self::Nanos => v.div_euclid(1_000_000),
        }
    }
}

/// How the values of a price column become decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PriceKind {
    /// DOUBLE or FLOAT, rounded to the symbol's digits.
    Float,
    /// DECIMAL on INT32 or INT64 with this scale: exact.
    Decimal(u32),
}

/// A column of the file used for ticks.
struct Column {
    /// Index among the file's leaf columns.
    index: usize,
    /// As spelt in the file.
    name: String,
    /// Maximum definition level: 0 for a required column, a value is present when its level equals it.
    max_def: i16,
}

/// Decoded values of one column in the current batch.
enum Values {
    I32(ColumnReaderImpl<Int32Type>, Vec<i32>),
    I64(ColumnReaderImpl<Int64Type>, Vec<i64>),
    F32(ColumnReaderImpl<FloatType>, Vec<f32>),
    F64(ColumnReaderImpl<DoubleType>, Vec<f64>),
    Bytes(ColumnReaderImpl<ByteArrayType>, Vec<ByteArray>),
}

/// A value of a row, as stored.
enum Raw<'a> {
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bytes(&'a ByteArray),
}

fn read_batch<T: DataType>(
    reader: &mut ColumnReaderImpl<T>,
    rows: usize,
    defs: Option<&mut Vec<i16>>,
    values: &mut Vec<T::T>,
) -> Result<usize, ParquetError> {
    values.clear();
    let (records, _, _) = reader.read_records(rows, defs, None, values)?;
    Ok(records)
}

/// Reads one column of the current row group, a batch at a time.
struct Cursor {
    column: Column,
    values: Option<Values>,
    defs: Vec<i16>,
    /// Next value of `values` (fewer values than rows when some are null).
    next: usize,
}

impl Cursor {
    fn new(column: Column) -> Self {
        Self {
            column,
            values: None,
            defs: Vec::new(),
            next: 0,
        }
    }

    /// Starts reading the column from `reader` (the column chunk of a new row group).
    fn start(&mut self, reader: ColumnReader) -> Result<(), String> {
        self.values = Some(match reader {
            ColumnReader::Int32ColumnReader(r) => Values::I32(r, Vec::new()),
            ColumnReader::Int64ColumnReader(r) => Values::I64(r, Vec::new()),
            ColumnReader::FloatColumnReader(r) => Values::F32(r, Vec::new()),
            ColumnReader::DoubleColumnReader(r) => Values::F64(r, Vec::new()),
            ColumnReader::ByteArrayColumnReader(r) => Values::Bytes(r, Vec::new()),
            _ => return Err("has a type that cannot be read".into()),
        });
        Ok(())
    }

    /// Decodes up to `rows` rows; returns how many were decoded.
    fn fill(&mut self, rows: usize) -> Result<usize, ParquetError> {
        self.next = 0;
        self.defs.clear();
        let defs = (self.column.max_def > 0).then_some(&mut self.defs);
        match &mut self.values {
            None => Ok(0),
            Some(Values::I32(r, v)) => read_batch(r, rows, defs, v),
            Some(Values::I64(r, v)) => read_batch(r, rows, defs, v),
            Some(Values::F32(r, v)) => read_batch(r, rows, defs, v),
            Some(Values::F64(r, v)) => read_batch(r, rows, defs, v),
            Some(Values::Bytes(r, v)) => read_batch(r, rows, defs, v),
        }
    }

    /// The value of row `row` of the batch (rows must be taken in order, each once); `None` when null.
    fn take(&mut self, row: usize) -> Option<Raw<'_>> {
        if self.column.max_def > 0 && self.defs.get(row).copied() != Some(self.column.max_def) {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match self.values.as_ref()? {
            Values::I32(_, v) => v.get(i).map(|x| Raw::I32(*x)),
            Values::I64(_, v) => v.get(i).map(|x| Raw::I64(*x)),
            Values::F32(_, v) => v.get(i).map(|x| Raw::F32(*x)),
            Values::F64(_, v) => v.get(i).map(|x| Raw::F64(*x)),
            Values::Bytes(_, v) => v.get(i).map(Raw::Bytes),
        }
    }
}

/// The last accepted tick of a symbol.
struct Last {
    time_msc: i64,
    bid: Decimal,
    ask: Decimal,
}

/// Ticks read from a Parquet file, a row group at a time.
///
/// Columns are found by name, case-insensitively, in any order (other columns are ignored):
///
/// - `time_msc` (else `time`, else `timestamp`): INT64, plain (milliseconds since the Unix epoch) or
///   TIMESTAMP in milli-, micro- or nanoseconds, converted to milliseconds (rounded down). Timestamps that
///   are not marked UTC are taken as UTC all the same.
/// - `bid`, `ask`: DOUBLE or FLOAT, converted exactly to decimals then rounded to `digits` places (the
///   decimals of the symbol's point, e.g. 5 for EURUSD), or DECIMAL on INT32/INT64, exact at the scale of
///   the schema.
/// - `symbol` (optional): BYTE_ARRAY text; without it (or when a value is null or empty) the `symbol`
///   given to [`ParquetTicks::open`] is used.
///
/// Prices may be nullable: a null price is the previous price of the symbol (MT5 exports leave the side
/// that did not change empty), and a row with a null price before the symbol's first one is passed over.
/// Rows are checked like the CSV reader: a bid that is not positive, a bid above the ask, or a time before
/// the previous tick of the same symbol is an `Err` naming the row (1-based, `line`), the column and the
/// value; that row is then dropped and the iteration goes on with the next one, so a caller may stop or
/// skip. Errors of the file itself (unreadable pages) end the iteration.
pub struct ParquetTicks {
    reader: SerializedFileReader<File>,
    digits: u32,
    default_symbol: Option<String>,
    time: Cursor,
    time_kind: TimeKind,
    bid: Cursor,
    ask: Cursor,
    price_kinds: (PriceKind, PriceKind),
    symbol: Option<Cursor>,
    /// Next row group to open.
    next_group: usize,
    /// Rows of the current row group not decoded yet.
    group_left: usize,
    /// Rows in the current batch, and the next one to yield.
    batch_rows: usize,
    batch_pos: usize,
    /// 1-based number of the last row taken.
    row: u64,
    /// Per symbol (a file holds few: a scan beats hashing the name twice per row).
    last: Vec<(String, Last)>,
    done: bool,
}

impl ParquetTicks {
    /// Opens `path` and finds its columns (reading only the footer). `symbol` is the symbol of ticks
    /// without one in the file; `digits` the decimals that DOUBLE and FLOAT prices are rounded to.
    pub fn open(path: &Path, symbol: Option<String>, digits: u32) -> Result<Self, HistoryError> {
        if digits > 28 {
            return Err(HistoryError::file(format!(
                "{digits} digits: prices have at most 28 decimals"
            )));
        }
        let file = File::open(path)
            .map_err(|e| HistoryError::file(format!("cannot open {}: {e}", path.display())))?;
        let reader = SerializedFileReader::new(file).map_err(|e| {
            HistoryError::file(format!(
                "{} is not a readable Parquet file: {e}",
                path.display()
            ))
        })?;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let leaves: Vec<(usize, &ColumnDescriptor)> = schema
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.path().parts().len() == 1)
            .map(|(i, c)| (i, c.as_ref()))
            .collect();
        let found = || {
            leaves
                .iter()
                .map(|(_, c)| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |names: &[&str]| {
            names.iter().find_map(|want| {
                leaves
                    .iter()
                    .find(|(_, c)| c.name().eq_ignore_ascii_case(want))
                    .copied()
            })
        };
        let required = |names: &[&str]| {
            find(names).ok_or_else(|| {
                HistoryError::file(format!(
                    "{}: no column `{}` (columns found: {})",
                    path.display(),
                    names.join("` or `"),
                    found()
                ))
            })
        };
        let (time_at, time_col) = required(&TIME_NAMES)?;
        let (bid_at, bid_col) = required(&["bid"])?;
        let (ask_at, ask_col) = required(&["ask"])?;
        let symbol_col = find(&["symbol"]);
        if symbol_col.is_none() && symbol.is_none() {
            return Err(HistoryError::file(format!(
                "{}: no column `symbol` and no symbol given (columns found: {})",
                path.display(),
                found()
            )));
        }
        let refuse = |c: &ColumnDescriptor, reason: String| HistoryError {
            line: 0,
            column: Some(c.name().to_owned()),
            value: None,
            reason: format!("{}: column {}: {reason}", path.display(), c.name()),
        };
        for c in [
            Some(time_col),
            Some(bid_col),
            Some(ask_col),
            symbol_col.map(|(_, c)| c),
        ]
        .into_iter()
        .flatten()
        {
            if c.max_rep_level() > 0 {
                return Err(refuse(c, "is a list, not one value per row".into()));
            }
        }
        let time_kind = time_kind(time_col).map_err(|r| refuse(time_col, r))?;
        let bid_kind = price_kind(bid_col).map_err(|r| refuse(bid_col, r))?;
        let ask_kind = price_kind(ask_col).map_err(|r| refuse(ask_col, r))?;
        if let Some((_, c)) = symbol_col {
            if c.physical_type() != PhysicalType::BYTE_ARRAY {
                return Err(refuse(
                    c,
                    format!("is {}, not text (BYTE_ARRAY)", c.physical_type()),
                ));
            }
        }
        let column = |index: usize, c: &ColumnDescriptor| Column {
            index,
            name: c.name().to_owned(),
            max_def: c.max_def_level(),
        };
        let time = Cursor::new(column(time_at, time_col));
        let bid = Cursor::new(column(bid_at, bid_col));
        let ask = Cursor::new(column(ask_at, ask_col));
        let symbol_cursor = symbol_col.map(|(i, c)| Cursor::new(column(i, c)));
        Ok(Self {
            reader,
            digits,
            default_symbol: symbol.filter(|s| !s.is_empty()),
            time,
            time_kind,
            bid,
            ask,
            price_kinds: (bid_kind, ask_kind),
            symbol: symbol_cursor,
            next_group: 0,
            group_left: 0,
            batch_rows: 0,
            batch_pos: 0,
            row: 0,
            last: Vec::new(),
            done: false,
        })
    }

    /// Rows in the file (from its metadata), including any that will be refused or passed over.
    pub fn rows(&self) -> u64 {
        u64::try_from(self.reader.metadata().file_metadata().num_rows()).unwrap_or(0)
    }

    fn cursors(&mut self) -> impl Iterator<Item = &mut Cursor> {
        [&mut self.time, &mut self.bid, &mut self.ask]
            .into_iter()
            .chain(self.symbol.as_mut())
    }

    /// Decodes the next batch, opening the next row group when needed; false at the end of the file.
    fn load_batch(&mut self) -> Result<bool, HistoryError> {
        while self.group_left == 0 {
            if self.next_group >= self.reader.num_row_groups() {
                return Ok(false);
            }
            let at = self.next_group;
            self.next_group += 1;
            let group = self
                .reader
                .get_row_group(at)
                .map_err(|e| HistoryError::file(format!("row group {}: {e}", at + 1)))?;
            let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
            let mut readers = Vec::with_capacity(4);
            for index in [
                Some(self.time.column.index),
                Some(self.bid.column.index),
                Some(self.ask.column.index),
                self.symbol.as_ref().map(|c| c.column.index),
            ]
            .into_iter()
            .flatten()
            {
                readers.push(group.get_column_reader(index));
            }
            drop(group);
            let first_row = self.row + 1;
            for (cursor, reader) in self.cursors().zip(readers) {
                let name = cursor.column.name.clone();
                let name = name.as_str();
                let reader = reader.map_err(|e| row_error(first_row, name, None, e.to_string()))?;
                cursor
                    .start(reader)
                    .map_err(|r| row_error(first_row, name, None, r))?;
            }
            self.group_left = rows;
        }
        let rows = self.group_left.min(BATCH_ROWS);
        let first_row = self.row + 1;
        for cursor in self.cursors() {
            let got = cursor
                .fill(rows)
                .map_err(|e| row_error(first_row, &cursor.column.name, None, e.to_string()))?;
            if got != rows {
                return Err(row_error(
                    first_row,
                    &cursor.column.name,
                    None,
                    format!("{got} values where the row group has {rows} more rows"),
                ));
            }
        }
        self.group_left -= rows;
        self.batch_rows = rows;
        self.batch_pos = 0;
        Ok(true)
    }

    /// The tick of row `i` of the batch, `None` for a row passed over (a price missing so far).
    fn tick_at(&mut self, i: usize) -> Result<Option<Tick>, HistoryError> {
        let line = self.row;
        let digits = self.digits;
        let (bid_kind, ask_kind) = self.price_kinds;
        // Every column's value of the row is taken before any check, so the cursors stay in step.
        let time = self.time.take(i).map(|v| raw_int(&v));
        let bid = self.bid.take(i).map(|v| price(&v, bid_kind, digits));
        let ask = self.ask.take(i).map(|v| price(&v, ask_kind, digits));
        let symbol = match self.symbol.as_mut().map(|c| c.take(i)) {
            Some(Some(Raw::Bytes(b))) => Some(
                b.as_utf8()
                    .map(str::to_owned)
                    .map_err(|_| String::from_utf8_lossy(b.data()).into_owned()),
            ),
            _ => None,
        };
        let symbol_name = self
            .symbol
            .as_ref()
            .map_or("symbol", |c| c.column.name.as_str());
        let (time_name, bid_name, ask_name) = (
            self.time.column.name.as_str(),
            self.bid.column.name.as_str(),
            self.ask.column.name.as_str(),
        );
        let raw_time = match time {
            Some(Some(t)) => t,
            Some(None) => return Err(row_error(line, time_name, None, "is not an integer")),
            None => return Err(row_error(line, time_name, None, "time is missing (null)")),
        };
        let time_msc = self.time_kind.to_millis(raw_time);
        let symbol = symbol
            .transpose()
            .map_err(|v| row_error(line, symbol_name, Some(v), "is not UTF-8 text"))?;
        let symbol = match symbol {
            Some(s) if !s.is_empty() => s,
            _ => match &self.default_symbol {
                Some(s) => s.clone(),
                None => {
                    return Err(row_error(
                        line,
                        symbol_name,
                        None,
                        "no symbol in the row and no symbol given",
                    ));
                }
            },
        };
        let bid = bid
            .transpose()
            .map_err(|(v, r)| row_error(line, bid_name, Some(v), r))?;
        let ask = ask
            .transpose()
            .map_err(|(v, r)| row_error(line, ask_name, Some(v), r))?;
        let at = self.last.iter().position(|(s, _)| *s == symbol);
        let last = at.map(|i| &self.last[i].1);
        let (Some(bid), Some(ask)) = (
            bid.or_else(|| last.map(|l| l.bid)),
            ask.or_else(|| last.map(|l| l.ask)),
        ) else {
            return Ok(None);
        };
        if bid <= Decimal::ZERO {
            return Err(row_error(
                line,
                bid_name,
                Some(bid.to_string()),
                format!("bid {bid} is not positive"),
            ));
        }
        if bid > ask {
            return Err(row_error(
                line,
                bid_name,
                Some(bid.to_string()),
                format!("bid {bid} is above ask {ask}"),
            ));
        }
        if let Some(prev) = last.map(|l| l.time_msc) {
            if time_msc < prev {
                return Err(row_error(
                    line,
                    time_name,
                    Some(raw_time.to_string()),
                    format!(
                        "time {time_msc} ms is before the previous tick of {symbol} ({prev} ms)"
                    ),
                ));
            }
        }
        let now = Last { time_msc, bid, ask };
        match at {
            Some(i) => self.last[i].1 = now,
            None => self.last.push((symbol.clone(), now)),
        }
        Ok(Some(Tick {
            symbol: Symbol::new(symbol),
            time_msc,
            bid,
            ask,
        }))
    }
}

impl Iterator for ParquetTicks {
    type Item = Result<Tick, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.batch_pos >= self.batch_rows {
                match self.load_batch() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let i = self.batch_pos;
            self.batch_pos += 1;
            self.row += 1;
            match self.tick_at(i) {
                Ok(Some(tick)) => return Some(Ok(tick)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The unit of a time column, or why it cannot be a time.
fn time_kind(c: &ColumnDescriptor) -> Result<TimeKind, String> {
    if c.physical_type() != PhysicalType::INT64 {
        return Err(format!(
            "is {}, not INT64 milliseconds or TIMESTAMP",
            c.physical_type()
        ));
    }
    match c.logical_type() {
        Some(LogicalType::Timestamp { unit, .. }) => Ok(match unit {
            TimeUnit::MILLIS(_) => TimeKind::Millis,
            TimeUnit::MICROS(_) => TimeKind::Micros,
            TimeUnit::NANOS(_) => TimeKind::Nanos,
        }),
        Some(LogicalType::Integer { .. }) | None => match c.converted_type() {
            ConvertedType::NONE | ConvertedType::INT_64 | ConvertedType::TIMESTAMP_MILLIS => {
                Ok(TimeKind::Millis)
            }
            ConvertedType::TIMESTAMP_MICROS => Ok(TimeKind::Micros),
            other => Err(format!("is INT64 {other}, not milliseconds or TIMESTAMP")),
        },
        Some(other) => Err(format!("is INT64 {other:?}, not milliseconds or TIMESTAMP")),
    }
}

/// How a price column is read, or why it cannot be a price.
fn price_kind(c: &ColumnDescriptor) -> Result<PriceKind, String> {
    let physical = c.physical_type();
    match physical {
        PhysicalType::DOUBLE | PhysicalType::FLOAT => Ok(PriceKind::Float),
        PhysicalType::INT32 | PhysicalType::INT64 => {
            let scale = match c.logical_type() {
                Some(LogicalType::Decimal { scale, .. }) => scale,
                None if c.converted_type() == ConvertedType::DECIMAL => c.type_scale(),
                _ => {
                    return Err(format!(
                        "is {physical} without DECIMAL: prices must be DOUBLE, FLOAT or DECIMAL"
                    ))
                }
            };
            match u32::try_from(scale) {
                Ok(s) if s <= 28 => Ok(PriceKind::Decimal(s)),
                _ => Err(format!("DECIMAL scale {scale} is not in 0..=28")),
            }
        }
        other => Err(format!(
            "is {other}: prices must be DOUBLE, FLOAT or DECIMAL on INT32/INT64"
        )),
    }
}

/// An INT64 value (`None` for another type, which `open` rules out).
fn raw_int(v: &Raw<'_>) -> Option<i64> {
    match v {
        Raw::I64(x) => Some(*x),
        Raw::I32(x) => Some(i64::from(*x)),
        _ => None,
    }
}

/// A price as a decimal, or the value as stored and why it is not a price.
fn price(v: &Raw<'_>, kind: PriceKind, digits: u32) -> Result<Decimal, (String, String)> {
    let float = |x: f64| {
        // Fast path: scale to whole points and round (ties to even, as `round_dp`). Exact for any double
        // within 2^53 points: the product's error is far below half a point.
        let scaled = x * 10f64.powi(digits as i32);
        if scaled.is_finite() && scaled.abs() < 9.0e15 {
            return Ok(Decimal::new(scaled.round_ties_even() as i64, digits));
        }
        Decimal::from_f64_retain(x)
            .map(|d| d.round_dp(digits))
            .ok_or_else(|| (x.to_string(), "is not a finite price".to_owned()))
    };
    let decimal = |x: i64, scale: u32| {
        Decimal::try_from_i128_with_scale(i128::from(x), scale).map_err(|e| {
            (
                x.to_string(),
                format!("is not a DECIMAL of scale {scale}: {e}"),
            )
        })
    };
    match (v, kind) {
        (Raw::F64(x), PriceKind::Float) => float(*x),
        (Raw::F32(x), PriceKind::Float) => float(f64::from(*x)),
        (Raw::I64(x), PriceKind::Decimal(s)) => decimal(*x, s),
        (Raw::I32(x), PriceKind::Decimal(s)) => decimal(i64::from(*x), s),
        _ => Err((String::new(), "has a type that is not a price".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::writer::SerializedRowGroupWriter;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    fn tick(symbol: &str, time_msc: i64, bid: &str, ask: &str) -> Tick {
        Tick {
            symbol: Symbol::new(symbol.to_owned()),
            time_msc,
            bid: dec(bid),
            ask: dec(ask),
        }
    }

    fn write_file(path: &Path, ticks: &[Tick], with_symbol: bool) -> u64 {
        let file = File::create(path).expect("create");
        write_ticks(file, ticks.iter().cloned().map(Ok), with_symbol).expect("write")
    }

    fn read_all(path: &Path, symbol: Option<&str>, digits: u32) -> Vec<Tick> {
        ParquetTicks::open(path, symbol.map(str::to_owned), digits)
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect("read")
    }

    /// Writes a file with the low-level API: `columns` writes each column of the single row group.
    fn write_raw(
        path: &Path,
        schema: &str,
        columns: impl FnOnce(&mut SerializedRowGroupWriter<'_, File>),
    ) {
        let schema = Arc::new(parse_message_type(schema).expect("schema"));
        let props = Arc::new(WriterProperties::builder().build());
        let file = File::create(path).expect("create");
        let mut writer = SerializedFileWriter::new(file, schema, props).expect("writer");
        let mut group = writer.next_row_group().expect("row group");
        columns(&mut group);
        group.close().expect("close group");
        writer.close().expect("close");
    }

    fn next_column<'a, 'b>(
        group: &'a mut SerializedRowGroupWriter<'b, File>,
    ) -> parquet::file::writer::SerializedColumnWriter<'a> {
        group
            .next_column()
            .expect("column")
            .expect("one more column")
    }

    fn eurusd_gbpusd() -> Vec<Tick> {
        vec![
            tick("EURUSD", 1_700_000_000_000, "1.08512", "1.08515"),
            tick("GBPUSD", 1_700_000_000_001, "1.26001", "1.26010"),
            tick("EURUSD", 1_700_000_000_250, "1.08513", "1.08517"),
            tick("GBPUSD", 1_700_000_000_250, "1.25999", "1.26008"),
            tick("EURUSD", 1_700_000_001_000, "1.08510", "1.08511"),
        ]
    }

    #[test]
    fn ticks_of_two_symbols_round_trip_with_and_without_the_symbol_column() {
        let dir = tempfile::tempdir().expect("dir");
        let ticks = eurusd_gbpusd();
        let both = dir.path().join("both.parquet");
        assert_eq!(write_file(&both, &ticks, true), 5);
        assert_eq!(read_all(&both, None, 5), ticks);

        for symbol in ["EURUSD", "GBPUSD"] {
            let one: Vec<Tick> = ticks
                .iter()
                .filter(|t| t.symbol.as_str() == symbol)
                .cloned()
                .collect();
            let path = dir.path().join(format!("{symbol}.parquet"));
            assert_eq!(write_file(&path, &one, false), one.len() as u64);
            assert_eq!(read_all(&path, Some(symbol), 5), one);
        }
    }

    #[test]
    fn a_file_without_the_symbol_column_needs_a_symbol_and_one_symbol() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("one.parquet");
        write_file(&path, &eurusd_gbpusd()[..1], false);
        let e = ParquetTicks::open(&path, None, 5)
            .err()
            .expect("no symbol anywhere");
        assert_eq!(e.line, 0);
        assert!(e.reason.contains("time_msc, bid, ask"), "{e}");

        let e = write_ticks(Vec::new(), eurusd_gbpusd().into_iter().map(Ok), false)
            .expect_err("two symbols without the symbol column");
        assert_eq!(
            (e.line, e.column.as_deref(), e.value.as_deref()),
            (2, Some("symbol"), Some("GBPUSD"))
        );
    }

    #[test]
    fn the_first_error_of_the_input_is_returned() {
        let bad = HistoryError::file("bad input");
        let input = vec![Ok(eurusd_gbpusd()[0].clone()), Err(bad.clone())];
        assert_eq!(write_ticks(Vec::new(), input.into_iter(), true), Err(bad));
    }

    #[test]
    fn three_hundred_thousand_ticks_round_trip_over_several_row_groups() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("many.parquet");
        let make = |i: i64| {
            let bid = Decimal::new(108_000 + i % 997, 5);
            Tick {
                symbol: Symbol::new(if i % 3 == 0 { "GBPUSD" } else { "EURUSD" }.to_owned()),
                time_msc: 1_700_000_000_000 + i * 7,
                bid,
                ask: bid + Decimal::new(i % 13, 5),
            }
        };
        let n = 300_000;
        let file = File::create(&path).expect("create");
        assert_eq!(
            write_ticks(file, (0..n).map(make).map(Ok), true),
            Ok(300_000)
        );

        assert!(is_parquet(&path));
        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("reader");
        assert_eq!(reader.num_row_groups(), 3);
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        assert_eq!(
            kv,
            Some(vec![KeyValue::new(METADATA_KEY.to_owned(), "1".to_owned())])
        );

        let ticks = ParquetTicks::open(&path, None, 5).expect("open");
        assert_eq!(ticks.rows(), 300_000);
        let mut count = 0;
        for (i, t) in ticks.enumerate() {
            assert_eq!(t.expect("tick"), make(i as i64));
            count += 1;
        }
        assert_eq!(count, n);
    }

    #[test]
    fn decimal_prices_and_microsecond_timestamps_read_exactly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("decimal.parquet");
        write_raw(
            &path,
            "message m {
                required binary Symbol (STRING);
                required int64 Timestamp (TIMESTAMP(MICROS,true));
                required int64 Ask (DECIMAL(18,5));
                required int64 Bid (DECIMAL(18,5));
                required int32 volume;
            }",
            |g| {
                let mut c = next_column(g);
                c.typed::<ByteArrayType>()
                    .write_batch(
                        &[ByteArray::from("USDJPY"), ByteArray::from("USDJPY")],
                        None,
                        None,
                    )
                    .expect("symbol");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<Int64Type>()
                    .write_batch(&[1_700_000_000_123_456, 1_700_000_000_124_999], None, None)
                    .expect("time");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<Int64Type>()
                    .write_batch(&[15_012_345_678, 15_012_345_679], None, None)
                    .expect("ask");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<Int64Type>()
                    .write_batch(&[15_012_345_670, 15_012_345_671], None, None)
                    .expect("bid");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<Int32Type>()
                    .write_batch(&[1, 2], None, None)
                    .expect("volume");
                c.close().expect("close");
            },
        );
        // digits 0: decimals are exact whatever the digits (only floats are rounded).
        assert_eq!(
            read_all(&path, None, 0),
            vec![
                tick("USDJPY", 1_700_000_000_123, "150123.45670", "150123.45678"),
                tick("USDJPY", 1_700_000_000_124, "150123.45671", "150123.45679"),
            ]
        );
    }

    #[test]
    fn nullable_price_columns_keep_the_previous_price() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("nulls.parquet");
        // Row 1 has no ask yet: passed over. Rows 3 and 4 each change one side only.
        write_raw(
            &path,
            "message m {
                required int64 time_msc;
                optional double bid;
                optional float ask;
            }",
            |g| {
                let mut c = next_column(g);
                c.typed::<Int64Type>()
                    .write_batch(&[1, 2, 3, 4], None, None)
                    .expect("time");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<DoubleType>()
                    .write_batch(&[1.10001, 1.10002, 1.10004], Some(&[1, 1, 0, 1]), None)
                    .expect("bid");
                c.close().expect("close");
                let mut c = next_column(g);
                c.typed::<FloatType>()
                    .write_batch(&[1.10005, 1.10006], Some(&[0, 1, 1, 0]), None)
                    .expect("ask");
                c.close().expect("close");
            },
        );
        let reader = ParquetTicks::open(&path, Some("EURUSD".into()), 5).expect("open");
        assert_eq!(reader.rows(), 4);
        assert_eq!(
            reader.collect::<Result<Vec<_>, _>>().expect("read"),
            vec![
                tick("EURUSD", 2, "1.10002", "1.10005"),
                tick("EURUSD", 3, "1.10002", "1.10006"),
                tick("EURUSD", 4, "1.10004", "1.10006"),
            ]
        );
    }

    #[test]
    fn bid_above_ask_names_row_column_and_value() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crossed.parquet");
        let ticks = vec![
            tick("EURUSD", 1, "1.10000", "1.10002"),
            tick("EURUSD", 2, "1.10003", "1.10002"),
            tick("EURUSD", 3, "1.10001", "1.10002"),
        ];
        write_file(&path, &ticks, true);
        let read: Vec<_> = ParquetTicks::open(&path, None, 5).expect("open").collect();
        assert_eq!(read.len(), 3, "the bad row is reported, the others read");
        let e = read[1].clone().expect_err("crossed");
        assert_eq!(
            (e.line, e.column.as_deref(), e.value.as_deref()),
            (2, Some("bid"), Some("1.10003"))
        );
        assert!(e.reason.contains("above ask 1.10002"), "{e}");
        assert_eq!(read[2], Ok(ticks[2].clone()));
    }

    #[test]
    fn time_going_backwards_names_row_column_and_value() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("backwards.parquet");
        let ticks = vec![
            tick("EURUSD", 10, "1.1", "1.2"),
            tick("GBPUSD", 5, "1.3", "1.4"),
            tick("EURUSD", 9, "1.1", "1.2"),
        ];
        write_file(&path, &ticks, true);
        let mut read = ParquetTicks::open(&path, None, 5).expect("open");
        assert_eq!(read.next(), Some(Ok(ticks[0].clone())));
        assert_eq!(
            read.next(),
            Some(Ok(ticks[1].clone())),
            "other symbols have their own time"
        );
        let e = read.next().expect("row 3").expect_err("backwards");
        assert_eq!(
            (e.line, e.column.as_deref(), e.value.as_deref()),
            (3, Some("time_msc"), Some("9"))
        );
        assert!(
            e.reason.contains("before the previous tick of EURUSD"),
            "{e}"
        );
        assert_eq!(read.next(), None);
    }

    #[test]
    fn a_file_without_a_bid_column_is_refused_naming_the_columns_it_has() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("nobid.parquet");
        write_raw(
            &path,
            "message m { required int64 time; required double ask; required double last; }",
            |g| {
                let mut c = next_column(g);
                c.typed::<Int64Type>()
                    .write_batch(&[1], None, None)
                    .expect("time");
                c.close().expect("close");
                for _ in 0..2 {
                    let mut c = next_column(g);
                    c.typed::<DoubleType>()
                        .write_batch(&[1.1], None, None)
                        .expect("price");
                    c.close().expect("close");
                }
            },
        );
        let e = ParquetTicks::open(&path, Some("EURUSD".into()), 5)
            .err()
            .expect("no bid");
        assert_eq!(e.line, 0);
        assert!(e.reason.contains("no column `bid`"), "{e}");
        assert!(e.reason.contains("columns found: time, ask, last"), "{e}");
    }

    #[test]
    fn is_parquet_is_true_for_parquet_and_false_for_csv_or_a_missing_file() {
        let dir = tempfile::tempdir().expect("dir");
        let parquet = dir.path().join("t.parquet");
        write_file(&parquet, &eurusd_gbpusd(), true);
        let csv = dir.path().join("t.csv");
        std::fs::write(&csv, "time_msc,bid,ask\n1,1.1,1.2\n").expect("csv");
        let short = dir.path().join("short");
        std::fs::write(&short, "PA").expect("short");
        assert!(is_parquet(&parquet));
        assert!(!is_parquet(&csv));
        assert!(!is_parquet(&short));
        assert!(!is_parquet(&dir.path().join("missing.parquet")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn any_five_digit_prices_round_trip_exactly(
            rows in proptest::collection::vec((1i64..100_000_000, 0i64..10_000, 0i64..1_000), 1..50)
        ) {
            let mut time = 0;
            let ticks: Vec<Tick> = rows
                .iter()
                .map(|(bid, spread, step)| {
                    time += step;
                    Tick {
                        symbol: Symbol::new("EURUSD"),
                        time_msc: time,
                        bid: Decimal::new(*bid, 5),
                        ask: Decimal::new(bid + spread, 5),
                    }
                })
                .collect();
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("p.parquet");
            write_file(&path, &ticks, false);
            prop_assert_eq!(read_all(&path, Some("EURUSD"), 5), ticks);
        }
    }
}
