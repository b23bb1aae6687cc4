//! The domain: money, operations, the pure rules that apply them, and their PostgreSQL
//! persistence.

pub mod audit;
pub mod database;
pub mod events;
pub mod kind;
pub mod migrate;
pub mod money;
pub mod rules;
pub mod store;
pub mod types;
