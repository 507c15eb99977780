//! A model deployment as it runs: its versions loaded and validated, and the per-bar traffic split.
//!
//! A version is named by the sha256 of its ONNX file (content-addressed: the same bytes are the same version
//! wherever they come from). The split between the versions that trade is per bar and deterministic: a hash
//! of the deployment and the bar's open time picks the version, so a replay of the same bars routes every
//! bar to the same version, and over many bars each version gets its weight's share.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cost::ModelLimits;
use super::features::FeatureSet;
use super::manifest::Manifest;
use super::onnx::OnnxModel;
use super::registry::{OwnedRef, Resolved};
use crate::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings, VersionSource};
use crate::domain::{hex, Symbol, Timeframe};

/// Largest model file accepted, in bytes.
pub const MAX_MODEL_BYTES: usize = 64 * 1024 * 1024;

/// One loaded version.
#[derive(Debug)]
pub struct LoadedVersion {
    /// sha256 of the ONNX file, hex.
    pub version: String,
    pub manifest: Manifest,
    pub features: FeatureSet,
    pub model: Arc<OnnxModel>,
    pub weight: f64,
    /// The registry alias this version was resolved from, which the deployment follows when it moves.
    pub alias: Option<String>,
}

impl LoadedVersion {
    /// Validates a version from its file's bytes and its manifest, within [`ModelLimits::CEILING`].
    pub fn from_bytes(bytes: &[u8], manifest: Manifest, weight: f64) -> Result<Self, String> {
        Self::from_bytes_within(bytes, manifest, weight, &ModelLimits::CEILING)
    }

    /// Validates a version from its file's bytes and its manifest; a version whose prediction would cost
    /// more than `limits` (a tier's) is refused before anything runs it. The manifest carries the cost.
    pub fn from_bytes_within(
        bytes: &[u8],
        mut manifest: Manifest,
        weight: f64,
        limits: &ModelLimits,
    ) -> Result<Self, String> {
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(format!(
                "the model file has {} bytes, at most {MAX_MODEL_BYTES} are accepted",
                bytes.len()
            ));
        }
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!("weight: must be 0 or more, not {weight}"));
        }
        let features = manifest.validate()?;
        // A hostile file must not take the process down: a panic inside tract is a refusal like any other.
        let model = crate::runtime::supervisor::contain(|| {
            OnnxModel::load_within(bytes, features.len(), limits)
        })
        .map_err(|why| format!("not a loadable ONNX model: tract failed on it ({why})"))?
        .map_err(|e| e.to_string())?;
        manifest.check_model(&model)?;
        manifest.cost = Some(model.cost());
        Ok(Self {
            version: hex(&Sha256::digest(bytes)),
            manifest,
            features,
            model,
            weight,
            alias: None,
        })
    }

    /// Loads a version from its file (configuration) or from the registry versions resolved for it.
    fn load(
        s: &ModelVersionSettings,
        model: Option<&str>,
        resolved: &Resolved,
        limits: &ModelLimits,
    ) -> Result<Self, String> {
        match s.source()? {
            VersionSource::File { file, manifest } => {
                let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
                let text =
                    std::fs::read_to_string(manifest).map_err(|e| format!("{manifest}: {e}"))?;
                let manifest: Manifest =
                    serde_json::from_str(&text).map_err(|e| format!("{manifest}: {e}"))?;
                Self::from_bytes_within(&bytes, manifest, s.weight, limits)
                    .map_err(|e| format!("{file}: {e}"))
            }
            VersionSource::Registry(r) => {
                let model = model.ok_or("registry versions need the deployment's `model`")?;
                let reference = OwnedRef::from(r);
                let found = resolved
                    .get(&(model.to_owned(), reference.clone()))
                    .ok_or_else(|| format!("model `{model}`: {reference} was not resolved"))?;
                let mut v =
                    Self::from_bytes_within(&found.bytes, found.manifest.clone(), s.weight, limits)
                        .map_err(|e| format!("model `{model}` {reference}: {e}"))?;
                if v.version != found.version {
                    return Err(format!(
                        "model `{model}` {reference}: the stored file's sha256 is not its version"
                    ));
                }
                v.alias = s.alias.clone();
                Ok(v)
            }
        }
    }

    /// The short form used in logs and metrics.
    pub fn short(&self) -> &str {
        &self.version[..12.min(self.version.len())]
    }
}

/// A deployment with its versions loaded.
#[derive(Debug)]
pub struct Deployment {
    pub id: String,
    /// What it was made from (stored in the tenant's document as is: an alias stays an alias).
    pub settings: ModelDeploymentSettings,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub traffic: Vec<LoadedVersion>,
    pub shadow: Vec<LoadedVersion>,
    pub budget_us: u64,
}

impl Deployment {
    /// Loads and validates every version (registry versions from `resolved`) within `limits`; the error
    /// names the deployment and the file or version.
    pub fn load(
        s: &ModelDeploymentSettings,
        resolved: &Resolved,
        limits: &ModelLimits,
    ) -> Result<Self, String> {
        let named = |e: String| format!("model deployment `{}`: {e}", s.id);
        let timeframe = Timeframe::parse(&s.timeframe)
            .ok_or_else(|| named(format!("unknown timeframe `{}`", s.timeframe)))?;
        if s.traffic.is_empty() && s.shadow.is_empty() {
            return Err(named(
                "traffic: at least one version (or shadow versions)".into(),
            ));
        }
        let traffic = s
            .traffic
            .iter()
            .map(|v| LoadedVersion::load(v, s.model.as_deref(), resolved, limits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(named)?;
        if !traffic.is_empty() && traffic.iter().all(|v| v.weight == 0.0) {
            return Err(named("traffic: the weights are all 0".into()));
        }
        let shadow = s
            .shadow
            .iter()
            .map(|v| LoadedVersion::load(v, s.model.as_deref(), resolved, limits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(named)?;
        for list in [&traffic, &shadow] {
            let mut seen = std::collections::HashSet::new();
            if let Some(v) = list.iter().find(|v| !seen.insert(&v.version)) {
                return Err(named(format!("version `{}` is listed twice", v.version)));
            }
        }
        Ok(Self {
            id: s.id.clone(),
            settings: s.clone(),
            symbol: Symbol::new(s.symbol.clone()),
            timeframe,
            traffic,
            shadow,
            budget_us: s.budget_us,
        })
    }
}

/// The traffic version that serves the bar opened at `bar_open_ms`: a deterministic weighted pick from a
/// hash of the deployment id and the bar time. `None` when every weight is 0.
pub fn pick(weights: &[f64], deployment: &str, bar_open_ms: i64) -> Option<usize> {
    let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(deployment.as_bytes());
    h.update(bar_open_ms.to_le_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 random bits → a uniform number in [0, 1).
    let u = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    let mut point = u * total;
    let mut last = None;
    for (i, w) in weights.iter().enumerate() {
        if *w <= 0.0 {
            continue;
        }
        last = Some(i);
        if point < *w {
            return Some(i);
        }
        point -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_over_ten_thousand_bars_follows_the_weights_and_a_replay_gives_the_same_split() {
        let weights = [0.8, 0.2, 0.0];
        let bars: Vec<i64> = (0..10_000)
            .map(|i| 1_700_000_000_000 + i * 60_000)
            .collect();
        let run = || -> Vec<Option<usize>> {
            bars.iter()
                .map(|t| pick(&weights, "ab-eurusd", *t))
                .collect()
        };
        let first = run();
        let second = run();
        let share = first.iter().filter(|p| **p == Some(1)).count() as f64 / 10_000.0;
        assert_eq!(first, second, "a replay routes every bar the same way");
        assert!(first.iter().all(|p| *p != Some(2)), "weight 0 gets nothing");
        // Binomial(10 000, 0.2): σ = 0.004, so ±0.02 is 5σ.
        assert!((share - 0.2).abs() < 0.02, "challenger share {share}");
    }

    #[test]
    fn no_version_serves_when_every_weight_is_zero() {
        assert_eq!(pick(&[0.0, 0.0], "d", 1), None);
        assert_eq!(pick(&[0.0, 3.0], "d", 1), Some(1));
    }
}
