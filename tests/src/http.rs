//! A minimal HTTP/1.1 GET client for the admin listener, and a Prometheus text parser.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-cased name, value).
    pub headers: Vec<(String, String)>,
    /// Body, decoded as UTF-8 (lossy).
    pub body: String,
}

impl Response {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Connection: close`; reads until the server closes (or Content-Length).
pub fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
        if let Some(r) = parse(&buf)
            && r.complete
        {
            return Ok(r.response);
        }
        if buf.len() > 64 << 20 {
            return Err("response over 64 MiB".into());
        }
    }
    parse(&buf).map(|p| p.response).ok_or_else(|| {
        format!(
            "unparsable HTTP response: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

struct Parsed {
    response: Response,
    complete: bool,
}

fn parse(buf: &[u8]) -> Option<Parsed> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_bytes = &buf[end + 4..];
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let (body, complete) = if chunked {
        match dechunk(body_bytes) {
            Some(b) => (b, true),
            None => (body_bytes.to_vec(), false),
        }
    } else {
        match len {
            Some(n) if body_bytes.len() >= n => (body_bytes[..n].to_vec(), true),
            _ => (body_bytes.to_vec(), false),
        }
    };
    Some(Parsed {
        response: Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        complete,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Prometheus text exposition parsed into samples keyed `name{labels}` (labels as written).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `name{labels}` (or bare `name`) -> value.
    pub samples: BTreeMap<String, f64>,
    /// Metric family names from `# TYPE` lines.
    pub families: Vec<String>,
}

impl Metrics {
    /// Parses the text format; malformed lines are ignored.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    m.families.push(name.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The value follows the last space outside the label braces.
            let split_at = match line.rfind('}') {
                Some(close) => line[close..].find(' ').map(|i| close + i),
                None => line.find(' '),
            };
            let Some(i) = split_at else { continue };
            let key = line[..i].trim().to_string();
            let val = line[i..].split_whitespace().next().unwrap_or("");
            let v = match val {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            m.samples.insert(key, v);
        }
        m
    }

    /// Value of exactly `key` (`name` or `name{labels}`).
    pub fn get(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }

    /// Sum of every sample whose name (before `{`) is `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether a family or a sample with this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.families.iter().any(|f| f == name)
            || self
                .samples
                .keys()
                .any(|k| k.split('{').next() == Some(name))
    }

    /// Every distinct sample name (without labels).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k).to_string())
            .collect();
        v.dedup();
        v
    }
}
