//! How domain values appear in the OpenAPI document. The ledger types stay free of HTTP
//! concerns; their documented shape lives here, next to the API that shows them.

use paperclip::v2::models::{DataType, DataTypeFormat, DefaultSchemaRaw, Either};
use paperclip::v2::schema::{Apiv2Schema, TypedData};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ledger::metadata::Metadata;
use crate::ledger::money::Currency;
use crate::ledger::types::{HoldState, OperationId, OperationStatus, OperationType, WalletId};

impl TypedData for WalletId {
    fn data_type() -> DataType {
        DataType::String
    }

    fn format() -> Option<DataTypeFormat> {
        Some(DataTypeFormat::Uuid)
    }
}

impl TypedData for OperationId {
    fn data_type() -> DataType {
        DataType::String
    }

    fn format() -> Option<DataTypeFormat> {
        Some(DataTypeFormat::Uuid)
    }
}

fn string_enum(description: &str, values: impl Iterator<Item = &'static str>) -> DefaultSchemaRaw {
    DefaultSchemaRaw {
        data_type: Some(DataType::String),
        description: Some(description.to_owned()),
        enum_: values.map(serde_json::Value::from).collect(),
        ..Default::default()
    }
}

impl Apiv2Schema for Currency {
    fn raw_schema() -> DefaultSchemaRaw {
        string_enum(
            "ISO 4217 code (BTC for bitcoin); fixes how many decimals an amount may have",
            Currency::all().map(|currency| currency.code()),
        )
    }
}

impl Apiv2Schema for OperationStatus {
    fn raw_schema() -> DefaultSchemaRaw {
        string_enum(
            "PENDING until a worker applies the operation, then PROCESSED or FAILED (see `reason`)",
            OperationStatus::ALL
                .into_iter()
                .map(OperationStatus::as_str),
        )
    }
}

impl Apiv2Schema for OperationType {
    fn raw_schema() -> DefaultSchemaRaw {
        string_enum(
            OperationType::SUMMARY,
            OperationType::ALL.into_iter().map(OperationType::as_str),
        )
    }
}

impl Apiv2Schema for HoldState {
    fn raw_schema() -> DefaultSchemaRaw {
        string_enum(
            "OPEN until captured in full (CAPTURED), voided (VOIDED) or released at its \
             expiresAt (EXPIRED)",
            HoldState::ALL.into_iter().map(HoldState::as_str),
        )
    }
}

impl Apiv2Schema for Metadata {
    fn raw_schema() -> DefaultSchemaRaw {
        let value = DefaultSchemaRaw {
            data_type: Some(DataType::String),
            ..Default::default()
        };
        DefaultSchemaRaw {
            data_type: Some(DataType::Object),
            description: Some("Labels of your own: an object of string values".to_owned()),
            extra_props: Some(Either::Right(Box::new(value))),
            example: Some(serde_json::json!({"orderId": "A-1001"})),
            ..Default::default()
        }
    }
}

/// A UUID as the client sent it; handlers parse it so a bad one is answered with the name of
/// the field.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct UuidText(pub String);

impl TypedData for UuidText {
    fn data_type() -> DataType {
        DataType::String
    }

    fn format() -> Option<DataTypeFormat> {
        Some(DataTypeFormat::Uuid)
    }
}

/// An amount exactly as the client wrote it: a JSON string or number, never read as a float.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct AmountText(pub Box<RawValue>);

impl Apiv2Schema for AmountText {
    fn raw_schema() -> DefaultSchemaRaw {
        DefaultSchemaRaw {
            data_type: Some(DataType::String),
            description: Some(
                "A positive decimal, as a string (\"10.50\") or an exact JSON number (10.50), \
                 with no more decimals than the wallet's currency allows"
                    .to_owned(),
            ),
            example: Some(serde_json::Value::from("10.50")),
            ..Default::default()
        }
    }
}

/// An amount field that may be left out: `null` is an amount the client sent, and is
/// answered as an invalid one rather than as a missing field.
pub fn present_amount<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AmountText>, D::Error> {
    AmountText::deserialize(deserializer).map(Some)
}

/// A currency code as the client sent it, parsed by the handler.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct CurrencyText(pub String);

impl Apiv2Schema for CurrencyText {
    fn raw_schema() -> DefaultSchemaRaw {
        Currency::raw_schema()
    }
}
