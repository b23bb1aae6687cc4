//! A wallet's history, page by page: its journal entries with the operations behind them,
//! each page examining a bounded stretch of the journal however rare its filter's matches.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::operations::{operation_from_row, OperationRecord, OPERATION_COLUMNS};
use super::{prepared, StoreError};
use crate::ledger::money::decimal_from_db;
use crate::ledger::types::{OperationStatus, OperationType, ScopedWalletId};

/// One line of a wallet's history: its journal entry and the operation behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub version: i64,
    pub delta: BigDecimal,
    pub balance_after: BigDecimal,
    pub held_after: BigDecimal,
    pub operation: OperationRecord,
}

/// Which entries of a wallet's history a page holds; every filter left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub operation_type: Option<OperationType>,
    pub status: Option<OperationStatus>,
    /// Applied at or after.
    pub from: Option<DateTime<Utc>>,
    /// Applied before.
    pub to: Option<DateTime<Utc>>,
}

/// What one history request asks the journal for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Entries below this version; `i64::MAX` for the newest page.
    pub before_version: i64,
    pub limit: i64,
    /// The most entries the page examines (`http.history_scan_max`).
    pub scan_max: i64,
}

/// A page of a wallet's history, newest first, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// The version the next page starts below; `None` when no older entry can match.
    pub next_before: Option<i64>,
}

/// The versions a page examines: `newest` down to `oldest`, of which `first` is the lowest
/// any page of this filter can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    newest: i64,
    oldest: i64,
    first: i64,
}

impl Window {
    /// At most `scan_max` versions from `newest` down, never below `first`; `None` when
    /// nothing is left to examine.
    fn new(newest: Option<i64>, first: Option<i64>, scan_max: i64) -> Option<Window> {
        let (newest, first) = (newest?, first?);
        (first <= newest).then(|| Window {
            newest,
            oldest: first.max(newest.saturating_sub(scan_max.max(1) - 1)),
            first,
        })
    }

    /// A full page goes on below its last item, as an unfiltered one always did, unless that
    /// item is `first`; a short one goes on below what it examined unless that reached
    /// `first`, so a client following the cursors sees every match, whatever the bound cut,
    /// and the end of the journal is a page without a cursor.
    fn next_before(self, found: usize, limit: i64, last: Option<i64>) -> Option<i64> {
        if i64::try_from(found).is_ok_and(|found| found >= limit) {
            return last.filter(|&last| last > self.first);
        }
        (self.oldest > self.first).then_some(self.oldest)
    }
}

/// The wallet's entries with a version below the request's that pass `filter`, newest first.
/// Versions are assigned under the wallet's row lock, so pages never skip or repeat while new
/// entries land, filtered or not. A page examines at most `scan_max` entries, so a filter
/// that matches little on a long journal costs each request a bounded walk of the primary key
/// (answered with a short page and a cursor) instead of the whole journal on one connection.
pub async fn history(
    client: &impl GenericClient,
    wallet: &ScopedWalletId,
    request: HistoryRequest,
    filter: &HistoryFilter,
) -> Result<HistoryPage, StoreError> {
    let Some(window) = window(client, wallet, request, filter).await? else {
        return Ok(HistoryPage {
            items: Vec::new(),
            next_before: None,
        });
    };
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {OPERATION_COLUMNS}, e.version, e.delta::text, e.balance_after::text, e.held_after::text
                 FROM entries e JOIN operations o ON o.tenant = e.tenant AND o.id = e.operation_id
                 WHERE e.tenant = $9 AND e.wallet_id = $1 AND e.version <= $2 AND e.version >= $3
                   AND ($5::text IS NULL OR o.type = $5)
                   AND ($6::text IS NULL OR o.status = $6)
                   AND ($7::timestamptz IS NULL OR o.processed_at >= $7)
                   AND ($8::timestamptz IS NULL OR o.processed_at < $8)
                 ORDER BY e.version DESC LIMIT $4"
                ),
            )
            .await?,
            &[
                &wallet.id.0,
                &window.newest,
                &window.oldest,
                &request.limit,
                &filter.operation_type.map(OperationType::as_str),
                &filter.status.map(OperationStatus::as_str),
                &filter.from,
                &filter.to,
                &wallet.tenant,
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(item_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_before =
        window.next_before(items.len(), request.limit, items.last().map(|i| i.version));
    Ok(HistoryPage { items, next_before })
}

/// Two seeks: the newest entry below the cursor, and the first entry recorded at or after
/// `from`. A wallet's journal times follow its versions and an entry is recorded no earlier
/// than its operation was processed (see `write_entries`), so no entry below that one was
/// processed at or after `from`.
async fn window(
    client: &impl GenericClient,
    wallet: &ScopedWalletId,
    request: HistoryRequest,
    filter: &HistoryFilter,
) -> Result<Option<Window>, StoreError> {
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT (SELECT version FROM entries WHERE tenant = $4 AND wallet_id = $1 AND version < $2
                         ORDER BY version DESC LIMIT 1),
                        (SELECT version FROM entries
                         WHERE tenant = $4 AND wallet_id = $1
                           AND recorded_at >= COALESCE($3, '-infinity'::timestamptz)
                         ORDER BY recorded_at, version LIMIT 1)",
            )
            .await?,
            &[&wallet.id.0, &request.before_version, &filter.from, &wallet.tenant],
        )
        .await?;
    Ok(Window::new(row.get(0), row.get(1), request.scan_max))
}

fn item_from_row(row: &Row) -> Result<HistoryItem, StoreError> {
    let delta: String = row.get(14);
    let balance_after: String = row.get(15);
    let held_after: String = row.get(16);
    Ok(HistoryItem {
        version: row.get(13),
        held_after: decimal_from_db(&held_after).map_err(StoreError::corrupt)?,
        delta: decimal_from_db(&delta).map_err(StoreError::corrupt)?,
        balance_after: decimal_from_db(&balance_after).map_err(StoreError::corrupt)?,
        operation: operation_from_row(row)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_examines_at_most_the_bound_and_never_below_the_first_match() {
        let window = |newest, first| Window::new(Some(newest), Some(first), 100);
        assert_eq!(
            window(1_000, 1),
            Some(Window {
                newest: 1_000,
                oldest: 901,
                first: 1
            })
        );
        assert_eq!(window(1_000, 950).map(|w| w.oldest), Some(950));
        assert_eq!(window(50, 1).map(|w| w.oldest), Some(1));
        assert_eq!(window(5, 6), None, "nothing recorded since from");
        assert_eq!(
            Window::new(None, Some(1), 100),
            None,
            "nothing below the cursor"
        );
        assert_eq!(Window::new(Some(3), None, 100), None, "nothing since from");
        assert_eq!(
            Window::new(Some(i64::MAX), Some(1), i64::MAX).map(|w| w.oldest),
            Some(1)
        );
    }

    #[test]
    fn a_short_page_goes_on_below_what_it_examined_until_the_first_match() {
        let cut = Window::new(Some(1_000), Some(1), 100).expect("window");
        assert_eq!(cut.next_before(0, 1, None), Some(901), "empty but cut");
        assert_eq!(cut.next_before(3, 5, Some(950)), Some(901), "short but cut");
        assert_eq!(cut.next_before(5, 5, Some(990)), Some(990), "full");
        let whole = Window::new(Some(80), Some(1), 100).expect("window");
        assert_eq!(whole.next_before(3, 5, Some(2)), None, "reached the start");
        assert_eq!(whole.next_before(5, 5, Some(2)), Some(2), "full");
        assert_eq!(
            whole.next_before(5, 5, Some(1)),
            None,
            "full, and its last item is the first match"
        );
    }
}
