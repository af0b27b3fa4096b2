//! A small blocking HTTP/1.1 client for the node API: enough for the CLI and devnet, which talk
//! to nodes on the loopback or the LAN (`http://` only).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Largest response body read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .context("the node answered with something other than JSON")
    }
}

/// Splits `http://host:port/base` into the authority and the path prefix.
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("API URL {url:?} must start with http://"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    })
}

/// Sends one request and reads the whole response.
pub fn request(
    method: &str,
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Response> {
    let (authority, prefix) = split_url(url)?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| {
        format!("cannot connect to the node API at {url} (is the node running?)")
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or(("application/octet-stream", &[]));
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            body.0,
            body.1.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if method != "GET" {
        s.write_all(body.1)?;
    }
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer from {url}"))?;
    parse_response(&raw).with_context(|| format!("bad HTTP answer from {url}"))
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_str = std::str::from_utf8(&b[..line_end])?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// GET a JSON document; a non-2xx answer becomes an error carrying the node's message.
pub fn get_json(url: &str, path: &str, timeout: Duration) -> Result<serde_json::Value> {
    let r = request("GET", url, path, None, None, timeout)?;
    let v = r.json()?;
    if !(200..300).contains(&r.status) {
        bail!(
            "{url}{path}: {} ({})",
            v["message"].as_str().unwrap_or("error"),
            v["code"].as_str().unwrap_or("unknown")
        );
    }
    Ok(v)
}

fn check(url: &str, path: &str, r: &Response) -> Result<()> {
    if !(200..300).contains(&r.status) {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        bail!(
            "{url}{path}: {} ({})",
            v["message"].as_str().unwrap_or("error"),
            v["code"].as_str().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// POST a JSON body and read a JSON answer; a non-2xx answer becomes an error.
pub fn post_json(
    url: &str,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let bytes = serde_json::to_vec(body)?;
    let r = request(
        "POST",
        url,
        path,
        None,
        Some(("application/json", &bytes)),
        timeout,
    )?;
    check(url, path, &r)?;
    r.json()
}

/// GET a document as text; a non-2xx answer becomes an error.
pub fn get_text(url: &str, path: &str, timeout: Duration) -> Result<String> {
    let r = request("GET", url, path, None, None, timeout)?;
    check(url, path, &r)?;
    String::from_utf8(r.body).context("the node answered with text that is not UTF-8")
}
