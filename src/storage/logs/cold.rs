//! The cold tier: one zstd Parquet file per tenant and day, and a manifest per tenant.
//!
//! Entries reach this tier thirty days after their day and stay seven years, so what matters is what they
//! weigh and that they can be read back by any tool: a Parquet file stores each column apart, and the
//! columns that repeat (tenant, kind, level, and most messages) are dictionary-encoded then zstd-compressed
//! to almost nothing. A file per tenant and day is the unit the mover copies and verifies (count and
//! [`Digest32`]) and the unit retention deletes, exactly as a day is in the other tiers.
//!
//! Files are written through the [`object_store`] crate, so the same code writes a local directory (the
//! embedded default, [`ColdTier::local`]) or any S3-compatible store ([`ColdTier::with_store`]). Layout,
//! under a root prefix:
//!
//! ```text
//! <root>/<tenant>/manifest.json
//! <root>/<tenant>/<yyyy>/<yyyymmdd>.parquet
//! ```
//!
//! A file is written with one put, which object stores make atomic: no reader ever sees half a file. A day
//! written again (a move repeated after a crash, or entries arriving late) is read first and merged, each
//! entry kept once by id, then put whole again. A file counts only once it is **recorded** in its
//! tenant's manifest (with its count, hash, time range and size): queries read only the files the manifest
//! lists for the days they span, stats are summed from it, and retention removes files from it before
//! deleting them, so a query never meets a listed file that is gone. Object stores cannot list cheaply
//! nor append, which is why the manifest, not a listing, is the index.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use parquet::column::reader::ColumnReader;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{day_label, unavailable, Digest32, LogEntry, LogQuery, DAY_MS};
use crate::domain::calendar::{civil_from_days, days_from_civil};
use crate::storage::StorageError;

/// Rows per Parquet row group (and entries encoded at a time).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// zstd level of the files: 3 is zstd's default, fast to write and several times smaller than the JSON.
pub const ZSTD_LEVEL: i32 = 3;
/// Key-value metadata marking a file of this tier (value: the layout version, `1`).
pub const METADATA_KEY: &str = "trellis.logs";
const MANIFEST: &str = "manifest.json";
const SUFFIX: &str = ".parquet";

const SCHEMA: &str = "message log_entries {
    required binary id (STRING);
    required binary tenant (STRING);
    required int64 at_ms (TIMESTAMP(MILLIS,true));
    required binary kind (STRING);
    required binary level (STRING);
    required binary message (STRING);
    required binary data (STRING);
}";

/// The columns of [`SCHEMA`], in order.
const COLUMNS: [&str; 7] = ["id", "tenant", "at_ms", "kind", "level", "message", "data"];
/// Index of the only INT64 column; all others are text.
const AT_MS: usize = 2;

/// One day file as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub day: i64,
    /// Object path inside the store (`<root>/<tenant>/<yyyy>/<yyyymmdd>.parquet`).
    pub path: String,
    pub entries: u64,
    /// [`Digest32::hex`] of the file's entries.
    pub hash: String,
    /// Earliest and latest `at_ms` of the entries (both the day's start for a file without entries).
    pub min_at_ms: i64,
    pub max_at_ms: i64,
    /// Size of the object.
    pub bytes: u64,
    /// Sum of [`LogEntry::raw_len`]: what the entries weigh before compression.
    pub raw_bytes: u64,
}

/// A tenant's recorded files, sorted by day (one per day).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub tenant: String,
    pub files: Vec<FileInfo>,
}

/// The cold tier over an object store.
#[derive(Debug, Clone)]
pub struct ColdTier {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Serialises the read-modify-write of manifests made through this tier (and its clones).
    manifests: Arc<Mutex<()>>,
}

impl ColdTier {
    /// A local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(unavailable)?;
        Ok(Self::with_store(Arc::new(store), ""))
    }

    /// Any store (tests, S3 later), with a root prefix inside it (e.g. `logs`; empty for the store's root).
    pub fn with_store(store: Arc<dyn ObjectStore>, root: &str) -> Self {
        Self {
            store,
            root: Path::from(root),
            manifests: Arc::new(Mutex::new(())),
        }
    }

    /// Path of a tenant's day file: `<root>/<tenant>/<yyyy>/<yyyymmdd>.parquet`.
    pub fn day_path(&self, tenant: &str, day: i64) -> Result<Path, StorageError> {
        check_day(day)?;
        let (year, _, _) = civil_from_days(day);
        Ok(self
            .tenant_dir(tenant)?
            .child(format!("{year:04}"))
            .child(format!("{}{SUFFIX}", day_label(day))))
    }

    /// Writes `entries` (all of `tenant`, all of `day`) as that day's file. If a file is already there (an
    /// earlier attempt, or entries arriving late), its entries are merged in first, duplicates by id
    /// removed (the stored copy wins), sorted by `(at_ms, id)`. One put: no half file is ever visible.
    ///
    /// Returns what was written, **not yet recorded** in the manifest (see [`Self::record`]).
    pub async fn write_day(
        &self,
        tenant: &str,
        day: i64,
        entries: &[LogEntry],
    ) -> Result<FileInfo, StorageError> {
        let path = self.day_path(tenant, day)?;
        if let Some(e) = entries.iter().find(|e| e.tenant != tenant) {
            return Err(StorageError::Rejected(format!(
                "entry {} is of tenant {:?}, not {tenant}",
                e.id, e.tenant
            )));
        }
        if let Some(e) = entries.iter().find(|e| e.day() != day) {
            return Err(StorageError::Rejected(format!(
                "entry {} is of day {}, not {}",
                e.id,
                day_label(e.day()),
                day_label(day)
            )));
        }
        let mut all = self.read_path(tenant, day, &path).await?;
        let mut seen: HashSet<String> = all.iter().map(|e| e.id.clone()).collect();
        all.extend(
            entries
                .iter()
                .filter(|e| seen.insert(e.id.clone()))
                .cloned(),
        );
        all.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        let mut info = FileInfo {
            day,
            path: path.to_string(),
            entries: all.len() as u64,
            hash: Digest32::of(&all).hex(),
            min_at_ms: all.first().map_or(day * DAY_MS, |e| e.at_ms),
            max_at_ms: all.last().map_or(day * DAY_MS, |e| e.at_ms),
            bytes: 0,
            raw_bytes: all.iter().map(|e| e.raw_len() as u64).sum(),
        };
        let file = tokio::task::spawn_blocking(move || encode(&all))
            .await
            .map_err(unavailable)??;
        info.bytes = file.len() as u64;
        self.store
            .put(&path, PutPayload::from(file))
            .await
            .map_err(unavailable)?;
        Ok(info)
    }

    /// Reads a day's file back, in `(at_ms, id)` order (empty when there is none).
    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        let path = self.day_path(tenant, day)?;
        self.read_path(tenant, day, &path).await
    }

    /// Adds `info` to the tenant's manifest (`<root>/<tenant>/manifest.json`), replacing the file of the
    /// same day if one is recorded. `info.path` must be the tenant's file of `info.day`.
    pub async fn record(&self, tenant: &str, info: FileInfo) -> Result<(), StorageError> {
        let expected = self.day_path(tenant, info.day)?;
        if info.path != expected.as_ref() {
            return Err(StorageError::Rejected(format!(
                "file {} is not the file of tenant {tenant} for {} ({expected})",
                info.path,
                day_label(info.day)
            )));
        }
        let _guard = self.manifests.lock().await;
        let mut manifest = self.manifest(tenant).await?;
        match manifest.files.binary_search_by_key(&info.day, |f| f.day) {
            Ok(at) => manifest.files[at] = info,
            Err(at) => manifest.files.insert(at, info),
        }
        self.put_manifest(tenant, &manifest).await
    }

    /// The tenant's manifest (empty when there is none yet).
    pub async fn manifest(&self, tenant: &str) -> Result<Manifest, StorageError> {
        let path = self.tenant_dir(tenant)?.child(MANIFEST);
        let Some(bytes) = self.get(&path).await? else {
            return Ok(Manifest {
                tenant: tenant.to_owned(),
                files: Vec::new(),
            });
        };
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::Rejected(format!("corrupt manifest {path}: {e}")))?;
        if manifest.tenant != tenant {
            return Err(StorageError::Rejected(format!(
                "manifest {path} is of tenant {:?}",
                manifest.tenant
            )));
        }
        manifest.files.sort_by_key(|f| f.day);
        Ok(manifest)
    }

    /// Tenants with a manifest, sorted.
    pub async fn tenants(&self) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        for tenant in self.tenant_dirs().await? {
            let path = self.tenant_dir(&tenant)?.child(MANIFEST);
            match self.store.head(&path).await {
                Ok(_) => out.push(tenant),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(out)
    }

    /// Entries of `q.tenant` matching `q`, in `(at_ms, id)` order, at most `q.limit`. Reads only the files
    /// the manifest lists for days in `q.days()` whose time range meets the query's, in day order, and
    /// stops as soon as `limit` entries are found.
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        let manifest = self.manifest(&q.tenant).await?;
        let days = q.days();
        let floor = q
            .after
            .as_ref()
            .map_or(q.from_ms, |(at, _)| (*at).max(q.from_ms));
        let mut out = Vec::new();
        for file in &manifest.files {
            if out.len() >= q.limit {
                break;
            }
            if !days.contains(&file.day)
                || file.entries == 0
                || file.max_at_ms < floor
                || file.min_at_ms >= q.to_ms
            {
                continue;
            }
            let path = self.day_path(&q.tenant, file.day)?;
            let Some(bytes) = self.get(&path).await? else {
                return Err(StorageError::Rejected(format!(
                    "{path} is recorded in the manifest of {} but missing from the store",
                    q.tenant
                )));
            };
            let mut found: Vec<LogEntry> = self
                .decode_checked(&q.tenant, file.day, &path, bytes)
                .await?
                .into_iter()
                .filter(|e| q.matches(e))
                .collect();
            found.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
            out.extend(found);
        }
        out.truncate(q.limit);
        Ok(out)
    }

    /// Retention: deletes every file of every tenant whose day is before `before_day`, first removing the
    /// recorded ones from the manifest (so no query meets a listed file that is gone), then sweeping the
    /// files of those days that are in the store but not recorded (a write never recorded, or a delete
    /// that failed after its manifest was updated). Returns the `(tenant, day)` deleted, sorted. Files of
    /// `before_day` and later are untouched.
    pub async fn retain(&self, before_day: i64) -> Result<Vec<(String, i64)>, StorageError> {
        let mut deleted = BTreeSet::new();
        for tenant in self.tenant_dirs().await? {
            let removed = {
                let _guard = self.manifests.lock().await;
                let mut manifest = self.manifest(&tenant).await?;
                let (removed, kept): (Vec<_>, Vec<_>) =
                    manifest.files.into_iter().partition(|f| f.day < before_day);
                manifest.files = kept;
                if !removed.is_empty() {
                    self.put_manifest(&tenant, &manifest).await?;
                }
                removed
            };
            for file in removed {
                self.delete(&self.day_path(&tenant, file.day)?).await?;
                deleted.insert((tenant.clone(), file.day));
            }
            for (day, path) in self.stored_days(&tenant, before_day).await? {
                self.delete(&path).await?;
                deleted.insert((tenant.clone(), day));
            }
        }
        Ok(deleted.into_iter().collect())
    }

    /// Per tenant with a manifest, sorted: `(tenant, entries, raw_bytes, bytes)` summed over its recorded
    /// files, `bytes` being the sizes of the objects.
    pub async fn stats(&self) -> Result<super::TierStats, StorageError> {
        let mut out = Vec::new();
        for tenant in self.tenants().await? {
            let manifest = self.manifest(&tenant).await?;
            let (entries, raw, bytes) = manifest.files.iter().fold((0, 0, 0), |(n, r, b), f| {
                (n + f.entries, r + f.raw_bytes, b + f.bytes)
            });
            out.push((tenant, entries, raw, bytes));
        }
        Ok(out)
    }

    fn tenant_dir(&self, tenant: &str) -> Result<Path, StorageError> {
        check_tenant(tenant)?;
        Ok(self.root.child(tenant))
    }

    /// Every tenant directory under the root (with a manifest or not), sorted.
    async fn tenant_dirs(&self) -> Result<Vec<String>, StorageError> {
        let listed = self.list(&self.root).await?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|t| check_tenant(t).is_ok())
            .map(str::to_owned)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The day files of a tenant in the store (recorded or not) whose day is before `before_day`.
    async fn stored_days(
        &self,
        tenant: &str,
        before_day: i64,
    ) -> Result<Vec<(i64, Path)>, StorageError> {
        let dir = self.tenant_dir(tenant)?;
        let (last_year, _, _) = civil_from_days(before_day);
        let mut out = Vec::new();
        for year_dir in self.list(&dir).await?.common_prefixes {
            let year = year_dir.filename().and_then(|y| y.parse::<i64>().ok());
            if year.is_none_or(|y| y > last_year) {
                continue;
            }
            for object in self.list(&year_dir).await?.objects {
                let day = object.location.filename().and_then(parse_day_file);
                if let Some(day) = day.filter(|d| *d < before_day) {
                    out.push((day, object.location));
                }
            }
        }
        Ok(out)
    }

    async fn list(&self, prefix: &Path) -> Result<object_store::ListResult, StorageError> {
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        match self.store.list_with_delimiter(prefix).await {
            Ok(listed) => Ok(listed),
            Err(object_store::Error::NotFound { .. }) => Ok(object_store::ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The object's bytes, `None` when there is no such object.
    async fn get(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(path).await {
            Ok(got) => got.bytes().await.map(Some).map_err(unavailable),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes an object; one already gone is fine.
    async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_manifest(&self, tenant: &str, manifest: &Manifest) -> Result<(), StorageError> {
        let path = self.tenant_dir(tenant)?.child(MANIFEST);
        let json = serde_json::to_vec_pretty(manifest).map_err(unavailable)?;
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn read_path(
        &self,
        tenant: &str,
        day: i64,
        path: &Path,
    ) -> Result<Vec<LogEntry>, StorageError> {
        match self.get(path).await? {
            Some(bytes) => self.decode_checked(tenant, day, path, bytes).await,
            None => Ok(Vec::new()),
        }
    }

    /// Decodes a day file (off the async threads) and checks that it holds entries of that tenant and day
    /// only: a file in the wrong place is corrupt, never returned as the tenant's.
    async fn decode_checked(
        &self,
        tenant: &str,
        day: i64,
        path: &Path,
        bytes: Bytes,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let entries = tokio::task::spawn_blocking(move || decode(bytes))
            .await
            .map_err(unavailable)?
            .map_err(|e| StorageError::Rejected(format!("corrupt file {path}: {e}")))?;
        if let Some(e) = entries
            .iter()
            .find(|e| e.tenant != tenant || e.day() != day)
        {
            return Err(StorageError::Rejected(format!(
                "file {path} holds entry {} of tenant {:?} at {}, not of {tenant} on {}",
                e.id,
                e.tenant,
                e.at_ms,
                day_label(day)
            )));
        }
        Ok(entries)
    }
}

/// Tenant ids are `[A-Za-z0-9_-]+`: anything else is refused before it can become part of a path.
fn check_tenant(tenant: &str) -> Result<(), StorageError> {
    if !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(StorageError::Rejected(format!(
            "tenant id {tenant:?} must be letters, digits, '_' or '-'"
        )))
    }
}

/// Days from 1970-01-01 to 9999-12-31: the ones a `yyyymmdd` file name can spell.
fn check_day(day: i64) -> Result<(), StorageError> {
    if (0..=days_from_civil(9999, 12, 31)).contains(&day) {
        Ok(())
    } else {
        Err(StorageError::Rejected(format!(
            "day {day} is outside 1970-01-01..=9999-12-31"
        )))
    }
}

/// The day of a file name `yyyymmdd.parquet` (`None` for any other name, or an impossible date).
fn parse_day_file(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = stem[..4].parse().ok()?;
    let month = stem[4..6].parse().ok()?;
    let date = stem[6..].parse().ok()?;
    let day = days_from_civil(year, month, date);
    (day_label(day) == stem).then_some(day)
}

/// Errors of encoding and decoding files, before they become [`StorageError`]s.
type Codec<T> = Result<T, parquet::errors::ParquetError>;

/// The entries as a Parquet file (zstd, row groups of [`ROW_GROUP_ROWS`] rows, dictionaries on).
fn encode(entries: &[LogEntry]) -> Result<Vec<u8>, StorageError> {
    encode_file(entries).map_err(|e| StorageError::Rejected(format!("cannot encode entries: {e}")))
}

fn encode_file(entries: &[LogEntry]) -> Codec<Vec<u8>> {
    let schema = parse_message_type(SCHEMA)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            METADATA_KEY.to_owned(),
            "1".to_owned(),
        )]))
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), Arc::new(schema), Arc::new(props))?;
    for rows in entries.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match column.untyped() {
                ColumnWriter::Int64ColumnWriter(w) if index == AT_MS => {
                    let values: Vec<i64> = rows.iter().map(|e| e.at_ms).collect();
                    w.write_batch(&values, None, None)?;
                }
                ColumnWriter::ByteArrayColumnWriter(w) if index < COLUMNS.len() => {
                    let values: Vec<ByteArray> = rows
                        .iter()
                        .map(|e| ByteArray::from(text(e, index)))
                        .collect();
                    w.write_batch(&values, None, None)?;
                }
                _ => {
                    return Err(parquet::errors::ParquetError::General(format!(
                        "unexpected column {index} in the schema"
                    )))
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
    }
    writer.into_inner()
}

/// The text column `index` of an entry.
fn text(e: &LogEntry, index: usize) -> &str {
    match index {
        0 => &e.id,
        1 => &e.tenant,
        3 => &e.kind,
        4 => &e.level,
        5 => &e.message,
        _ => &e.data,
    }
}

/// The entries of a file written by [`encode`], in file order.
fn decode(bytes: Bytes) -> Codec<Vec<LogEntry>> {
    let reader = SerializedFileReader::new(bytes)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    if schema.num_columns() != COLUMNS.len() {
        return Err(parquet::errors::ParquetError::General(format!(
            "{} columns, expected {}",
            schema.num_columns(),
            COLUMNS.len()
        )));
    }
    for (i, name) in COLUMNS.iter().enumerate() {
        let c = schema.column(i);
        let physical = if i == AT_MS {
            PhysicalType::INT64
        } else {
            PhysicalType::BYTE_ARRAY
        };
        if c.name() != *name
            || c.physical_type() != physical
            || c.max_def_level() != 0
            || c.max_rep_level() != 0
        {
            return Err(parquet::errors::ParquetError::General(format!(
                "column {i} is {} {}, expected required {physical} {name}",
                c.physical_type(),
                c.name()
            )));
        }
    }
    let total = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut out = Vec::with_capacity(total);
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let at_ms = read_i64s(group.get_column_reader(AT_MS)?, rows)?;
        let mut texts = Vec::with_capacity(COLUMNS.len() - 1);
        for i in (0..COLUMNS.len()).filter(|i| *i != AT_MS) {
            texts.push(read_texts(group.get_column_reader(i)?, rows)?.into_iter());
        }
        let [id, tenant, kind, level, message, data]: [_; 6] = texts.try_into().map_err(|_| {
            parquet::errors::ParquetError::General("text columns missing".to_owned())
        })?;
        let rows = at_ms
            .into_iter()
            .zip(id)
            .zip(tenant)
            .zip(kind)
            .zip(level)
            .zip(message)
            .zip(data);
        for ((((((at_ms, id), tenant), kind), level), message), data) in rows {
            out.push(LogEntry {
                id,
                tenant,
                at_ms,
                kind,
                level,
                message,
                data,
            });
        }
    }
    Ok(out)
}

/// All `rows` values of a required INT64 column chunk.
fn read_i64s(reader: ColumnReader, rows: usize) -> Codec<Vec<i64>> {
    let ColumnReader::Int64ColumnReader(mut reader) = reader else {
        return Err(parquet::errors::ParquetError::General(
            "at_ms is not INT64".to_owned(),
        ));
    };
    let mut values = Vec::with_capacity(rows);
    let (read, _, _) = reader.read_records(rows, None, None, &mut values)?;
    check_rows(read, values.len(), rows)?;
    Ok(values)
}

/// All `rows` values of a required UTF-8 column chunk.
fn read_texts(reader: ColumnReader, rows: usize) -> Codec<Vec<String>> {
    let ColumnReader::ByteArrayColumnReader(mut reader) = reader else {
        return Err(parquet::errors::ParquetError::General(
            "a text column is not BYTE_ARRAY".to_owned(),
        ));
    };
    let mut values = Vec::with_capacity(rows);
    let (read, _, _) = reader.read_records(rows, None, None, &mut values)?;
    check_rows(read, values.len(), rows)?;
    let unset = ByteArray::new();
    values
        .iter()
        .map(|v| {
            if *v == unset {
                Ok(String::new())
            } else {
                v.as_utf8().map(str::to_owned)
            }
        })
        .collect()
}

fn check_rows(records: usize, values: usize, rows: usize) -> Codec<()> {
    if records == rows && values == rows {
        Ok(())
    } else {
        Err(parquet::errors::ParquetError::General(format!(
            "{values} values in a row group of {rows} rows"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-02.
    const DAY: i64 = 19_724;

    fn entry(tenant: &str, id: &str, at_ms: i64, kind: &str) -> LogEntry {
        LogEntry {
            id: id.into(),
            tenant: tenant.into(),
            at_ms,
            kind: kind.into(),
            level: "info".into(),
            message: format!("{kind} {id} accepted"),
            data: format!(r#"{{"symbol":"EURUSD","volume":"0.10","id":"{id}"}}"#),
        }
    }

    /// `n` entries of `tenant` on `day`, alternately orders and fills, ten seconds apart from 09:00.
    fn day_of_entries(tenant: &str, day: i64, n: usize) -> Vec<LogEntry> {
        (0..n)
            .map(|i| {
                let kind = if i % 2 == 0 { "order" } else { "fill" };
                let at = day * DAY_MS + 9 * 3_600_000 + i as i64 * 10_000;
                entry(tenant, &format!("n1-{day}-{i:04}"), at, kind)
            })
            .collect()
    }

    fn sorted(mut entries: Vec<LogEntry>) -> Vec<LogEntry> {
        entries.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        entries
    }

    fn local(dir: &tempfile::TempDir) -> ColdTier {
        ColdTier::local(dir.path()).expect("local store")
    }

    async fn write_and_record(cold: &ColdTier, tenant: &str, day: i64, entries: &[LogEntry]) {
        let info = cold.write_day(tenant, day, entries).await.expect("write");
        cold.record(tenant, info).await.expect("record");
    }

    #[tokio::test]
    async fn a_day_reads_back_as_written_in_time_then_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        let mut input = day_of_entries("acme", DAY, 9);
        input.reverse();
        // Same instant, ids out of order; an empty message and data survive too.
        input.push(entry("acme", "n2-b", DAY * DAY_MS + 5, "risk"));
        input.push(entry("acme", "n2-a", DAY * DAY_MS + 5, "risk"));
        input[0].message = String::new();
        input[0].data = String::new();

        let info = cold.write_day("acme", DAY, &input).await.expect("write");
        let back = cold.read_day("acme", DAY).await.expect("read");

        assert_eq!(back, sorted(input.clone()));
        assert_eq!(back[0].id, "n2-a");
        assert_eq!(Digest32::of(&back), Digest32::of(&input));
        assert_eq!(info.hash, Digest32::of(&input).hex());
        assert_eq!(info.entries, 11);
        assert_eq!(info.path, "acme/2024/20240102.parquet");
        assert_eq!(
            (info.min_at_ms, info.max_at_ms),
            (back[0].at_ms, back[10].at_ms)
        );
        assert!(cold
            .read_day("acme", DAY + 1)
            .await
            .expect("absent")
            .is_empty());
    }

    #[tokio::test]
    async fn a_day_written_twice_keeps_each_entry_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        let all = day_of_entries("acme", DAY, 10);
        cold.write_day("acme", DAY, &all[..6]).await.expect("first");
        // A repeated move (entries 3..6 again) with late entries 6..10.
        let info = cold.write_day("acme", DAY, &all[3..]).await.expect("again");

        let back = cold.read_day("acme", DAY).await.expect("read");
        assert_eq!(back, all);
        assert_eq!(info.entries, 10);
        assert_eq!(info.hash, Digest32::of(&all).hex());
        // Written, not recorded: the manifest knows nothing yet.
        assert!(cold
            .manifest("acme")
            .await
            .expect("manifest")
            .files
            .is_empty());
    }

    #[tokio::test]
    async fn entries_of_another_tenant_or_day_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        let other_tenant = day_of_entries("beta", DAY, 1);
        let other_day = day_of_entries("acme", DAY + 1, 1);
        for wrong in [other_tenant, other_day] {
            let err = cold
                .write_day("acme", DAY, &wrong)
                .await
                .expect_err("refused");
            assert!(matches!(err, StorageError::Rejected(_)), "{err}");
        }
        let info = cold
            .write_day("beta", DAY, &day_of_entries("beta", DAY, 1))
            .await
            .expect("b");
        let err = cold
            .record("acme", info)
            .await
            .expect_err("not acme's file");
        assert!(matches!(err, StorageError::Rejected(_)), "{err}");
    }

    #[tokio::test]
    async fn a_query_pages_through_the_recorded_days_of_its_tenant_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        let mut recorded = Vec::new();
        for day in DAY..DAY + 3 {
            let a = day_of_entries("a", day, 7);
            write_and_record(&cold, "a", day, &a).await;
            recorded.extend(a);
            write_and_record(&cold, "b", day, &day_of_entries("b", day, 7)).await;
        }
        // In range but never recorded, and corrupt: reading it would fail the query.
        cold.write_day("a", DAY + 3, &day_of_entries("a", DAY + 3, 3))
            .await
            .expect("w");
        let stray = cold.day_path("a", DAY + 3).expect("path");
        cold.store
            .put(&stray, PutPayload::from_static(b"not parquet"))
            .await
            .expect("put");

        let mut q = LogQuery {
            tenant: "a".into(),
            from_ms: DAY * DAY_MS,
            to_ms: (DAY + 4) * DAY_MS,
            kind: Some("order".into()),
            limit: 3,
            ..Default::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = cold.query(&q).await.expect("query");
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            q.after = Some((last.at_ms, last.id.clone()));
            pages.push(page);
        }
        let got: Vec<LogEntry> = pages.concat();
        let expected: Vec<LogEntry> = recorded.into_iter().filter(|e| e.kind == "order").collect();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 12);
        // 12 orders over pages of 3: the 4th page is full and the next one empty.
        assert_eq!(pages.len(), 4);
        assert!(got.iter().all(|e| e.tenant == "a" && e.day() < DAY + 3));

        // A page that ends mid-day continues in that day then the next.
        q.after = Some((expected[3].at_ms, expected[3].id.clone()));
        q.limit = 2;
        assert_eq!(
            cold.query(&q).await.expect("query"),
            expected[4..6].to_vec()
        );

        // A corrupt recorded file is rejected, not retried.
        let day1 = cold.day_path("a", DAY + 1).expect("path");
        cold.store
            .put(&day1, PutPayload::from_static(b"PAR1 garbage"))
            .await
            .expect("put");
        q.after = None;
        q.limit = 100;
        let err = cold.query(&q).await.expect_err("corrupt");
        assert!(matches!(err, StorageError::Rejected(_)), "{err}");
    }

    #[tokio::test]
    async fn retention_deletes_only_the_days_before_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("store"));
        let cold = ColdTier::with_store(store, "logs");
        for tenant in ["a", "b"] {
            for day in DAY..DAY + 4 {
                write_and_record(&cold, tenant, day, &day_of_entries(tenant, day, 3)).await;
            }
        }
        // Written but never recorded (a crash between write and record): swept too.
        cold.write_day("a", DAY - 400, &day_of_entries("a", DAY - 400, 2))
            .await
            .expect("w");
        assert!(dir.path().join("logs/a/2022/20221128.parquet").exists());
        let kept_before = cold.read_day("b", DAY + 2).await.expect("read");

        let deleted = cold.retain(DAY + 2).await.expect("retain");

        let expected: Vec<(String, i64)> = [
            ("a", DAY - 400),
            ("a", DAY),
            ("a", DAY + 1),
            ("b", DAY),
            ("b", DAY + 1),
        ]
        .into_iter()
        .map(|(t, d)| (t.to_owned(), d))
        .collect();
        assert_eq!(deleted, expected);
        for tenant in ["a", "b"] {
            let days: Vec<i64> = cold
                .manifest(tenant)
                .await
                .expect("manifest")
                .files
                .iter()
                .map(|f| f.day)
                .collect();
            assert_eq!(days, [DAY + 2, DAY + 3]);
            for day in [DAY, DAY + 1] {
                let path = cold.day_path(tenant, day).expect("path");
                let gone = cold.store.head(&path).await.expect_err("deleted");
                assert!(matches!(gone, object_store::Error::NotFound { .. }));
                assert!(!dir.path().join(path.as_ref()).exists());
            }
        }
        let swept = cold.day_path("a", DAY - 400).expect("path");
        assert_eq!(swept.as_ref(), "logs/a/2022/20221128.parquet");
        assert!(!dir.path().join(swept.as_ref()).exists());
        assert_eq!(
            cold.read_day("b", DAY + 2).await.expect("read"),
            kept_before
        );
        assert!(cold.retain(DAY + 2).await.expect("again").is_empty());
    }

    #[tokio::test]
    async fn stats_count_the_bytes_the_files_take_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        let entries = day_of_entries("acme", DAY, 2_000);
        write_and_record(&cold, "acme", DAY, &entries).await;
        write_and_record(&cold, "acme", DAY + 1, &day_of_entries("acme", DAY + 1, 10)).await;
        write_and_record(&cold, "zeta", DAY, &day_of_entries("zeta", DAY, 5)).await;

        let stats = cold.stats().await.expect("stats");
        let on_disk = |tenant: &str, day: i64| {
            let path = cold.day_path(tenant, day).expect("path");
            std::fs::metadata(dir.path().join(path.as_ref()))
                .expect("file")
                .len()
        };
        let raw: u64 = entries.iter().map(|e| e.raw_len() as u64).sum();
        let manifest = cold.manifest("acme").await.expect("manifest");
        let big = &manifest.files[0];
        eprintln!(
            "2000 entries: {} bytes of Parquet for {} raw bytes ({:.1}x)",
            big.bytes,
            big.raw_bytes,
            big.raw_bytes as f64 / big.bytes as f64
        );
        assert_eq!(big.raw_bytes, raw);
        assert_eq!(big.bytes, on_disk("acme", DAY));
        assert!(
            big.bytes * 3 < big.raw_bytes,
            "{} vs {}",
            big.bytes,
            big.raw_bytes
        );
        let acme_raw = raw
            + day_of_entries("acme", DAY + 1, 10)
                .iter()
                .map(|e| e.raw_len() as u64)
                .sum::<u64>();
        assert_eq!(
            stats,
            [
                (
                    "acme".to_owned(),
                    2_010,
                    acme_raw,
                    on_disk("acme", DAY) + on_disk("acme", DAY + 1)
                ),
                (
                    "zeta".to_owned(),
                    5,
                    manifest_raw(&cold, "zeta").await,
                    on_disk("zeta", DAY)
                ),
            ]
        );
        assert_eq!(cold.tenants().await.expect("tenants"), ["acme", "zeta"]);
    }

    async fn manifest_raw(cold: &ColdTier, tenant: &str) -> u64 {
        let m = cold.manifest(tenant).await.expect("manifest");
        m.files.iter().map(|f| f.raw_bytes).sum()
    }

    #[tokio::test]
    async fn a_tenant_id_outside_letters_digits_dash_and_underscore_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cold = local(&dir);
        for bad in ["", "..", "a/b", "../etc", "a b", "é"] {
            let write = cold.write_day(bad, DAY, &[]).await;
            assert!(matches!(write, Err(StorageError::Rejected(_))), "{bad:?}");
            let read = cold.read_day(bad, DAY).await;
            assert!(matches!(read, Err(StorageError::Rejected(_))), "{bad:?}");
            let manifest = cold.manifest(bad).await;
            assert!(
                matches!(manifest, Err(StorageError::Rejected(_))),
                "{bad:?}"
            );
            let q = LogQuery {
                tenant: bad.into(),
                to_ms: DAY_MS,
                limit: 1,
                ..Default::default()
            };
            assert!(matches!(
                cold.query(&q).await,
                Err(StorageError::Rejected(_))
            ));
        }
        assert!(cold.tenants().await.expect("tenants").is_empty());
        assert!(cold.write_day("Ok_tenant-1", DAY, &[]).await.is_ok());
    }
}
