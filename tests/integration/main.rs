//! Integration tests against real PostgreSQL, Redis and Apache Kafka started by the harness.

mod api;
mod auth;
mod balance_at;
mod bench;
mod broker;
mod chaos;
mod client;
mod contract;
mod edge;
mod events;
mod faults;
mod foundation;
mod fuzz;
mod guarantees;
mod harness;
mod history_filters;
mod hostile;
mod lifecycle;
mod metadata;
mod operator;
mod overdraft;
mod packaging;
mod pipeline;
mod refusals;
mod tenants;
mod wait;
