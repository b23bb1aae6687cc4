//! The OpenAPI document. paperclip collects routes, parameters and bodies from the handlers'
//! signatures; this module holds the document's frame, the helpers with which request
//! extractors and replies describe what they accept and answer, errors included, and the
//! corrections that make the OpenAPI 3 document say what the server answers.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use paperclip::v2::models::{
    DataType, DataTypeFormat, DefaultApiRaw, DefaultOperationRaw, DefaultSchemaRaw, Either, Header,
    Info, MediaRange, Parameter, ParameterIn, Response, Tag,
};
use serde_json::Value;

pub const SPEC_V2_PATH: &str = "/openapi/v2.json";
pub const SPEC_V3_PATH: &str = "/openapi/v3.json";
pub const SWAGGER_PATH: &str = "/swagger";
pub const PROBLEM_SCHEMA: &str = "Problem";
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Properties the server writes as `null` rather than leaving out, as (schema, property).
/// Swagger 2 has no way to say so, so only the OpenAPI 3 document marks them `nullable`.
pub const NULLABLE: [(&str, &str); 2] = [("HistoryPage", "nextCursor"), ("HoldPage", "nextCursor")];

const DESCRIPTION: &str = "\
Wallets, deposits, withdrawals, transfers and holds (reserve, then capture, void or let \
expire). Operations are accepted at once (202) and \
applied exactly once and in order per wallet by workers; poll the operation's `Location` \
for its outcome, or send `Prefer: wait=N` to have the submission's answer wait for it. Wallet \
ids and operation ids belong to the caller's tenant: another tenant may use the same ids for \
wallets and operations of its own, and neither sees the other's. Every error is an RFC 9457 \
problem (`application/problem+json`) with a stable `code`.";

/// The document before paperclip adds the routes.
pub fn frame() -> DefaultApiRaw {
    let json: BTreeSet<MediaRange> = ["application/json"]
        .iter()
        .filter_map(|mime| mime.parse().ok())
        .map(MediaRange)
        .collect();
    let tag = |name: &str, description: &str| Tag {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        external_docs: None,
    };
    DefaultApiRaw {
        info: Info {
            title: "wallet".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: Some(DESCRIPTION.to_owned()),
            ..Default::default()
        },
        consumes: json.clone(),
        produces: json,
        tags: vec![
            tag("wallets", "Creating wallets and reading balances"),
            tag(
                "operations",
                "Submitting operations and reading their outcome",
            ),
            tag(
                "holds",
                "Funds reserved by a HOLD until captured, voided or expired",
            ),
            tag("service", "Health, readiness and metrics for operators"),
        ],
        ..Default::default()
    }
}

/// Documents a successful answer of `op`.
pub fn reply(
    op: &mut DefaultOperationRaw,
    status: StatusCode,
    description: &str,
    schema: Option<DefaultSchemaRaw>,
    headers: &[(&str, &str)],
) {
    let headers = headers
        .iter()
        .map(|(name, description)| ((*name).to_owned(), string_header(description)))
        .collect();
    op.responses.insert(
        status.as_str().to_owned(),
        Either::Right(Response {
            description: Some(description.to_owned()),
            schema,
            headers,
        }),
    );
}

/// Documents an error `op` can answer; several causes of one status share its entry.
pub fn problem(op: &mut DefaultOperationRaw, status: StatusCode, description: &str) {
    let key = status.as_str().to_owned();
    if let Some(Either::Right(existing)) = op.responses.get_mut(&key) {
        let known = existing.description.get_or_insert_with(String::new);
        if !known.contains(description) {
            known.push_str("; ");
            known.push_str(description);
        }
        return;
    }
    let schema = DefaultSchemaRaw {
        reference: Some(format!("#/definitions/{PROBLEM_SCHEMA}")),
        ..Default::default()
    };
    let headers = problem_headers(status)
        .iter()
        .map(|(name, description)| ((*name).to_owned(), string_header(description)))
        .collect();
    op.responses.insert(
        key,
        Either::Right(Response {
            description: Some(description.to_owned()),
            schema: Some(schema),
            headers,
        }),
    );
}

/// The headers `Problem::error_response` may send with a problem of `status`.
fn problem_headers(status: StatusCode) -> &'static [(&'static str, &'static str)] {
    match status {
        StatusCode::UNAUTHORIZED => &[(
            "WWW-Authenticate",
            "`Bearer realm=\"wallet\"`: the route needs a bearer token",
        )],
        StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            &[(
                "Retry-After",
                "Seconds after which the same request may succeed, when the cause is temporary",
            )]
        }
        _ => &[],
    }
}

fn string_header(description: &str) -> Header {
    Header {
        description: Some(description.to_owned()),
        data_type: Some(DataType::String),
        ..Default::default()
    }
}

/// A reference to a named schema, as paperclip writes it for bodies.
pub fn reference<T: paperclip::v2::schema::Apiv2Schema>() -> DefaultSchemaRaw {
    let mut schema = T::schema_with_ref();
    schema.retain_ref();
    schema
}

pub fn parameter(
    op: &mut DefaultOperationRaw,
    location: ParameterIn,
    name: &str,
    description: &str,
    required: bool,
    data_type: DataType,
    format: Option<DataTypeFormat>,
) {
    op.parameters.push(Either::Right(Parameter {
        in_: location,
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required,
        data_type: Some(data_type),
        format,
        ..Default::default()
    }));
}

/// Documents an optional query parameter holding an RFC 3339 time.
pub fn time_parameter(op: &mut DefaultOperationRaw, name: &str, description: &str) {
    parameter(
        op,
        ParameterIn::Query,
        name,
        description,
        false,
        DataType::String,
        Some(DataTypeFormat::DateTime),
    );
}

/// Documents a string parameter that takes one of `values`.
pub fn enum_parameter(
    op: &mut DefaultOperationRaw,
    location: ParameterIn,
    name: &str,
    description: &str,
    values: impl IntoIterator<Item = &'static str>,
) {
    op.parameters.push(Either::Right(Parameter {
        in_: location,
        name: name.to_owned(),
        description: Some(description.to_owned()),
        data_type: Some(DataType::String),
        enum_: values.into_iter().map(Value::from).collect(),
        ..Default::default()
    }));
}

/// The OpenAPI 3 document as served, rendered once when the application is built.
pub struct V3Document(String);

impl V3Document {
    /// paperclip converts the Swagger 2 document, which can give a response only its
    /// operation's `produces` types and no property `nullable`, and turns its response headers
    /// into invalid OpenAPI 3 (an empty `content` without a `schema`); this corrects all
    /// three, so that a client generated from it expects what the server sends.
    pub fn new(mut converted: Value) -> V3Document {
        problems_as_problem_json(&mut converted);
        headers_as_strings(&mut converted);
        mark_nullable(&mut converted);
        V3Document(converted.to_string())
    }
}

pub async fn serve_v3(document: web::Data<V3Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

/// Every response whose body is a problem is `application/problem+json` only, as
/// `Problem::error_response` sends it.
fn problems_as_problem_json(document: &mut Value) {
    let problem = format!("#/components/schemas/{PROBLEM_SCHEMA}");
    let operations = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
                continue;
            };
            let media = content
                .values()
                .find(|media| media["schema"]["$ref"] == problem.as_str())
                .cloned();
            if let Some(media) = media {
                content.clear();
                content.insert(PROBLEM_JSON.to_owned(), media);
            }
        }
    }
}

/// Every response header is a string: the only kind of header the Swagger 2 document has.
fn headers_as_strings(document: &mut Value) {
    let responses = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| {
            operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
        })
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) else {
            continue;
        };
        for header in headers.values_mut() {
            let description = header.get("description").cloned();
            let mut fixed = serde_json::Map::new();
            if let Some(description) = description {
                fixed.insert("description".to_owned(), description);
            }
            fixed.insert("schema".to_owned(), serde_json::json!({"type": "string"}));
            *header = Value::Object(fixed);
        }
    }
}

/// Looked up by pointer, which unlike indexing never adds a missing schema to the document.
fn mark_nullable(document: &mut Value) {
    for (schema, property) in NULLABLE {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        if let Some(property) = document
            .pointer_mut(&pointer)
            .and_then(Value::as_object_mut)
        {
            property.insert("nullable".to_owned(), Value::Bool(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_are_problem_json_headers_strings_and_nullable_properties_say_so() {
        let problem = json!({"schema": {"$ref": "#/components/schemas/Problem"}});
        let page = json!({"schema": {"$ref": "#/components/schemas/HistoryPage"}});
        let converted = json!({
            "paths": {"/history": {
                "parameters": [],
                "get": {"responses": {
                    "200": {
                        "content": {"application/json": page},
                        "headers": {"Location": {"content": {}, "description": "d", "style": "simple"}},
                    },
                    "404": {"content": {"application/json": problem}},
                }},
            }},
            "components": {"schemas": {"HistoryPage": {"properties": {
                "nextCursor": {"type": "string"},
            }}}},
        });
        let V3Document(text) = V3Document::new(converted);
        let served: Value = serde_json::from_str(&text).expect("JSON");
        let responses = &served["paths"]["/history"]["get"]["responses"];
        assert_eq!(
            responses["404"]["content"],
            json!({ PROBLEM_JSON: problem })
        );
        assert_eq!(
            responses["200"]["content"],
            json!({"application/json": page})
        );
        assert_eq!(
            responses["200"]["headers"]["Location"],
            json!({"description": "d", "schema": {"type": "string"}})
        );
        let cursor = &served["components"]["schemas"]["HistoryPage"]["properties"]["nextCursor"];
        assert_eq!(cursor["nullable"], true);
    }
}
