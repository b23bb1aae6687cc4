//! What a history request asks for: its page (limit, cursor) and its filters, each bad value
//! answered with a problem naming its parameter.

use super::extract::HistoryParams;
use super::{body, Problem};
use crate::ledger::store::HistoryFilter;
use crate::ledger::types::{OperationStatus, OperationType};

const HISTORY_LIMIT_DEFAULT: u32 = 50;

/// A validated history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: u32,
    /// Entries below this version; `i64::MAX` for the newest page.
    pub before_version: i64,
    pub filter: HistoryFilter,
}

pub fn history_query(params: &HistoryParams, limit_max: u32) -> Result<HistoryQuery, Problem> {
    let (limit, before_version) =
        page(params.limit.as_deref(), params.cursor.as_deref(), limit_max)?;
    Ok(HistoryQuery {
        limit,
        before_version,
        filter: filter(params)?,
    })
}

/// A page's size and the version it starts below (`i64::MAX` for the newest page), from
/// `limit` and `cursor`: the paging of every list whose items carry a wallet version.
pub fn page(
    limit: Option<&str>,
    cursor: Option<&str>,
    limit_max: u32,
) -> Result<(u32, i64), Problem> {
    let limit = match limit {
        None => HISTORY_LIMIT_DEFAULT.min(limit_max),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=limit_max).contains(limit))
            .ok_or_else(|| {
                Problem::invalid(
                    "INVALID_LIMIT",
                    "limit",
                    format!("limit must be between 1 and {limit_max}"),
                )
            })?,
    };
    let before_version = match cursor {
        None => i64::MAX,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|cursor| *cursor > 0)
            .ok_or_else(|| {
                Problem::invalid(
                    "INVALID_CURSOR",
                    "cursor",
                    "cursor must be a value returned as nextCursor",
                )
            })?,
    };
    Ok((limit, before_version))
}

fn filter(params: &HistoryParams) -> Result<HistoryFilter, Problem> {
    let operation_type = params
        .operation_type
        .as_deref()
        .map(|text| {
            OperationType::parse(text).ok_or_else(|| {
                let detail = format!("type must be {}", OperationType::listed(OperationType::ALL));
                Problem::invalid("INVALID_OPERATION_TYPE", "type", detail)
            })
        })
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            OperationStatus::parse(text)
                .filter(|status| OperationStatus::DECIDED.contains(status))
                .ok_or_else(|| {
                    let names: Vec<&str> = OperationStatus::DECIDED
                        .into_iter()
                        .map(OperationStatus::as_str)
                        .collect();
                    let detail = format!("status must be {}", names.join(" or "));
                    Problem::invalid("INVALID_STATUS", "status", detail)
                })
        })
        .transpose()?;
    let from = body::time("from", params.from.as_deref())?;
    let to = body::time("to", params.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(Problem::invalid(
                "INVALID_RANGE",
                "from",
                "from must not be after to",
            ));
        }
    }
    Ok(HistoryFilter {
        operation_type,
        status,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HistoryParams {
        let mut params = HistoryParams::default();
        for (name, value) in pairs {
            let slot = match *name {
                "limit" => &mut params.limit,
                "cursor" => &mut params.cursor,
                "type" => &mut params.operation_type,
                "status" => &mut params.status,
                "from" => &mut params.from,
                "to" => &mut params.to,
                other => panic!("no parameter {other}"),
            };
            *slot = Some((*value).to_owned());
        }
        params
    }

    fn code(pairs: &[(&str, &str)]) -> &'static str {
        history_query(&params(pairs), 100).map_or_else(|problem| problem.code, |_| "OK")
    }

    #[test]
    fn filters_are_parsed_and_combined() {
        let query = history_query(
            &params(&[
                ("type", "WITHDRAW"),
                ("status", "FAILED"),
                ("from", "2026-12-01T10:00:00+01:00"),
                ("to", "2026-12-01T10:00:00Z"),
                ("cursor", "7"),
            ]),
            100,
        )
        .expect("valid");
        assert_eq!(query.limit, 50);
        assert_eq!(query.before_version, 7);
        assert_eq!(query.filter.operation_type, Some(OperationType::Withdraw));
        assert_eq!(query.filter.status, Some(OperationStatus::Failed));
        assert_eq!(
            query.filter.from.map(|time| time.to_rfc3339()),
            Some("2026-12-01T09:00:00+00:00".to_owned())
        );
        let unfiltered = history_query(&params(&[]), 100).expect("valid");
        assert_eq!(unfiltered.filter, HistoryFilter::default());
        assert_eq!(unfiltered.before_version, i64::MAX);
    }

    #[test]
    fn bad_filters_name_their_parameter() {
        assert_eq!(code(&[("type", "deposit")]), "INVALID_OPERATION_TYPE");
        assert_eq!(code(&[("status", "PENDING")]), "INVALID_STATUS");
        assert_eq!(code(&[("from", "2026-12-01")]), "INVALID_TIME");
        assert_eq!(code(&[("to", "2026-12-01T10:00:00 01:00")]), "INVALID_TIME");
        assert_eq!(
            code(&[
                ("from", "2026-12-02T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z")
            ]),
            "INVALID_RANGE"
        );
        assert_eq!(code(&[("limit", "0")]), "INVALID_LIMIT");
        assert_eq!(code(&[("cursor", "-1")]), "INVALID_CURSOR");
    }
}
