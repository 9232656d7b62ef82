//! The admin HTTP server (`GET /metrics`, `/healthz`, `/status`) and the `halyard ctl` client.
//!
//! The server runs on its own thread with its own compio runtime, so a slow scrape never
//! delays MQTT traffic. Requests are bounded (`admin.max_request_bytes`) and timed
//! (`admin.request_timeout_secs`); every response closes the connection.

pub mod ctl;
pub mod http;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use serde::Serialize;

use crate::metrics::{Metrics, Totals};

/// Static facts about the running broker shown by `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Crate version.
    pub version: &'static str,
    /// Node name.
    pub name: String,
    /// Node role (`core` or `replicant`).
    pub role: String,
    /// The MQTT listeners, as `kind` and bound address.
    pub listeners: Vec<ListenerInfo>,
    /// Number of I/O threads.
    pub io_threads: usize,
    /// The configured backend (`auto`, `uring`, `epoll`).
    pub io_backend_configured: String,
}

/// One MQTT listener in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    /// `tcp` (later `tls`, `ws`, `wss`).
    pub kind: &'static str,
    /// The bound address.
    pub bind: String,
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct Status<'a> {
    /// Crate version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Node name and role.
    pub node: NodeSummary<'a>,
    /// I/O threads and the backend in use.
    pub io: IoSummary<'a>,
    /// MQTT listeners.
    pub listeners: &'a [ListenerInfo],
    /// Counts.
    pub counts: Totals,
    /// XDP accounting: `{enabled, reason, attachments}`.
    pub xdp: Option<&'a crate::xdp::XdpStatus>,
    /// The broker's per-source counts: `{tracked, max, evictions, top}`.
    pub sources: Option<crate::xdp::SourcesSummary>,
    /// The durable store's counts (`null` when `store.enabled` is false).
    pub store: Option<crate::metrics::store::StoreSummary>,
    /// The cluster figures (`null` on a single node): role, Raft term and leader, stream
    /// state, upstream core, applied/committed index, lag, queues, forwarding counters.
    pub cluster: Option<serde_json::Value>,
}

/// Node part of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary<'a> {
    /// Node name.
    pub name: &'a str,
    /// Node role.
    pub role: &'a str,
}

/// I/O part of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct IoSummary<'a> {
    /// The driver in use: `uring` or `epoll`.
    pub backend: &'a str,
    /// What the configuration asked for.
    pub backend_configured: &'a str,
    /// Number of I/O threads.
    pub threads: usize,
}

/// Shared state of the admin server.
#[derive(Debug)]
pub struct Admin {
    /// Node facts.
    pub info: NodeInfo,
    /// Live counters.
    pub metrics: Arc<Metrics>,
    /// `admin.max_request_bytes`.
    pub max_request_bytes: usize,
    /// `admin.request_timeout_secs`.
    pub request_timeout: Duration,
    /// `admin.token`: required as `Authorization: Bearer TOKEN` except on `/healthz`.
    pub token: Option<String>,
    /// Bans (`/bans`).
    pub security: Arc<crate::security::Security>,
}

impl Admin {
    /// The `/status` JSON text.
    pub fn status_json(&self) -> String {
        let status = Status {
            version: self.info.version,
            uptime_secs: self.metrics.started.elapsed().as_secs(),
            node: NodeSummary {
                name: &self.info.name,
                role: &self.info.role,
            },
            io: IoSummary {
                backend: self.metrics.backend.get().copied().unwrap_or("starting"),
                backend_configured: &self.info.io_backend_configured,
                threads: self.info.io_threads,
            },
            listeners: &self.info.listeners,
            counts: self.metrics.totals(),
            xdp: self.metrics.xdp.get().map(|x| x.status()),
            sources: self.metrics.xdp.get().map(|x| x.sources_summary()),
            store: crate::metrics::store::summary(&self.metrics),
            cluster: self.metrics.cluster.get().map(|c| c.status_json()),
        };
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(&status).expect("status serialises")
    }

    /// Whether the request carries the configured bearer token (always true without one).
    fn authorized(&self, req: &http::Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        // Constant-time compare: the token is a secret.
        given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }

    /// `GET /bans`, `POST /bans` (a JSON ban), `DELETE /bans/{kind}/{value}`.
    fn bans(&self, req: &http::Request) -> (u16, &'static str, String) {
        use halyard_auth::{AuthError, Ban, BanKind};
        let json = "application/json";
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/bans") => {
                let list = self.security.guard().bans().list();
                // A Vec of plain structs serialises without error.
                let body = serde_json::to_string_pretty(&list).expect("bans serialise");
                (200, json, body + "\n")
            }
            ("POST", "/bans") => {
                let ban: Ban = match serde_json::from_slice(&req.body) {
                    Ok(b) => b,
                    Err(e) => return (400, "text/plain", format!("invalid ban: {e}\n")),
                };
                let now = crate::security::now_ms();
                match self.security.guard().bans_mut().add(ban, now) {
                    Ok(()) => (201, "text/plain", "banned\n".into()),
                    Err(e @ AuthError::BanListFull { .. }) => (507, "text/plain", format!("{e}\n")),
                    Err(e) => (400, "text/plain", format!("{e}\n")),
                }
            }
            ("DELETE", path) => {
                let rest = path.strip_prefix("/bans/").unwrap_or("");
                let Some((kind, value)) = rest.split_once('/') else {
                    return (404, "text/plain", "not found\n".into());
                };
                let kind = match kind {
                    "client_id" => BanKind::ClientId,
                    "username" => BanKind::Username,
                    "address" => BanKind::Address,
                    _ => return (400, "text/plain", "unknown ban kind\n".into()),
                };
                let value = percent_decode(value);
                if self.security.guard().bans_mut().remove(kind, &value) {
                    (200, "text/plain", "unbanned\n".into())
                } else {
                    (404, "text/plain", "no such ban\n".into())
                }
            }
            _ => (405, "text/plain", "method not allowed\n".into()),
        }
    }

    /// Answers one parsed request: (status code, content type, body).
    pub fn route(&self, req: &http::Request) -> (u16, &'static str, String) {
        if req.path != "/healthz" && !self.authorized(req) {
            return (401, "text/plain", "unauthorized\n".into());
        }
        if req.path == "/bans" || req.path.starts_with("/bans/") {
            return self.bans(req);
        }
        if req.method != "GET" && req.method != "HEAD" {
            return (405, "text/plain", "method not allowed\n".into());
        }
        match req.path.as_str() {
            "/metrics" => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            "/healthz" => (200, "text/plain", "ok\n".into()),
            "/status" => (200, "application/json", self.status_json()),
            "/xdp" => match self.metrics.xdp.get() {
                Some(xdp) => (200, "application/json", xdp.report_json()),
                None => (404, "text/plain", "xdp not started\n".into()),
            },
            _ => (404, "text/plain", "not found\n".into()),
        }
    }
}

/// Accepts admin connections until the runtime stops.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let admin = Rc::new(admin);
    let mut failures = crate::io::AcceptFailures::new("admin");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let admin = admin.clone();
                compio::runtime::spawn(async move { handle(stream, &admin).await }).detach();
            }
            Err(e) => {
                failures.record(&e, std::time::Instant::now());
                compio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, admin: &Admin) {
    let max = admin.max_request_bytes;
    let head = compio::time::timeout(admin.request_timeout, read_head(&mut stream, max)).await;
    let reply = match head {
        Err(_) => http::response(408, "text/plain", "timeout\n", false),
        Ok(Err(http::HttpError::TooLarge(_))) => {
            http::response(431, "text/plain", "request too large\n", false)
        }
        Ok(Err(http::HttpError::Malformed)) => {
            http::response(400, "text/plain", "bad request\n", false)
        }
        Ok(Err(http::HttpError::BodyTooLarge(_))) => {
            http::response(413, "text/plain", "request body too large\n", false)
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(req))) => {
            let (status, ctype, body) =
                if req.path.starts_with("/cluster/") && admin.authorized(&req) {
                    crate::cluster::admin::route(admin.metrics.cluster.get(), &req).await
                } else {
                    admin.route(&req)
                };
            http::response(status, ctype, &body, req.method == "HEAD")
        }
    };
    let write = stream.write_all(reply);
    if let Err(_elapsed) = compio::time::timeout(admin.request_timeout, write).await {
        tracing::debug!("admin response write timed out");
    }
    let _ = stream.shutdown().await;
}

/// Reads until a full request head arrives; `Ok(None)` when the peer closed first.
async fn read_head(
    stream: &mut TcpStream,
    max: usize,
) -> Result<Option<http::Request>, http::HttpError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = Vec::with_capacity(1024);
    loop {
        let BufResult(res, buf) = stream.read(chunk).await;
        chunk = buf;
        match res {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if let Some(mut req) = http::parse_head(&head, max)? {
            if req.content_length > max {
                return Err(http::HttpError::BodyTooLarge(max));
            }
            let mut body = head.split_off(req.head_len.min(head.len()));
            while body.len() < req.content_length {
                let BufResult(res, buf) = stream.read(chunk).await;
                chunk = buf;
                match res {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body.truncate(req.content_length);
            req.body = body;
            return Ok(Some(req));
        }
    }
}

/// Decodes `%XX` escapes (e.g. `10.0.0.0%2F8` in `DELETE /bans/address/...`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
