//! Where the secrets come from: configuration (environment, in production) first; any left empty is read
//! from `<data_dir>/secrets.json`, which the first start writes with fresh random values (mode 0600), so the
//! embedded profile needs no set-up and its tokens and keys survive restarts.
//!
//! `trellis keys rotate` adds a data key to that file (or tells the operator to add one to
//! `TRELLIS__SECURITY__DATA_KEYS` when the keys come from the environment).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::Keyring;
use crate::config::SecuritySettings;

pub const FILE: &str = "secrets.json";

#[derive(Serialize, Deserialize, Default)]
struct SecretsFile {
    jwt_secrets: String,
    api_key_pepper: String,
    audit_key: String,
    data_keys: String,
}

/// JWT signing secrets as `(kid, secret)`, the first signs.
pub type JwtSecrets = Vec<(String, Zeroizing<Vec<u8>>)>;

/// The secrets in force.
pub struct Secrets {
    pub jwt: JwtSecrets,
    pub pepper: Zeroizing<Vec<u8>>,
    pub audit_key: Zeroizing<Vec<u8>>,
    pub data_keys: Keyring,
    /// Whether the data keys live in the secrets file (and can be rotated there).
    pub data_keys_in_file: bool,
    pub file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("secrets: {0}")]
pub struct SecretsError(pub String);

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(name: &str, b64: &str) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| SecretsError(format!("{name} is not base64")))?;
    if bytes.len() < 32 {
        return Err(SecretsError(format!("{name} must be at least 32 bytes")));
    }
    Ok(Zeroizing::new(bytes))
}

fn read_file(path: &Path) -> Result<SecretsFile, SecretsError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| SecretsError(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SecretsFile::default()),
        Err(e) => Err(SecretsError(format!("reading {}: {e}", path.display()))),
    }
}

fn write_file(path: &Path, file: &SecretsFile) -> Result<(), SecretsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SecretsError(format!("creating {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_vec_pretty(file).map_err(|e| SecretsError(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options
            .open(&tmp)
            .map_err(|e| SecretsError(format!("writing {}: {e}", tmp.display())))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(|e| SecretsError(format!("writing {}: {e}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| SecretsError(format!("replacing {}: {e}", path.display())))
}

fn parse_jwt(spec: &str) -> Result<JwtSecrets, SecretsError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kid, b64) = part
            .split_once(':')
            .ok_or_else(|| SecretsError("jwt_secrets: expected kid:base64".into()))?;
        out.push((kid.to_owned(), decode("a JWT secret", b64)?));
    }
    if out.is_empty() {
        return Err(SecretsError("jwt_secrets: no key".into()));
    }
    Ok(out)
}

impl Secrets {
    /// Loads the secrets, generating into the file whatever neither configuration nor the file has.
    pub fn load(cfg: &SecuritySettings, data_dir: &Path) -> Result<Self, SecretsError> {
        let path = data_dir.join(FILE);
        let mut file = read_file(&path)?;
        let mut changed = false;
        let mut fill = |slot: &mut String, value: String| {
            if slot.trim().is_empty() {
                *slot = value;
                changed = true;
            }
        };
        if cfg.jwt_secrets.trim().is_empty() {
            fill(&mut file.jwt_secrets, format!("k1:{}", random_b64()));
        }
        if cfg.api_key_pepper.trim().is_empty() {
            fill(&mut file.api_key_pepper, random_b64());
        }
        if cfg.audit_key.trim().is_empty() {
            fill(&mut file.audit_key, random_b64());
        }
        if cfg.data_keys.trim().is_empty() {
            fill(&mut file.data_keys, format!("1:{}", random_b64()));
        }
        if changed {
            write_file(&path, &file)?;
        }
        let pick = |configured: &str, stored: &str| {
            if configured.trim().is_empty() {
                stored.to_owned()
            } else {
                configured.to_owned()
            }
        };
        let data_keys_in_file = cfg.data_keys.trim().is_empty();
        let data_keys = Keyring::parse(&pick(&cfg.data_keys, &file.data_keys))
            .map_err(|e| SecretsError(format!("data_keys: {e}")))?;
        Ok(Self {
            jwt: parse_jwt(&pick(&cfg.jwt_secrets, &file.jwt_secrets))?,
            pepper: decode(
                "api_key_pepper",
                &pick(&cfg.api_key_pepper, &file.api_key_pepper),
            )?,
            audit_key: decode("audit_key", &pick(&cfg.audit_key, &file.audit_key))?,
            data_keys,
            data_keys_in_file,
            file: path,
        })
    }

    /// Adds a new data key (the next version) to the secrets file and makes it primary; answers the keyring
    /// with the old keys decrypt-only.
    pub fn add_data_key(&mut self) -> Result<u32, SecretsError> {
        if !self.data_keys_in_file {
            return Err(SecretsError(
                "the data keys come from TRELLIS__SECURITY__DATA_KEYS: add a new highest version there \
                 (keeping the old ones), restart, then run `trellis keys rotate` to re-encrypt"
                    .into(),
            ));
        }
        let mut file = read_file(&self.file)?;
        let version = self.data_keys.primary() + 1;
        let key = random_b64();
        file.data_keys = format!("{version}:{key},{}", file.data_keys);
        self.data_keys
            .rotate_to(version, &key)
            .map_err(|e| SecretsError(e.to_string()))?;
        write_file(&self.file, &file)?;
        Ok(version)
    }
}
