//! wallet: a high-load wallet service. See README.md for the architecture.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod ledger;
pub mod startup;
pub mod telemetry;
