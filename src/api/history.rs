//! A wallet's history: its journal entries with the operations that wrote them, filtered
//! and paged by a stable cursor.

use actix_web::web;
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::Serialize;

use super::caller::Caller;
use super::extract::{HistoryParams, WalletPath};
use super::history_query::{history_query, HistoryQuery};
use super::operations::StatusBody;
use super::reply::Found;
use super::{lookup, AppState, Problem};
use crate::ledger::database;
use crate::ledger::store::{self, HistoryItem, HistoryRequest};

/// One journal entry of the wallet and the operation that wrote it.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The wallet's version after this entry; versions have no gaps.
    version: i64,
    /// What the entry added to the balance (negative for a debit, 0 for a failed operation).
    #[openapi(example = "\"-10.00\"")]
    delta: String,
    /// What the wallet held (reserved by open holds) right after this entry.
    #[openapi(example = "\"20.00\"")]
    held_after: String,
    /// `balanceAfter` is this wallet's balance after the entry (the receiver's, for an
    /// incoming transfer).
    #[serde(flatten)]
    operation: StatusBody,
}

/// A page of a wallet's history, newest first.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    items: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page. A filtered page
    /// may hold fewer than `limit` items, none even, and still have one: each page examines
    /// at most `http.history_scan_max` entries.
    next_cursor: Option<String>,
}

/// List a wallet's operations
///
/// The wallet's journal, newest first, incoming transfers included. The cursor is the last
/// version seen, so operations applied meanwhile never shift a page. Filters (`type`,
/// `status`, `from` ≤ processedAt < `to`) combine; keep them the same while following
/// `nextCursor`. Each page examines at most `http.history_scan_max` journal entries, so a
/// filtered page may be short, or empty, with a `nextCursor`: the end is a null `nextCursor`.
#[api_v2_operation(tags(operations), operation_id = "listOperations")]
pub async fn history(
    state: web::Data<AppState>,
    caller: Caller,
    path: WalletPath,
    query: HistoryParams,
) -> Result<Found<HistoryPage>, Problem> {
    let WalletPath(wallet_id) = path;
    let HistoryQuery {
        limit,
        before_version,
        filter,
    } = history_query(&query, state.history_limit_max)?;
    let scoped = caller.wallet(wallet_id);
    let wallet = lookup::find(&state, &scoped)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(wallet_id))?;
    let client = database::client(&state.pool).await?;
    let request = HistoryRequest {
        before_version,
        limit: i64::from(limit),
        scan_max: i64::from(state.history_scan_max),
    };
    let store::HistoryPage { items, next_before } =
        store::history(&client, &scoped, request, &filter).await?;
    let next_cursor = next_before.map(|version| version.to_string());
    let items = items
        .iter()
        .map(
            |HistoryItem {
                 version,
                 delta,
                 balance_after,
                 held_after,
                 operation,
             }| {
                let mut operation = StatusBody::from_record(operation, Some(wallet.currency));
                operation.balance_after = Some(wallet.currency.format(balance_after));
                HistoryEntry {
                    version: *version,
                    delta: wallet.currency.format(delta),
                    held_after: wallet.currency.format(held_after),
                    operation,
                }
            },
        )
        .collect();
    Ok(Found(HistoryPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openapi;

    /// A property written as `null` must be `nullable` in the OpenAPI 3 document, or a
    /// client generated from it rejects the last page.
    #[test]
    fn the_nulls_of_a_last_page_are_documented() {
        let last = HistoryPage {
            items: Vec::new(),
            next_cursor: None,
        };
        let body = serde_json::to_value(last).expect("a page serializes");
        let properties = body.as_object().expect("a page is an object");
        for (name, value) in properties.iter().filter(|(_, value)| value.is_null()) {
            assert!(
                openapi::NULLABLE.contains(&("HistoryPage", name.as_str())),
                "HistoryPage.{name} is written as {value} but not documented as nullable"
            );
        }
    }
}
