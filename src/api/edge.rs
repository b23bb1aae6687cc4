//! What the API does before any route sees a request, so that hostile clients stay bounded:
//! closed label sets for metrics, truncated and escaped log values, a deadline on request
//! bodies, security headers, HEAD answered as GET, and the checks made before a client that
//! asked for `Expect: 100-continue` is told to send its body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, Method};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::{caller, Problem};
use crate::auth::TokenRegistry;

/// Longest client-supplied value (method, path, header) written to a log line, in characters;
/// longer values are cut, so one request can never write more than a few lines' worth.
pub const LOG_VALUE_CHARS_MAX: usize = 128;

/// The page may load only its own scripts and styles (Swagger UI sets inline styles and uses
/// `data:` images), may not be framed, and sends forms nowhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers on every answer, the API's and Swagger UI's alike.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// The `method` label of a metric: the standard methods, every other name `other`, so a
/// client cannot add series by inventing methods.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// A client-supplied value as it may appear in a log line: at most `LOG_VALUE_CHARS_MAX`
/// characters, control and non-ASCII characters escaped, and a mark when it was cut.
pub fn loggable(value: &str) -> String {
    let mut text = String::new();
    for (count, character) in value.chars().enumerate() {
        if count == LOG_VALUE_CHARS_MAX {
            text.push_str("…(cut)");
            break;
        }
        if character.is_ascii_graphic() || character == ' ' {
            text.push(character);
        } else {
            text.extend(character.escape_default());
        }
    }
    text
}

/// How long a request's body may take to arrive once its head is in (`http.request_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Bounds the time a request's body may take to arrive: the head has its own deadline in the
/// server (`client_request_timeout`), and a client that declares a body and then stalls
/// would otherwise hold its connection for as long as it likes.
pub async fn body_deadline(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(&BodyTimeout(timeout)) = request.app_data::<BodyTimeout>() {
        let payload = request.take_payload();
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(DeadlineBody::new(payload, timeout));
        request.set_payload(Payload::from(stream));
    }
    next.call(request).await
}

/// A request body that fails with a timeout once its deadline has passed.
struct DeadlineBody {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    ended: bool,
}

impl DeadlineBody {
    fn new(inner: Payload, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            timeout,
            ended: false,
        }
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(context) {
            self.ended = item.is_none();
            return Poll::Ready(item);
        }
        match self.deadline.as_mut().poll(context) {
            Poll::Ready(()) => {
                self.ended = true;
                Poll::Ready(Some(Err(body_timed_out(self.timeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn body_timed_out(timeout: Duration) -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the request body did not arrive within {timeout:?}"),
    ))
}

/// Whether reading a body failed because its deadline passed.
pub fn is_body_timeout(error: &actix_web::Error) -> bool {
    matches!(
        error.as_error::<PayloadError>(),
        Some(PayloadError::Io(error)) if error.kind() == io::ErrorKind::TimedOut
    )
}

/// Routes HEAD as GET: every GET route answers HEAD, and the server leaves the body out
/// because it remembers that the request was a HEAD.
pub async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
    }
    next.call(request).await
}

/// What a request that asks for `Expect: 100-continue` must pass before its client is told
/// to send the body: its declared size, a single `Authorization` header, and the token and
/// scope its route needs. The rate limit is left to the route, which counts each request once.
#[derive(Clone)]
pub struct ContinueGate {
    pub tokens: Arc<TokenRegistry>,
    pub public: Arc<[String]>,
    pub body_bytes_max: usize,
    /// The bound of a batch's body instead (`http.batch_body_bytes_max`).
    pub batch_body_bytes_max: usize,
}

impl ContinueGate {
    pub fn check(&self, request: &actix_http::Request) -> Result<(), Problem> {
        let headers = request.headers();
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let bound = match request.path() == super::batch::BATCH_PATH {
            true => self.batch_body_bytes_max,
            false => self.body_bytes_max,
        };
        if declared.is_some_and(|length| length > bound as u64) {
            return Err(Problem::payload_too_large());
        }
        let authorization = caller::authorization(headers)?;
        match caller::scope_needed(request.path(), request.method(), &self.public) {
            Some(scope) => self
                .tokens
                .identify(authorization, scope)
                .map(drop)
                .map_err(|denied| caller::denied_problem(&denied)),
            None => Ok(()),
        }
    }

    /// The service the HTTP server calls for `Expect: 100-continue`; an error is answered
    /// instead of `100 Continue`, and the body is never read.
    pub fn service(
        self,
    ) -> impl actix_service::ServiceFactory<
        actix_http::Request,
        Config = (),
        Response = actix_http::Request,
        Error = actix_web::Error,
        InitError = (),
    > + Clone {
        actix_service::fn_service(move |request: actix_http::Request| {
            let checked = self.check(&request);
            async move { checked.map(|()| request).map_err(actix_web::Error::from) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let invented = Method::from_bytes(b"XYZZYPLUGH").expect("a valid token");
        assert_eq!(method_label(&invented), "other");
    }

    #[test]
    fn log_values_are_cut_and_escaped() {
        assert_eq!(loggable("/api/v1/wallets"), "/api/v1/wallets");
        assert_eq!(loggable("a\nb\u{1b}c"), "a\\nb\\u{1b}c");
        let long = "x".repeat(50_000);
        let logged = loggable(&long);
        assert!(logged.len() < LOG_VALUE_CHARS_MAX + 16, "{}", logged.len());
        assert!(logged.ends_with("…(cut)"));
    }

    /// A server with the body deadline, a route that reads its body and one that does not.
    fn deadline_server(timeout: Duration) -> (u16, actix_web::dev::Server) {
        use actix_web::{middleware::from_fn, web, App, HttpResponse, HttpServer};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = listener.local_addr().expect("address").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(BodyTimeout(timeout))
                .route(
                    "/read",
                    web::post().to(
                        |body: super::super::extract::JsonBody<serde_json::Value>| async move {
                            HttpResponse::Ok().json(body.0)
                        },
                    ),
                )
                .route("/ignore", web::post().to(HttpResponse::Ok))
                .wrap(from_fn(body_deadline))
        })
        .client_request_timeout(timeout)
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listens")
        .run();
        (port, server)
    }

    /// Sends a head declaring 200 bytes and one byte of body, then stalls; returns what the
    /// server answered before it closed the connection, or None if it kept it past `wait`.
    async fn stall(port: u16, path: &str, wait: Duration) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: 200\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.expect("writes");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
        read.ok()
            .map(|_| String::from_utf8_lossy(&answer).into_owned())
    }

    #[actix_web::test]
    async fn a_stalled_body_is_answered_408_and_its_connection_closed() {
        let (port, server) = deadline_server(Duration::from_millis(300));
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let answer = stall(port, "/read", Duration::from_secs(5)).await;
        let answer = answer.expect("the server closes a stalled connection");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
        let ignored = stall(port, "/ignore", Duration::from_secs(5)).await;
        assert!(
            ignored.is_some(),
            "a route that ignores the body does not keep it either"
        );
        handle.stop(false).await;
    }

    #[actix_web::test]
    async fn a_stalled_body_fails_at_its_deadline() {
        let (_sender, payload) = actix_http::h1::Payload::create(false);
        let mut body = DeadlineBody::new(Payload::from(payload), Duration::from_millis(50));
        let started = std::time::Instant::now();
        let item = futures::StreamExt::next(&mut body).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        let error = match item {
            Some(Err(error)) => actix_web::Error::from(error),
            other => panic!("expected a timeout, got {other:?}"),
        };
        assert!(is_body_timeout(&error));
    }
}
