//! The API's answer to an over-long request line, in its own JSON error form.
//!
//! hyper answers a request line longer than it can parse (64 KiB) with a bare `414` and no body,
//! before any handler runs. The API promises a JSON error with a stable `code` for every refusal,
//! so each connection's bytes pass through a [`UriGuard`] that watches the request line of each
//! request: one longer than [`MAX_REQUEST_LINE_BYTES`] is never handed to hyper; the guard writes
//! `414 {"code":"uri_too_long",…}` itself and closes the connection. It only counts bytes up to
//! the first line feed of a request, so headers and bodies pass untouched. A request starts a
//! connection; after a response, the next bytes start one only if they begin with an HTTP method
//! and a space (a server may answer before it has read a whole body, as it does a `413`: what
//! the client still sends is the rest of that body, not a request line).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request line (method, target, version) the API reads: far above any of its routes.
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

/// The response to an over-long request line.
fn too_long_response() -> Vec<u8> {
    let body = format!(
        "{{\"code\":\"uri_too_long\",\"message\":\"request line longer than {MAX_REQUEST_LINE_BYTES} bytes\"}}"
    );
    format!(
        "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether `bytes` begin like a request line: a method and a space (or a prefix of that).
fn starts_request(bytes: &[u8]) -> bool {
    const METHODS: [&[u8]; 7] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
    ];
    METHODS.iter().any(|m| {
        let n = m.len().min(bytes.len());
        bytes[..n] == m[..n]
    })
}

enum Phase {
    /// Reading a request line: this many bytes of it so far.
    Line(usize),
    /// Past the request line: headers and body go straight through.
    Rest,
    /// A response went out: the next bytes read may start a request.
    AfterResponse,
    /// Writing the 414 (this much of it sent), then end of stream.
    Rejecting(Vec<u8>, usize),
    /// The 414 is sent: end of stream for hyper.
    Done,
}

/// A connection's stream, with request lines watched (see the module doc).
pub struct UriGuard<S> {
    inner: S,
    phase: Phase,
}

impl<S> UriGuard<S> {
    /// Watches `inner`'s requests.
    pub fn new(inner: S) -> Self {
        UriGuard {
            inner,
            phase: Phase::Line(0),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> UriGuard<S> {
    /// Writes the rest of the 414, then shuts the stream down.
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.phase {
                Phase::Rejecting(resp, sent) if *sent < resp.len() => {
                    let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &resp[*sent..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *sent += n;
                }
                Phase::Rejecting(..) => {
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    self.phase = Phase::Done;
                }
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for UriGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Rejecting(..) => {
                ready!(this.poll_reject(cx))?;
                return Poll::Ready(Ok(()));
            }
            Phase::Done => return Poll::Ready(Ok(())),
            Phase::Line(_) | Phase::Rest | Phase::AfterResponse => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if matches!(this.phase, Phase::AfterResponse) && buf.filled().len() > before {
            this.phase = if starts_request(&buf.filled()[before..]) {
                Phase::Line(0)
            } else {
                Phase::Rest
            };
        }
        if let Phase::Line(seen) = this.phase {
            let new = &buf.filled()[before..];
            // The line's length so far: up to its line feed if this read holds it.
            let end = new.iter().position(|b| *b == b'\n');
            let line = seen + end.unwrap_or(new.len());
            match end {
                _ if line > MAX_REQUEST_LINE_BYTES => {
                    // Nothing of the over-long line reaches hyper.
                    buf.set_filled(before);
                    this.phase = Phase::Rejecting(too_long_response(), 0);
                    ready!(this.poll_reject(cx))?;
                }
                Some(_) => this.phase = Phase::Rest,
                None => this.phase = Phase::Line(line),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for UriGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A response is going out: the next bytes read may start a new request.
        if matches!(this.phase, Phase::Rest) {
            this.phase = Phase::AfterResponse;
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_long_request_line_gets_the_json_414_and_nothing_reaches_the_server() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = UriGuard::new(server);
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
        client.write_all(long.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        guard.read_to_end(&mut seen).await.unwrap();
        assert!(
            seen.len() <= MAX_REQUEST_LINE_BYTES,
            "{} bytes passed",
            seen.len()
        );
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
        assert!(answer.contains("\"code\":\"uri_too_long\""), "{answer}");
    }

    #[tokio::test]
    async fn the_rest_of_a_body_after_an_early_response_is_not_a_request_line() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = UriGuard::new(server);
        let request = b"POST /v1/tx HTTP/1.1\r\ncontent-length: 50000\r\n\r\n";
        client.write_all(request).await.unwrap();
        let mut head = vec![0u8; request.len()];
        guard.read_exact(&mut head).await.unwrap();
        // The server answers before reading the body (a 413, say)...
        guard.write_all(b"HTTP/1.1 413 x\r\n\r\n").await.unwrap();
        // ...and the body keeps coming: it passes as body.
        let body = vec![7u8; 20_000];
        client.write_all(&body).await.unwrap();
        let mut seen = vec![0u8; body.len()];
        guard.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, body);
        // A next request after a response is watched again.
        guard.write_all(b"HTTP/1.1 200 x\r\n\r\n").await.unwrap();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
        client.write_all(long.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        guard.read_to_end(&mut rest).await.unwrap();
        assert!(rest.len() <= MAX_REQUEST_LINE_BYTES);
    }

    #[tokio::test]
    async fn short_lines_headers_and_bodies_pass_untouched() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = UriGuard::new(server);
        // A long body without a line feed is not a request line.
        let req = format!(
            "POST /v1/txs HTTP/1.1\r\ncontent-length: 20000\r\n\r\n{}",
            "b".repeat(20_000)
        );
        client.write_all(req.as_bytes()).await.unwrap();
        drop(client);
        let mut seen = Vec::new();
        guard.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, req.as_bytes());
    }
}
