//! Kafka: topics, the producer, partition ownership, consumers and the message codec. No
//! business rules live here.

pub mod broker;
pub mod codec;
pub mod consumer;
pub mod health;
pub mod lag;
pub mod lease;
pub mod partitioner;
pub mod producer;
pub mod reader;
pub mod relay;
pub mod worker;
