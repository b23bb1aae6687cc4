//! The OpenAPI document. paperclip collects routes, parameters and bodies from the handlers'
//! signatures; this module holds the document's frame and the helpers with which request
//! extractors and replies describe what they accept and answer, errors included.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use paperclip::v2::models::{
    DataType, DataTypeFormat, DefaultApiRaw, DefaultOperationRaw, DefaultSchemaRaw, Either, Header,
    Info, MediaRange, Parameter, ParameterIn, Response, Tag,
};

pub const SPEC_V2_PATH: &str = "/openapi/v2.json";
pub const SPEC_V3_PATH: &str = "/openapi/v3.json";
pub const SWAGGER_PATH: &str = "/swagger";
pub const PROBLEM_SCHEMA: &str = "Problem";

const DESCRIPTION: &str = "\
Wallets, deposits, withdrawals and transfers. Operations are accepted at once (202) and \
applied exactly once and in order per wallet by workers; poll the operation's `Location` \
for its outcome. Every error is an RFC 9457 problem (`application/problem+json`) with a \
stable `code`.";

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
        .map(|(name, description)| {
            let header = Header {
                description: Some((*description).to_owned()),
                data_type: Some(DataType::String),
                ..Default::default()
            };
            ((*name).to_owned(), header)
        })
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
    op.responses.insert(
        key,
        Either::Right(Response {
            description: Some(description.to_owned()),
            schema: Some(schema),
            headers: Default::default(),
        }),
    );
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
