//! A minimal HTTP/1.1 client over tokio's `TcpStream`, enough to drive the service: keep-alive
//! connections, requests written from pre-built bytes, and responses read by `Content-Length`,
//! chunked encoding or end of stream. No TLS: the benchmark talks to `http://` URLs only.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Address of the service under test, parsed from a URL such as `http://127.0.0.1:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Value of the `Host` header: the URL's host and port.
    pub authority: String,
    pub addr: SocketAddr,
    /// True when every address the host resolves to is a loopback address.
    pub loopback: bool,
}

impl Target {
    pub fn from_addr(addr: SocketAddr) -> Self {
        Target { authority: addr.to_string(), addr, loopback: addr.ip().is_loopback() }
    }

    /// Parses `http://HOST[:PORT][/]` and resolves the host. Paths other than `/` are rejected,
    /// because the routes are fixed.
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--url must start with http:// (the benchmark has no TLS), such as http://127.0.0.1:8080");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            bail!("--url must be a scheme, host and port without a path, such as http://127.0.0.1:8080");
        }
        let with_port = if has_port(authority) { authority.to_string() } else { format!("{authority}:80") };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .with_context(|| format!("failed to resolve the host of --url {url}"))?
            .collect();
        let Some(&addr) = addrs.first() else {
            bail!("the host of --url {url} resolves to no address");
        };
        let loopback = addrs.iter().all(|a| is_loopback(a.ip()));
        Ok(Target { authority: authority.to_string(), addr, loopback })
    }
}

/// True when `authority` ends with `:PORT` (an IPv6 literal keeps its colons inside brackets).
fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (!host.contains(':') || host.ends_with(']')),
        None => false,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Builds the bytes of one request. `body` is sent as JSON.
pub fn request_bytes(method: &str, path: &str, target: &Target, body: Option<&[u8]>, api_key: Option<&str>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", target.authority);
    if let Some(key) = api_key {
        head.push_str(&format!("authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Response {
    /// Returns the `error.code` of an error body, such as `overloaded`, if the body has one.
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(value.get("error")?.get("code")?.as_str()?.to_string())
    }
}

/// One keep-alive connection. After an I/O error the connection must be dropped.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream: BufReader::new(stream) })
    }

    /// Sends one request built by [`request_bytes`] and reads the whole response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.get_mut().write_all(request).await?;
        read_response(&mut self.stream).await
    }
}

async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Response> {
    let status_line = read_line(reader).await?;
    let status = parse_status_line(&status_line)?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("malformed header line ({} bytes)", line.len())));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                content_length = Some(value.parse::<usize>().map_err(|_| invalid("bad content-length".into()))?)
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(reader).await?
    } else if let Some(length) = content_length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        body
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        close = true;
        let mut body = Vec::new();
        reader.read_to_end(&mut body).await?;
        body
    };
    Ok(Response { status, body, close })
}

async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader).await?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size".into()))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(reader).await?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        read_line(reader).await?;
    }
}

/// Reads one CRLF-terminated line without its terminator. Fails at end of stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn parse_status_line(line: &str) -> io::Result<u16> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => {
            code.parse().map_err(|_| invalid("bad status code".into()))
        }
        _ => Err(invalid("not an HTTP/1.x status line".into())),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> io::Result<Response> {
        read_response(&mut BufReader::new(raw)).await
    }

    #[tokio::test]
    async fn reads_content_length_and_chunked_bodies() {
        let fixed = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloNEXT").await.unwrap();
        assert_eq!((fixed.status, fixed.body.as_slice(), fixed.close), (200, &b"hello"[..], false));
        let chunked = parse(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((chunked.status, chunked.body.as_slice(), chunked.close), (503, &b"abcde"[..], true));
        let until_eof = parse(b"HTTP/1.0 200 OK\r\n\r\nrest").await.unwrap();
        assert_eq!((until_eof.body.as_slice(), until_eof.close), (&b"rest"[..], true));
        assert!(parse(b"SSH-2.0\r\n\r\n").await.is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").await.is_err());
    }

    #[test]
    fn error_code_comes_from_the_error_body() {
        let response = Response { status: 503, body: br#"{"error":{"code":"overloaded","message":"m"}}"#.to_vec(), close: false };
        assert_eq!(response.error_code().as_deref(), Some("overloaded"));
        assert_eq!(Response { status: 500, body: b"oops".to_vec(), close: false }.error_code(), None);
    }

    #[test]
    fn urls_resolve_and_tell_loopback() {
        let target = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!((target.authority.as_str(), target.addr.port(), target.loopback), ("127.0.0.1:8080", 8080, true));
        assert!(Target::parse("http://[::1]:9000").unwrap().loopback);
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().addr.port(), 80);
        // Resolving an IP literal needs no network. 192.0.2.0/24 is reserved for documentation.
        assert!(!Target::parse("http://192.0.2.1:8080").unwrap().loopback);
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
        assert!(Target::parse("http://127.0.0.1:8080/v1/classify").is_err());
    }

    #[test]
    fn request_bytes_carry_length_and_key() {
        let target = Target::from_addr("127.0.0.1:9".parse().unwrap());
        let bytes = request_bytes("POST", "/v1/classify", &target, Some(b"{}"), Some("k"));
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "POST /v1/classify HTTP/1.1\r\nhost: 127.0.0.1:9\r\nauthorization: Bearer k\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
