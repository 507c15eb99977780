//! The tamper-evident audit log: appended per tenant as an HMAC chain, listed, and verified (from the
//! store or from its copy in the log tiers).

use super::*;

impl Security {
    /// Appends to `tenant`'s chain (`platform` for platform events). Never pass secrets in `detail`.
    pub async fn audit(
        &self,
        tenant: &str,
        action: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), StorageError> {
        let _guard = self.audit_lock.lock().await;
        let mut attempt = 0;
        loop {
            let at_ms = now_ms();
            let last = self.store.last_audit(tenant).await?.map(|r| Entry {
                seq: r.seq as u64,
                body: serde_json::Value::Null,
                hash: r.hash,
            });
            let body = json!({"action": action, "actor": actor, "at_ms": at_ms, "tenant": tenant, "detail": detail});
            let entry = audit::append(&self.audit_key, last.as_ref(), body)
                .map_err(|e| StorageError::Rejected(e.to_string()))?;
            let row = AuditRow {
                tenant_id: tenant.to_owned(),
                seq: entry.seq as i64,
                at_ms,
                action: action.to_owned(),
                body: entry.body.to_string(),
                hash: entry.hash,
            };
            match self.store.insert_audit(&row).await {
                // Another node appended the same sequence number first: chain after its entry.
                Err(StorageError::Rejected(_)) if attempt < 3 => attempt += 1,
                Ok(()) => {
                    if let Some(logs) = self.logs.get() {
                        // The whole entry, hash included: the chain can be checked from the log tiers.
                        logs.push(
                            tenant,
                            "audit",
                            "info",
                            action,
                            json!({"seq": row.seq, "entry": entry.body, "hash": row.hash}),
                        );
                    }
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    pub async fn audit_entries(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditView>, AuthError> {
        Ok(self
            .store
            .audit(tenant, filter)
            .await?
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at_ms: r.at_ms,
                action: r.action,
                entry: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
                hash: r.hash,
            })
            .collect())
    }

    /// Checks `tenant`'s whole chain and names the first entry that does not verify.
    pub async fn verify_audit(&self, tenant: &str) -> Result<ChainCheck, AuthError> {
        let rows = self.store.audit_chain(tenant).await?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut broken = None;
        for r in &rows {
            let body: serde_json::Value = match serde_json::from_str(&r.body) {
                Ok(b) => b,
                Err(_) => {
                    broken.get_or_insert(BrokenEntry {
                        seq: r.seq as u64,
                        reason: "content is not valid JSON".into(),
                    });
                    serde_json::Value::Null
                }
            };
            if broken.is_none() && (body["action"] != r.action.as_str() || body["at_ms"] != r.at_ms)
            {
                broken = Some(BrokenEntry {
                    seq: r.seq as u64,
                    reason: "indexed columns do not match the hashed content".into(),
                });
            }
            entries.push(Entry {
                seq: r.seq as u64,
                body,
                hash: r.hash.clone(),
            });
        }
        let chain = audit::verify(&self.audit_key, &entries)
            .err()
            .map(BrokenEntry::from);
        let first_broken = match (broken, chain) {
            (Some(a), Some(b)) => Some(if a.seq <= b.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(ChainCheck {
            tenant: tenant.to_owned(),
            entries: rows.len(),
            intact: first_broken.is_none(),
            first_broken,
        })
    }

    /// Checks a copy of `tenant`'s chain kept elsewhere (the log tiers), with the same key: in sequence from
    /// the first entry, every hash matching its content, and as long as the stored chain.
    pub async fn verify_audit_copy(
        &self,
        tenant: &str,
        mut entries: Vec<Entry>,
    ) -> Result<ChainCheck, AuthError> {
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let stored = self.store.audit_chain(tenant).await?.len();
        let mut first_broken = audit::verify(&self.audit_key, &entries)
            .err()
            .map(BrokenEntry::from);
        if first_broken.is_none() && entries.len() < stored {
            first_broken = Some(BrokenEntry {
                seq: entries.len() as u64 + 1,
                reason: format!(
                    "missing from the log tiers ({} of {stored} entries there)",
                    entries.len()
                ),
            });
        }
        Ok(ChainCheck {
            tenant: tenant.to_owned(),
            entries: entries.len(),
            intact: first_broken.is_none(),
            first_broken,
        })
    }
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AuditView {
    pub seq: i64,
    pub at_ms: i64,
    pub action: String,
    pub entry: serde_json::Value,
    pub hash: String,
}

/// The result of checking a chain.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChainCheck {
    pub tenant: String,
    pub entries: usize,
    pub intact: bool,
    /// The first entry that does not verify, and why.
    pub first_broken: Option<BrokenEntry>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BrokenEntry {
    pub seq: u64,
    pub reason: String,
}

impl From<AuditError> for BrokenEntry {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Broken { seq, reason } => Self {
                seq,
                reason: reason.into(),
            },
            AuditError::Key => Self {
                seq: 0,
                reason: "the audit key is unusable".into(),
            },
        }
    }
}
