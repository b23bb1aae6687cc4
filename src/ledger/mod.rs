//! The domain: money, operations, the pure rules that apply them, and their PostgreSQL
//! persistence.
//!
//! # Glossary
//!
//! A wallet is named by its tenant and id together ([`ScopedWalletId`](types::ScopedWalletId)):
//! two tenants may each have a wallet with the same id. It has one shape per place it is
//! kept, each holding what that place needs:
//!
//! | Shape | Lives in | Why it exists |
//! |---|---|---|
//! | [`WalletState`](types::WalletState) | `ledger::types` | What the rules need: currency, exact balance, version; the rules key it by its scoped id. Pure, no times. |
//! | [`Wallet`](store::Wallet) | `ledger::store` | The PostgreSQL row: the state plus tenant and timestamps; what a batch commit reports. |
//! | [`CachedWallet`](crate::cache::CachedWallet) | `cache` | The Redis entry: the balance already formatted for its currency, written through a version guard. |
//! | `WalletFacts` | `api::directory` | What never changes about a wallet (its currency), remembered in-process by scoped id to validate operations without a round trip. |
//! | `WalletBody` | `api::wallets` | The HTTP answer: the cached wallet without its tenant. |
//!
//! An operation's result likewise:
//!
//! | Shape | Lives in | Why it exists |
//! |---|---|---|
//! | [`Outcome`](types::Outcome) | `ledger::types` | The rules' verdict on one operation: processed with the balance after, or failed with a reason. |
//! | [`Entry`](types::Entry) | `ledger::types` | One journal line the rules wrote; a wallet's history is exactly its entries. |
//! | [`OperationRecord`](store::OperationRecord) | `ledger::store` | The decided operation as PostgreSQL stores it: the truth the API falls back to. |
//! | [`RejectedRecord`](store::RejectedRecord) | `ledger::store` | An acknowledged operation the database refused, kept as a dead letter: FAILED, `REJECTED`. |
//! | [`Marker`](crate::cache::Marker) | `cache` | The Redis record of a request: idempotency while it is accepted, its final status once decided ([`MarkerState`](crate::cache::MarkerState) is the state machine). |
//! | `StatusBody` | `api::operations` | The HTTP answer, built from a marker, a record or a dead letter. |
//! | [`Event`](events::Event) | `ledger::events` | What other systems learn: written to the outbox in the batch transaction, published by the relay. |
//!
//! A hold likewise:
//!
//! | Shape | Lives in | Why it exists |
//! |---|---|---|
//! | [`Hold`](types::Hold) | `ledger::types` | What the rules need: wallet, amount, what was captured, state, expiry. |
//! | [`HoldRecord`](store::HoldRecord) | `ledger::store` | The PostgreSQL row: the hold plus its tenant-scoped id, creation time and the wallet version of its HOLD (the list's cursor). |
//! | [`DueHold`](store::DueHold) | `ledger::store` | An open hold past its expiry, as the worker's expiry scan finds it. |
//! | `HoldBody` | `api::holds` | The HTTP answer, with what remains. |
//!
//! What an operation is lives in [`kind`]: a new kind starts there.

pub mod audit;
pub mod database;
pub mod events;
pub mod kind;
pub mod metadata;
pub mod migrate;
pub mod money;
pub mod rules;
pub mod store;
pub mod types;
