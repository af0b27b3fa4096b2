//! A raw HTTP/1.1 client for a node's API on 127.0.0.1: one request per connection, no
//! dependencies beyond std, so a test sees exactly the status and bytes the server sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long [`http`] waits to connect: the server is on this machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`http`] waits for each read of the response.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A response read by [`http`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, with chunked transfer encoding removed.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON, or `Value::Null` if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 exchange with `127.0.0.1:port` and `Connection: close`: sends `method path`
/// with `headers` (a `Content-Length` for `body` is added) and reads the response to its end.
/// `None` if the server cannot be reached or the response has no status line, which a test that
/// polls a starting node treats as "not yet".
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), CONNECT_TIMEOUT).ok()?;
    s.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    // A read timeout or reset ends the response; what arrived so far is parsed.
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Splits a raw response into status and body, decoding a chunked body.
fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(HttpResponse { status, body })
}

/// The payload of a chunked body: hex size, CRLF, data, CRLF, until the zero-size chunk (or
/// until the bytes run out).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        // A size line may carry extensions after ';'.
        let line = std::str::from_utf8(&b[..i]).unwrap_or("0");
        let size = line.split(';').next().unwrap_or("0").trim();
        let n = usize::from_str_radix(size, 16).unwrap_or(0);
        b = &b[i + 2..];
        if n == 0 || b.len() < n {
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[(n + 2).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn decodes_a_chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;x=y\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    fn keeps_a_plain_body_and_parses_json() {
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{\"code\":\"x\"}\n",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["code"], "x");
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn exchanges_a_request_with_a_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"ping") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(req).unwrap()
        });
        let r = http(
            port,
            "POST",
            "/v1/x",
            &[("Authorization", "Bearer t")],
            b"ping",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /v1/x HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nAuthorization: Bearer t\r\n"), "{req}");
        assert!(req.contains("\r\nContent-Length: 4\r\n"), "{req}");
    }
}
