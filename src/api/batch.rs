//! Bulk submission: `POST /api/v1/operations/batch` takes up to `http.batch_operations_max`
//! operation bodies and answers one result per item, in request order.
//!
//! Each item is an operation exactly as `POST /api/v1/wallet` takes it and is accepted the
//! same way (`submit::accept_all`: validation, its own idempotency marker, produce), except
//! that the operations of one request are produced together, one broker request per
//! partition. Items are independent: one that is invalid, or whose wallet is not the
//! caller's, gets its problem in its result and the others go on. A batch has no single
//! idempotency key, so `Idempotency-Key` is refused; each item is made safe to retry by its
//! `operationId`. The per-token rate limit counts a batch as one request: its size is bounded
//! by `http.batch_operations_max` instead.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use actix_web::body::BoxBody;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, Responder};
use paperclip::actix::{api_v2_operation, Apiv2Schema, OperationModifier};
use paperclip::v2::models::{DefaultOperationRaw, DefaultSchemaRaw, Either};
use paperclip::v2::schema::Apiv2Schema as _;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::caller::Caller;
use super::extract::JsonBody;
use super::operations::{self, AcceptedBody, StatusBody, SubmitOperation};
use super::problem::Refusal;
use super::submit::{self, Accepted, Submission};
use super::wait::{PreferWait, Wait};
use super::{body, openapi, reply, AppState, Problem};
use crate::ledger::types::{OperationId, ScopedId};

pub const BATCH_PATH: &str = "/api/v1/operations/batch";

/// Operations to submit together, each as `POST /api/v1/wallet` takes it.
#[derive(Debug, Deserialize, Apiv2Schema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to `http.batch_operations_max` operations; each must name its `walletId`.
    operations: OperationList,
}

/// The `operations` array as sent, split into items only once the bound is known: read into
/// a `Vec` by serde, a 4 MiB body of `0,0,0,…` made two million items before their number was
/// checked.
#[derive(Debug)]
pub struct OperationList(Box<RawValue>);

impl<'de> Deserialize<'de> for OperationList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('[') {
            return Err(de::Error::invalid_type(
                de::Unexpected::Other("a non-array"),
                &"a sequence",
            ));
        }
        Ok(OperationList(raw))
    }
}

impl OperationList {
    /// The items, or `TOO_MANY_OPERATIONS` from the first item past `max` on: the rest is
    /// never split.
    fn items(&self, max: usize) -> Result<Vec<OperationItem>, Problem> {
        let mut deserializer = serde_json::Deserializer::from_str(self.0.get());
        // The list was read as JSON already and an item takes any JSON value, so the one way
        // this fails is an item too many.
        deserializer.deserialize_seq(AtMost(max)).map_err(|_| {
            Problem::invalid(
                "TOO_MANY_OPERATIONS",
                "operations",
                format!("a batch holds at most {max} operations (key `http.batch_operations_max`)"),
            )
        })
    }
}

impl paperclip::v2::schema::Apiv2Schema for OperationList {
    fn name() -> Option<String> {
        Vec::<OperationItem>::name()
    }

    fn raw_schema() -> DefaultSchemaRaw {
        Vec::<OperationItem>::raw_schema()
    }
}

/// Reads a sequence of at most `.0` items, and stops at the first one more.
struct AtMost(usize);

impl<'de> Visitor<'de> for AtMost {
    type Value = Vec<OperationItem>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "at most {} operations", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element::<OperationItem>()? {
            if items.len() == self.0 {
                return Err(de::Error::invalid_length(items.len() + 1, &self));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// One item as the client sent it, parsed on its own so that a bad item fails alone.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct OperationItem(Box<RawValue>);

impl paperclip::v2::schema::Apiv2Schema for OperationItem {
    fn name() -> Option<String> {
        SubmitOperation::name()
    }

    fn raw_schema() -> DefaultSchemaRaw {
        SubmitOperation::raw_schema()
    }
}

/// One result per submitted operation, in request order.
#[derive(Serialize, Apiv2Schema)]
pub struct BatchResults {
    results: Vec<ItemResult>,
}

/// What became of one item: accepted (`status` PENDING, or the current status of a repeated
/// id), decided within the wait (the operation's final status), or refused (`problem`).
pub enum ItemResult {
    Accepted(AcceptedBody),
    Decided(StatusBody),
    Refused(Problem),
}

impl ItemResult {
    /// A decision waited for: the operation's final status, or the refusal of an item whose
    /// id was decided for another request.
    fn decided(answer: Result<StatusBody, Problem>) -> ItemResult {
        match answer {
            Ok(body) => ItemResult::Decided(body),
            Err(problem) => ItemResult::Refused(problem),
        }
    }
}

impl Serialize for ItemResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ItemResult::Accepted(body) => body.serialize(serializer),
            ItemResult::Decided(body) => body.serialize(serializer),
            ItemResult::Refused(problem) => Refusal::of(problem).serialize(serializer),
        }
    }
}

/// Swagger 2 has no `oneOf`: the result is documented as the status body, none of whose
/// properties is then required, plus `problem`.
impl paperclip::v2::schema::Apiv2Schema for ItemResult {
    fn name() -> Option<String> {
        Some("BatchResult".to_owned())
    }

    fn raw_schema() -> DefaultSchemaRaw {
        let mut schema = StatusBody::raw_schema();
        schema.name = Self::name();
        schema.required.clear();
        schema.description = Some(
            "An accepted item (`operationId`, `walletId`, `status`: PENDING, or the current \
             status of an id already used for the same operation), a decided one (the \
             operation's final status, when the request asked to wait and a worker decided in \
             time), or a refused one: `problem` only, the problem the single submission would \
             have answered"
                .to_owned(),
        );
        schema.properties.insert(
            "problem".to_owned(),
            Box::new(DefaultSchemaRaw {
                reference: Some(format!("#/definitions/{}", openapi::PROBLEM_SCHEMA)),
                ..Default::default()
            }),
        );
        schema
    }
}

/// Submit operations in bulk
///
/// Accepts each operation as `POST /api/v1/wallet` does and answers 200 with one result per
/// operation, in request order: accepted (PENDING), or its problem. One invalid operation
/// does not stop the others. Each is idempotent by its `operationId` (one without it gets a
/// fresh id and is not safe to retry); `Idempotency-Key` is not taken here. With
/// `Prefer: wait=N` the answer waits up to N seconds for the workers, and each operation
/// decided by then carries its final status. The whole request counts once against the
/// token's rate limit.
#[api_v2_operation(tags(operations), operation_id = "submitOperationBatch")]
pub async fn submit(
    state: web::Data<AppState>,
    caller: Caller,
    _key: NoIdempotencyKey,
    wait: PreferWait,
    input: JsonBody<BatchRequest>,
) -> Result<BatchReply, Problem> {
    let items = input.0.operations.items(state.batch_operations_max)?;
    if items.is_empty() {
        return Err(Problem::invalid(
            "EMPTY_BATCH",
            "operations",
            "operations must hold at least one operation",
        ));
    }
    let tenant = caller.0.tenant;
    let parsed: Vec<Result<Submission, Problem>> = items
        .iter()
        .map(|OperationItem(raw)| {
            let input = body::json::<SubmitOperation>(raw.get().as_bytes())?;
            operations::parse(tenant.clone(), input, None, None)
        })
        .collect();
    let preference_applied = wait.0.as_ref().map(Wait::preference_applied);
    // Like a single submission, the acceptance runs to its end even when the client goes
    // away, so that no claimed marker is left unproduced.
    let accepted = actix_web::rt::spawn({
        let state = state.clone();
        async move { accept_once_each(&state, parsed).await }
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "the acceptance of a batch did not finish");
        Problem::internal()
    })?;
    let results = match wait.0 {
        Some(wait) => decided_by(&state, &tenant, accepted, wait).await,
        None => accepted
            .into_iter()
            .map(|answer| match answer {
                Ok(accepted) => ItemResult::Accepted(AcceptedBody::from(accepted)),
                Err(problem) => ItemResult::Refused(problem),
            })
            .collect(),
    };
    Ok(BatchReply {
        preference_applied,
        body: BatchResults { results },
    })
}

/// Accepts the first use of each operation id, all in one `submit::accept_all`, and answers a
/// repeat from its first use: the same content gets the first use's answer, other content the
/// 422 a reused id gets: a repeat is taken as a retry of its first use. Accepted in later
/// rounds, after their first use's marker, repeats cost one produce deadline per round with
/// the broker down (hours for a batch of one id).
async fn accept_once_each(
    state: &AppState,
    parsed: Vec<Result<Submission, Problem>>,
) -> Vec<Result<Accepted, Problem>> {
    let mut firsts: HashMap<OperationId, (usize, String)> = HashMap::new();
    let mut repeats = Vec::new();
    let mut answers: Vec<Option<Result<Accepted, Problem>>> = Vec::with_capacity(parsed.len());
    let mut accepted_indices = Vec::new();
    let mut submissions = Vec::new();
    for (index, item) in parsed.into_iter().enumerate() {
        answers.push(None);
        let submission = match item {
            Ok(submission) => submission,
            Err(problem) => {
                answers[index] = Some(Err(problem));
                continue;
            }
        };
        let fingerprint = submission.fingerprint();
        match firsts.entry(submit::operation_id(&submission)) {
            Entry::Occupied(first) => {
                let (first_index, first_fingerprint) = first.get();
                repeats.push((index, *first_index, *first_fingerprint == fingerprint));
            }
            Entry::Vacant(vacant) => {
                vacant.insert((index, fingerprint));
                accepted_indices.push(index);
                submissions.push(submission);
            }
        }
    }
    let accepted = submit::accept_all(state, submissions).await;
    for (index, answer) in accepted_indices.into_iter().zip(accepted) {
        answers[index] = Some(answer);
    }
    for (index, first, same) in repeats {
        answers[index] = Some(match (same, &answers[first]) {
            (true, Some(answer)) => answer.clone(),
            (true, None) => Err(Problem::internal()),
            (false, _) => Err(submit::key_reused()),
        });
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(Problem::internal())))
        .collect()
}

/// Waits for the decisions of the accepted items. Watching only after the produce is safe:
/// the watch reads every marker once before it waits, so a decision that came first is seen.
/// The items still undecided at the deadline are looked up in PostgreSQL, as a single
/// submission's is, all in one read: a worker that died between its commit and its markers
/// leaves them `Pending`.
async fn decided_by(
    state: &AppState,
    tenant: &str,
    accepted: Vec<Result<Accepted, Problem>>,
    wait: Wait,
) -> Vec<ItemResult> {
    let ids: Vec<ScopedId> = accepted
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .map(|accepted| ScopedId {
            tenant: tenant.to_owned(),
            id: accepted.id,
        })
        .collect();
    let mut markers = state
        .decisions
        .watch(&ids)
        .decided_by(wait.deadline)
        .await
        .into_iter();
    let mut results = Vec::with_capacity(accepted.len());
    let mut undecided: Vec<(usize, Accepted)> = Vec::new();
    for answer in accepted {
        let accepted = match answer {
            Ok(accepted) => accepted,
            Err(problem) => {
                results.push(ItemResult::Refused(problem));
                continue;
            }
        };
        let marker = markers.next().flatten();
        match marker.and_then(|marker| operations::decided_for(&accepted, &marker)) {
            Some(answer) => results.push(ItemResult::decided(answer)),
            None => {
                undecided.push((results.len(), accepted.clone()));
                results.push(ItemResult::Accepted(AcceptedBody::from(accepted)));
            }
        }
    }
    if undecided.is_empty() {
        return results;
    }
    let asked: Vec<&Accepted> = undecided.iter().map(|(_, asked)| asked).collect();
    let decided = operations::decided_all_in_postgres(state, tenant, &asked).await;
    for ((index, _), decided) in undecided.iter().zip(decided) {
        if let Some(answer) = decided {
            results[*index] = ItemResult::decided(answer);
        }
    }
    results
}

/// Refuses `Idempotency-Key`: one key cannot name many operations, and deriving one id per
/// item from it would hide that a retry with other items is a different request.
pub struct NoIdempotencyKey;

impl FromRequest for NoIdempotencyKey {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let refused = request.headers().contains_key("Idempotency-Key").then(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_NOT_SUPPORTED",
                "Idempotency-Key not supported",
                "a batch takes no Idempotency-Key; give each operation its operationId",
            )
        });
        std::future::ready(refused.map_or(Ok(NoIdempotencyKey), Err))
    }
}

impl paperclip::v2::schema::Apiv2Schema for NoIdempotencyKey {}

impl OperationModifier for NoIdempotencyKey {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::problem(
            op,
            StatusCode::BAD_REQUEST,
            "An `Idempotency-Key` header was sent (`IDEMPOTENCY_KEY_NOT_SUPPORTED`): a batch \
             is made safe to retry by each operation's `operationId`",
        );
    }

    fn update_definitions(_: &mut BTreeMap<String, DefaultSchemaRaw>) {}
}

const PREFER_WAIT: &str = "`wait=N` (RFC 7240): wait up to N seconds for the workers' \
     decisions; each operation decided by then is answered with its final status, the others \
     stay PENDING. N is clamped to the server's `http.prefer_wait_max_s`; \
     `Preference-Applied` says the wait applied. Other preferences, and a malformed `wait`, \
     are ignored";

/// 200 with the results, and `Preference-Applied` when the request asked to wait.
pub struct BatchReply {
    preference_applied: Option<String>,
    body: BatchResults,
}

impl Responder for BatchReply {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        if let Some(applied) = self.preference_applied {
            response.insert_header(("Preference-Applied", applied));
        }
        response.json(self.body)
    }
}

impl paperclip::v2::schema::Apiv2Schema for BatchReply {}

impl OperationModifier for BatchReply {
    fn update_response(op: &mut DefaultOperationRaw) {
        // A batch answers 200 whether or not it waited, unlike a single submission.
        for parameter in op.parameters.iter_mut() {
            if let Either::Right(parameter) = parameter {
                if parameter.name == "Prefer" {
                    parameter.description = Some(PREFER_WAIT.to_owned());
                }
            }
        }
        openapi::reply(
            op,
            StatusCode::OK,
            "One result per operation, in request order; accepted ones are durably queued and \
             will be applied exactly once",
            Some(openapi::reference::<BatchResults>()),
            &[(
                "Preference-Applied",
                "`wait=N`: the request asked to wait, and waited at most N seconds",
            )],
        );
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "`operations` is empty (`EMPTY_BATCH`) or longer than `http.batch_operations_max` \
             (`TOO_MANY_OPERATIONS`); a problem of one operation is answered in its result",
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        reply::define::<BatchResults>(map);
        map.insert("BatchResult".to_owned(), ItemResult::raw_schema());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> OperationList {
        serde_json::from_str(text).unwrap()
    }

    /// Proves a list is split into at most `max` items, and that splitting stops at the
    /// first item past `max`: what follows it, here not even JSON, is never read.
    #[test]
    fn a_list_is_read_up_to_one_item_past_its_bound() {
        let items = list("[0, {\"a\": [1]}, \"x\"]").items(3).unwrap();
        let texts: Vec<&str> = items.iter().map(|OperationItem(raw)| raw.get()).collect();
        assert_eq!(texts, ["0", "{\"a\": [1]}", "\"x\""]);
        assert_eq!(list("[]").items(1).unwrap().len(), 0);
        let refused = list("[0,0,0,0]").items(3).map(|_| ()).unwrap_err();
        assert_eq!(refused.code, "TOO_MANY_OPERATIONS");
        let stopped = serde_json::Deserializer::from_str("[0,0,0,nonsense")
            .deserialize_seq(AtMost(2))
            .map(|_| ())
            .unwrap_err();
        assert!(stopped.is_data(), "{stopped}");
        assert!(
            stopped.to_string().contains("invalid length 3"),
            "{stopped}"
        );
    }

    /// Proves `operations` must be an array, as a `Vec` required: the problem names it.
    #[test]
    fn a_list_is_an_array() {
        let refused = body::json::<BatchRequest>(br#"{"operations": 5}"#).unwrap_err();
        assert_eq!(refused.code, "INVALID_FIELD");
        assert_eq!(refused.field.as_deref(), Some("operations"));
        assert!(
            refused.detail.contains("expected a sequence"),
            "{}",
            refused.detail
        );
    }
}
