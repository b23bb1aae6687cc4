//! Integration tests against real PostgreSQL, Redis and tansu started by the harness.

mod api;
mod broker;
mod client;
mod foundation;
mod harness;
mod pipeline;
