//! The load phase's single submissions over one plain keep-alive HTTP/1.1 connection per load
//! task: the request is written in one piece and the answer read by its `Content-Length`,
//! which costs the bench a fraction of what a general client does per request, CPU the
//! machine under test then has for the system. Used for `http://` URLs only; anything this
//! reader does not expect (no length, a chunked body) is an error, never a guess.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer head this reader accepts, in bytes.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Where the connection goes and what every request carries.
#[derive(Debug, Clone)]
pub struct Endpoint {
    address: String,
    host: String,
    authorization: Option<String>,
    timeout: Duration,
}

impl Endpoint {
    /// The endpoint of an `http://host:port` URL (a path after it is ignored); None for any
    /// other scheme.
    pub fn of(url: &str, token: Option<&str>, timeout: Duration) -> Option<Endpoint> {
        let rest = url.strip_prefix("http://")?;
        let host = rest.split('/').next().filter(|host| !host.is_empty())?;
        let address = match host.contains(':') {
            true => host.to_owned(),
            false => format!("{host}:80"),
        };
        Some(Endpoint {
            address,
            host: host.to_owned(),
            authorization: token.map(|token| format!("Bearer {token}")),
            timeout,
        })
    }
}

/// One connection, opened on first use and again after any failure.
pub struct Connection {
    endpoint: Endpoint,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    pub fn new(endpoint: Endpoint) -> Connection {
        Connection {
            endpoint,
            stream: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// POSTs `body` (JSON) to `path` and returns the answer's status; the connection is
    /// dropped after an error, so the next request opens a new one.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let exchange = tokio::time::timeout(self.endpoint.timeout, self.exchange(path, body));
        let result = match exchange.await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            )),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Connects now, unless connected: what the first request would otherwise do.
    pub async fn open(&mut self) -> std::io::Result<()> {
        if self.stream.is_none() {
            let connect = TcpStream::connect(&self.endpoint.address);
            let stream = tokio::time::timeout(self.endpoint.timeout, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection in time")
                })??;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        self.open().await?;
        let request = request(&self.endpoint, path, body);
        let Some(stream) = self.stream.as_mut() else {
            return Err(invalid("no connection"));
        };
        stream.write_all(&request).await?;
        let (status, close) = read_answer(stream, &mut self.buffer).await?;
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

fn request(endpoint: &Endpoint, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::with_capacity(256 + body.len());
    request.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            endpoint.host,
            body.len()
        )
        .as_bytes(),
    );
    if let Some(authorization) = &endpoint.authorization {
        request.extend_from_slice(format!("Authorization: {authorization}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// Reads one answer: its status, and whether the server will close the connection.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    buffer.clear();
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > HEAD_BYTES_MAX {
            return Err(invalid("answer head too long"));
        }
        read_more(stream, buffer).await?;
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let answer = Head::parse(head)?;
    while buffer.len() < head_end + answer.length {
        read_more(stream, buffer).await?;
    }
    if buffer.len() > head_end + answer.length {
        return Err(invalid("more bytes than the answer's length"));
    }
    Ok((answer.status, answer.close))
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed mid-answer",
        ));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// What the reader needs from an answer's head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    length: usize,
    close: bool,
}

impl Head {
    fn parse(head: &str) -> std::io::Result<Head> {
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.strip_prefix("HTTP/1.1 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("no HTTP/1.1 status line"))?;
        let (mut length, mut close) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("a chunked answer"));
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.ok_or_else(|| invalid("no Content-Length"))?;
        Ok(Head {
            status,
            length,
            close,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the head gives its status, length and whether the server closes, and that an
    /// answer without a length or with a chunked body is refused rather than guessed at.
    #[test]
    fn heads_are_read_or_refused() {
        let head = "HTTP/1.1 202 Accepted\r\ncontent-length: 93\r\nlocation: /x\r\n\r\n";
        assert_eq!(
            Head::parse(head).unwrap(),
            Head {
                status: 202,
                length: 93,
                close: false
            }
        );
        let closing =
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            Head::parse(closing).unwrap(),
            Head {
                status: 503,
                length: 0,
                close: true
            }
        );
        assert!(Head::parse("HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(Head::parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(Head::parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").is_err());
    }

    /// Proves only plain http URLs make an endpoint, with the default port when none is given.
    #[test]
    fn endpoints_come_from_http_urls() {
        let timeout = Duration::from_secs(1);
        let endpoint = Endpoint::of("http://127.0.0.1:18080", Some("t"), timeout).unwrap();
        assert_eq!(endpoint.address, "127.0.0.1:18080");
        assert_eq!(endpoint.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(
            Endpoint::of("http://wallet/", None, timeout)
                .unwrap()
                .address,
            "wallet:80"
        );
        assert!(Endpoint::of("https://wallet", None, timeout).is_none());
        assert!(Endpoint::of("http://", None, timeout).is_none());
    }

    /// Proves a connection opened ahead connects before any request is written, and that
    /// the first request then goes over it rather than over a connection of its own.
    #[tokio::test]
    async fn a_connection_opened_ahead_carries_the_first_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let endpoint = Endpoint::of(&url, None, Duration::from_secs(5)).unwrap();
        let mut connection = Connection::new(endpoint);
        connection.open().await.unwrap();
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("open connects before any request")
            .unwrap();
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            while find(&request, b"{}").is_none() {
                let mut chunk = [0u8; 1024];
                let read = accepted.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the request arrives on the opened connection");
                request.extend_from_slice(&chunk[..read]);
            }
            accepted
                .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(connection.post_json("/x", b"{}").await.unwrap(), 202);
        server.await.unwrap();
    }
}
