//! The integration suite: one binary, one module per area. Every test starts what it needs for real
//! (the `Application` on port 0, real actors, real sockets on loopback).

mod admin;
mod authz;
mod backtest;
mod bars;
mod bridge;
mod cache;
mod clickhouse;
mod client_ws;
mod cluster;
mod config;
mod embedding;
mod events;
mod health;
mod helpers;
mod history;
mod hostile;
mod isolation;
mod journal;
mod limits;
mod logs;
mod model_limits;
mod models;
mod nodes;
mod postgres;
mod restart;
mod risk;
mod security;
mod strategy_modules;
mod supervision;
mod tasks;
mod threads;
mod trading;
mod training;
mod warm_up;
