//! `GET /api/v1/positions` and `GET /api/v1/orders`: the caller's tenant's book, from its `Portfolio` actor.

use actix_web::HttpResponse;
use serde_json::json;

use super::error::ApiError;
use super::extractors::TenantCaller;
use crate::actors::messages::GetPortfolio;

async fn snapshot(
    caller: &TenantCaller,
) -> Result<crate::actors::messages::PortfolioSnapshot, ApiError> {
    let portfolio = caller
        .tenant
        .portfolio
        .get()
        .ok_or_else(|| ApiError::Unavailable("portfolio restarting".into()))?;
    Ok(portfolio.send(GetPortfolio).await?)
}

fn respond(caller: &TenantCaller, body: serde_json::Value) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    for header in caller.headers() {
        resp.insert_header(header);
    }
    resp.json(body)
}

pub async fn positions(caller: TenantCaller) -> Result<HttpResponse, ApiError> {
    let snap = snapshot(&caller).await?;
    Ok(respond(
        &caller,
        json!({ "positions": snap.positions, "performance": snap.performance }),
    ))
}

pub async fn orders(caller: TenantCaller) -> Result<HttpResponse, ApiError> {
    let snap = snapshot(&caller).await?;
    Ok(respond(&caller, json!({ "orders": snap.orders })))
}
