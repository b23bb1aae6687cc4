//! `Prefer: wait=N` (RFC 7240) on submissions: the client would rather wait up to N seconds
//! for the worker's decision than poll for it. N is clamped to `http.prefer_wait_max_s`, and
//! `Preference-Applied: wait=M` says how long the server waited at most. A `Prefer` header
//! the server does not understand, or a `wait` that is not a number of seconds, is ignored,
//! as RFC 7240 asks of preferences a server cannot apply.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{DataType, DefaultOperationRaw, DefaultSchemaRaw, ParameterIn};
use paperclip::v2::schema::Apiv2Schema;
use tokio::time::{Duration, Instant};

use super::{openapi, AppState};

/// The wait a request asked for, as the server applies it.
pub struct Wait {
    /// Seconds the server waits at most: the asked wait, clamped to the maximum.
    pub applied_s: u64,
    /// When the wait ends, counted from the moment the request's head was read.
    pub deadline: Instant,
}

impl Wait {
    /// The `Preference-Applied` value.
    pub fn preference_applied(&self) -> String {
        format!("wait={}", self.applied_s)
    }
}

/// `Prefer: wait=N` when the request carries one the server understands.
pub struct PreferWait(pub Option<Wait>);

impl FromRequest for PreferWait {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let values = request
            .headers()
            .get_all("Prefer")
            .filter_map(|value| value.to_str().ok());
        let asked = requested_wait_s(values);
        let maximum = request
            .app_data::<web::Data<AppState>>()
            .map(|state| state.prefer_wait_max_s)
            .unwrap_or_default();
        let wait = asked.map(|asked| {
            let applied_s = asked.min(maximum);
            Wait {
                applied_s,
                deadline: Instant::now() + Duration::from_secs(applied_s),
            }
        });
        Box::pin(std::future::ready(Ok(PreferWait(wait))))
    }
}

/// The seconds of the first `wait` preference among the `Prefer` header values, when it is
/// well formed (RFC 7240 considers only the first instance of a preference). A number too
/// large to represent asks for the longest wait there is.
fn requested_wait_s<'a>(values: impl Iterator<Item = &'a str>) -> Option<u64> {
    let first = values
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            // Parameters after ';' refine a preference; `wait` defines none.
            let preference = preference.split(';').next().unwrap_or_default();
            let (name, value) = preference.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim())
        })
        .next()?;
    let seconds = first
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(first);
    if seconds.is_empty() || !seconds.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(seconds.parse().unwrap_or(u64::MAX))
}

impl Apiv2Schema for PreferWait {}

impl OperationModifier for PreferWait {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::parameter(
            op,
            ParameterIn::Header,
            "Prefer",
            "`wait=N` (RFC 7240): wait up to N seconds for the worker's decision and answer it \
             with 200 and the operation's final status; still undecided by then, the answer \
             is 202 as without it. N is clamped to the server's `http.prefer_wait_max_s`; \
             `Preference-Applied` says the wait applied. Other preferences, and a malformed \
             `wait`, are ignored",
            false,
            DataType::String,
            None,
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(values: &[&str]) -> Option<u64> {
        requested_wait_s(values.iter().copied())
    }

    /// Proves the forms RFC 7240 allows are understood: any case, spaces, quotes, other
    /// preferences and parameters beside it, several header lines.
    #[test]
    fn well_formed_waits_are_read() {
        assert_eq!(wait(&["wait=5"]), Some(5));
        assert_eq!(wait(&["WAIT = 7"]), Some(7));
        assert_eq!(wait(&["wait=\"3\""]), Some(3));
        assert_eq!(wait(&["respond-async, wait=10;foo=bar"]), Some(10));
        assert_eq!(wait(&["handling=lenient", "wait=2"]), Some(2));
        assert_eq!(wait(&["wait=0"]), Some(0));
        assert_eq!(wait(&["wait=99999999999999999999999"]), Some(u64::MAX));
    }

    /// Proves what cannot be applied is ignored, and only the first `wait` counts.
    #[test]
    fn malformed_waits_are_ignored() {
        assert_eq!(wait(&[]), None);
        assert_eq!(wait(&["respond-async"]), None);
        assert_eq!(wait(&["wait"]), None);
        assert_eq!(wait(&["wait="]), None);
        assert_eq!(wait(&["wait=-1"]), None);
        assert_eq!(wait(&["wait=1.5"]), None);
        assert_eq!(wait(&["wait=soon"]), None);
        assert_eq!(wait(&["waiting=5"]), None);
        assert_eq!(wait(&["wait=abc, wait=5"]), None);
        assert_eq!(wait(&["wait=4, wait=5"]), Some(4));
    }
}
