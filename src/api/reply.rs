//! Successful answers: their status, headers and body, and how each is documented.

use std::collections::BTreeMap;

use actix_web::body::BoxBody;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, Responder};
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{DataType, DefaultOperationRaw, DefaultSchemaRaw, Either, Header};
use paperclip::v2::schema::Apiv2Schema;
use serde::Serialize;

use super::openapi;

/// A wallet: 201 when this request created it, 200 when it already existed.
pub struct WalletReply<T> {
    pub created: bool,
    pub location: String,
    pub body: T,
}

impl<T: Serialize> Responder for WalletReply<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let status = if self.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        HttpResponse::build(status)
            .insert_header((header::LOCATION, self.location))
            .json(self.body)
    }
}

impl<T: Apiv2Schema> Apiv2Schema for WalletReply<T> {}

impl<T: Apiv2Schema> OperationModifier for WalletReply<T> {
    fn update_response(op: &mut DefaultOperationRaw) {
        let location = [("Location", "The wallet's URL")];
        openapi::reply(
            op,
            StatusCode::CREATED,
            "Created",
            Some(openapi::reference::<T>()),
            &location,
        );
        openapi::reply(
            op,
            StatusCode::OK,
            "A wallet with this id and currency already exists; it is answered unchanged",
            Some(openapi::reference::<T>()),
            &location,
        );
        openapi::problem(
            op,
            StatusCode::CONFLICT,
            "A wallet with this id exists with another currency (`WALLET_EXISTS`)",
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        define::<T>(map);
    }
}

/// An operation handed to the broker: 202 and where to poll for its outcome.
pub struct AcceptedReply<T> {
    pub location: String,
    pub body: T,
}

impl<T: Serialize> Responder for AcceptedReply<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::Accepted()
            .insert_header((header::LOCATION, self.location))
            .json(self.body)
    }
}

impl<T: Apiv2Schema> Apiv2Schema for AcceptedReply<T> {}

impl<T: Apiv2Schema> OperationModifier for AcceptedReply<T> {
    fn update_response(op: &mut DefaultOperationRaw) {
        openapi::reply(
            op,
            StatusCode::ACCEPTED,
            "Accepted: the operation is durably queued and will be applied exactly once. A \
             repeated request with the same id answers the operation's current status",
            Some(openapi::reference::<T>()),
            &[("Location", "The operation's status URL")],
        );
        openapi::problem(
            op,
            StatusCode::NOT_FOUND,
            "No wallet has this id (`WALLET_NOT_FOUND`)",
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        define::<T>(map);
    }
}

/// A resource that exists: 200 with its JSON.
pub struct Found<T>(pub T);

impl<T: Serialize> Responder for Found<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(self.0)
    }
}

impl<T: Apiv2Schema> Apiv2Schema for Found<T> {}

impl<T: Apiv2Schema> OperationModifier for Found<T> {
    fn update_response(op: &mut DefaultOperationRaw) {
        openapi::reply(
            op,
            StatusCode::OK,
            "OK",
            Some(openapi::reference::<T>()),
            &[],
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        define::<T>(map);
    }
}

/// Adds `T` to the document's definitions, as paperclip does for its own JSON bodies.
pub fn define<T: Apiv2Schema>(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
    <paperclip::actix::web::Json<T> as OperationModifier>::update_definitions(map);
}

/// A submission's answer: accepted (202, as `AcceptedReply`), or decided (200 with the final
/// status) when the client asked to wait (`Prefer: wait`) and a worker decided in time.
pub struct SubmitReply<A, D> {
    pub location: String,
    /// The `Preference-Applied` value, when the request asked to wait.
    pub preference_applied: Option<String>,
    pub outcome: Outcome<A, D>,
}

pub enum Outcome<A, D> {
    Accepted(A),
    Decided(D),
}

impl<A: Serialize, D: Serialize> Responder for SubmitReply<A, D> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let mut response = match self.outcome {
            Outcome::Accepted(_) => HttpResponse::Accepted(),
            Outcome::Decided(_) => HttpResponse::Ok(),
        };
        response.insert_header((header::LOCATION, self.location));
        if let Some(applied) = self.preference_applied {
            response.insert_header(("Preference-Applied", applied));
        }
        match self.outcome {
            Outcome::Accepted(body) => response.json(body),
            Outcome::Decided(body) => response.json(body),
        }
    }
}

impl<A: Apiv2Schema, D: Apiv2Schema> Apiv2Schema for SubmitReply<A, D> {}

impl<A: Apiv2Schema, D: Apiv2Schema> OperationModifier for SubmitReply<A, D> {
    fn update_response(op: &mut DefaultOperationRaw) {
        AcceptedReply::<A>::update_response(op);
        let headers = [
            ("Location", "The operation's status URL"),
            (
                "Preference-Applied",
                "`wait=N`: the request asked to wait, and waited at most N seconds",
            ),
        ];
        if let Some(Either::Right(accepted)) = op.responses.get_mut(StatusCode::ACCEPTED.as_str()) {
            let applied = headers[1];
            accepted.headers.insert(
                applied.0.to_owned(),
                Header {
                    description: Some(applied.1.to_owned()),
                    data_type: Some(DataType::String),
                    ..Default::default()
                },
            );
        }
        openapi::reply(
            op,
            StatusCode::OK,
            "Decided: the request asked to wait (`Prefer: wait=N`) and a worker decided the \
             operation within the wait; the body is its final status, as its status URL \
             answers it (PROCESSED, or FAILED with `reason`)",
            Some(openapi::reference::<D>()),
            &headers,
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        define::<A>(map);
        define::<D>(map);
    }
}
