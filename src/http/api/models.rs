//! Model deployments of a tenant: what each serves (versions, weights, shadows, budget), whether its actor
//! runs, and how each version does (predictions, skips, rollbacks, accuracy against realised outcomes,
//! drift of its inputs from the training reference). Read from the deployments' own actors.

use actix_web::HttpResponse;
use serde_json::json;

use super::Authorized;
use crate::actors::messages::GetModelState;
use crate::actors::supervisor::GetChildren;
use crate::http::error::ApiError;

pub async fn list(auth: Authorized) -> Result<HttpResponse, ApiError> {
    let t = auth.tenant()?;
    let children = match t.strategy_supervisor.get() {
        Some(sup) => sup.send(GetChildren).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut items = Vec::with_capacity(t.deployments.len());
    for d in t.deployments.values() {
        let child = children
            .iter()
            .find(|c| c.name == format!("model:{}", d.id));
        let state = match child {
            Some(c) if c.disabled.is_some() => "failed",
            Some(c) if c.running => "running",
            _ => "restarting",
        };
        let host = t.model_hosts.read().get(&d.id).cloned();
        let live = match host {
            Some(h) if state == "running" => h.send(GetModelState).await.ok(),
            _ => None,
        };
        let versions: Vec<_> = d
            .traffic
            .iter()
            .map(|v| (v, false))
            .chain(d.shadow.iter().map(|v| (v, true)))
            .map(|(v, shadow)| {
                let now = live.as_ref().and_then(|l| {
                    l.versions
                        .iter()
                        .find(|s| s.version == v.version && s.shadow == shadow)
                });
                json!({
                    "version": v.version,
                    "shadow": shadow,
                    "configured_weight": if shadow { 0.0 } else { v.weight },
                    "manifest": v.manifest,
                    "live": now,
                })
            })
            .collect();
        items.push(json!({
            "deployment": d.id,
            "symbol": d.symbol,
            "timeframe": d.timeframe,
            "budget_us": d.budget_us,
            "state": state,
            "last_error": child.and_then(|c| c.disabled.clone()),
            "versions": versions,
            "recent": live.as_ref().map(|l| &l.recent[l.recent.len().saturating_sub(20)..]),
        }));
    }
    Ok(auth.ok(json!({ "models": items })))
}
