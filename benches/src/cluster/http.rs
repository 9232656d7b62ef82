//! A bounded HTTP/1.1 GET for the nodes' admin server (loopback, `connection: close`).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest admin response read.
pub const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// `GET path` on `addr`; the body of a `200` answer, an error otherwise. Every step is
/// bounded by `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
    parse(&String::from_utf8_lossy(&raw))
}

/// The body of a `200` response (`content-length` or read to the close).
pub fn parse(raw: &str) -> io::Result<String> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(bad(format!(
            "status {status}: {}",
            body.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_and_refuses_errors() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse(ok).unwrap(), "{}");
        assert!(parse("HTTP/1.1 404 Not Found\r\n\r\nnope").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\n").is_err());
    }
}
