//! `halyard ctl ...`: a blocking HTTP client for the admin server.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::StatusArgs;
use crate::config::Config;

/// Time allowed to connect, send and receive one admin request.
const CTL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin response read.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The address did not resolve or the connection failed.
    #[error("cannot reach the admin server at {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing failed after connecting.
    #[error("admin request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The reply was not a 200 HTTP response.
    #[error("admin server answered: {0}")]
    Status(String),
    /// The body was not the expected JSON.
    #[error("unexpected /status document: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where a `ctl` command sends its requests: the admin address and, when `admin.token` is
/// configured, the bearer token every endpoint but `/healthz` requires.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// The admin HTTP address (`host:port`).
    pub addr: String,
    /// `admin.token` of the configuration (file or `HALYARD_ADMIN__TOKEN`), sent as
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

/// Performs `GET path` against `target` and returns the body of a 200 reply.
pub fn get(target: &AdminTarget, path: &str) -> Result<String, CtlError> {
    request(target, "GET", path, "")
}

/// Performs `METHOD path` with `body` against `target` and returns the body of a 200 reply.
pub fn request(
    target: &AdminTarget,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, CtlError> {
    let addr = target.addr.as_str();
    let connect_err = |source| CtlError::Connect {
        addr: addr.to_string(),
        source,
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| connect_err(std::io::Error::other("address resolved to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&sock, CTL_TIMEOUT).map_err(connect_err)?;
    stream.set_read_timeout(Some(CTL_TIMEOUT))?;
    stream.set_write_timeout(Some(CTL_TIMEOUT))?;
    let auth = target
        .token
        .as_deref()
        .map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 200") {
        return Err(CtlError::Status(status_line.to_string()));
    }
    Ok(body.to_string())
}

/// The admin server a `ctl` command talks to: `--admin` if given, else `admin.bind` of the
/// configuration; the token is always `admin.token` of the configuration (`--config FILE`
/// and the `HALYARD_*` environment), so every `ctl` command authenticates the same way. A
/// configuration error is printed and mapped to exit status 2.
pub fn admin_target(
    admin: Option<&str>,
    config: &crate::cli::ConfigArgs,
) -> Result<AdminTarget, ExitCode> {
    match Config::load_from_process(config.config.as_deref()) {
        Ok(c) => Ok(AdminTarget {
            addr: admin.map_or_else(|| c.admin.bind.to_string(), str::to_string),
            token: c.admin.token,
        }),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `halyard ctl status`.
pub fn status(args: &StatusArgs) -> ExitCode {
    let target = match admin_target(args.admin.as_deref(), &args.config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let result = get(&target, "/status").and_then(|body| {
        if args.json {
            Ok(body)
        } else {
            let doc: serde_json::Value = serde_json::from_str(&body)?;
            let mut text = summary(&doc);
            if !doc["cluster"].is_null() {
                text.push_str(&cluster_summary(&doc["cluster"]));
            }
            Ok(text)
        }
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `halyard ctl cluster status`: the `cluster` section of `/status` (JSON with `--json`).
pub fn cluster_status(args: &StatusArgs) -> ExitCode {
    let target = match admin_target(args.admin.as_deref(), &args.config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let result = get(&target, "/status").and_then(|body| {
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        let c = &doc["cluster"];
        if args.json {
            return Ok(c.to_string());
        }
        Ok(cluster_summary(c))
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `halyard ctl cluster join|leave|remove|evict`: one membership request to the admin
/// server of the node given by `--admin` (join/remove: the Raft leader).
pub fn cluster_member(args: &StatusArgs, path: &str, body: &str) -> ExitCode {
    let target = match admin_target(args.admin.as_deref(), &args.config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match request(&target, "POST", path, body) {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A human summary of the `cluster` section of `/status`.
pub fn cluster_summary(c: &serde_json::Value) -> String {
    if c.is_null() {
        return "cluster: off (single node)".to_string();
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    format!(
        "cluster:   node {name} (id {id}, {role})\n\
         raft:      term {term}, leader {leader}, state {state}, voters {voters}\n\
         stream:    {stream} from {upstream}\n\
         index:     applied {applied}, committed {committed}, lag {lag}\n\
         members:   {members}  route rows: {rows}  replicants here: {replicants}\n\
         links:     sent {sent}, received {received}, queued {queued}, dropped {dropped}\n\
         bootstrap: {bootstraps} times, last {btime} s, {bkeys} keys\n",
        name = s(&c["node_name"]),
        id = s(&c["node_id"]),
        role = s(&c["role"]),
        term = s(&c["raft_term"]),
        leader = s(&c["raft_leader"]),
        state = s(&c["raft_state"]),
        voters = s(&c["raft_voters"]),
        stream = s(&c["stream_state"]),
        upstream = s(&c["upstream_core"]),
        applied = s(&c["applied_index"]),
        committed = s(&c["committed_index"]),
        lag = s(&c["lag"]),
        members = s(&c["members"]),
        rows = s(&c["route_rows"]),
        replicants = s(&c["replicants"]),
        sent = s(&c["link_sent"]),
        received = s(&c["link_received"]),
        queued = s(&c["link_queue_len"]),
        dropped = s(&c["link_dropped"]),
        bootstraps = s(&c["bootstraps"]),
        btime = s(&c["bootstrap_time_seconds"]),
        bkeys = s(&c["bootstrap_keys"]),
    )
}

/// A human summary of a `/status` document.
pub fn summary(doc: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let uptime = doc["uptime_secs"].as_u64().unwrap_or_default();
    let listeners: Vec<String> = doc["listeners"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| format!("{} {}", s(&l["kind"]), s(&l["bind"])))
                .collect()
        })
        .unwrap_or_default();
    let c = &doc["counts"];
    format!(
        "halyard {version}  node {name} ({role})  up {h}h{m:02}m{sec:02}s\n\
         io:        {backend} x {threads} threads (configured: {configured})\n\
         listeners: {listeners}\n\
         clients:   {conns} connected, {accepted} accepted since start\n\
         sessions:  {sessions}  subscriptions: {subs}  retained: {retained}\n\
         messages:  {rx} received, {tx} sent, {dropped} dropped\n\
         sources:   {tracked} tracked (max {max_sources}), {evictions} evicted\n",
        version = s(&doc["version"]),
        name = s(&doc["node"]["name"]),
        role = s(&doc["node"]["role"]),
        h = uptime / 3600,
        m = uptime / 60 % 60,
        sec = uptime % 60,
        backend = s(&doc["io"]["backend"]),
        threads = s(&doc["io"]["threads"]),
        configured = s(&doc["io"]["backend_configured"]),
        listeners = listeners.join(", "),
        conns = s(&c["connections"]),
        accepted = s(&c["connections_accepted"]),
        sessions = s(&c["sessions"]),
        subs = s(&c["subscriptions"]),
        retained = s(&c["retained"]),
        rx = s(&c["messages_received"]),
        tx = s(&c["messages_sent"]),
        dropped = s(&c["messages_dropped"]),
        tracked = s(&doc["sources"]["tracked"]),
        max_sources = s(&doc["sources"]["max"]),
        evictions = s(&doc["sources"]["evictions"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_the_key_figures() {
        let doc = serde_json::json!({
            "version": "0.1.0", "uptime_secs": 3723,
            "node": {"name": "n1", "role": "core"},
            "io": {"backend": "epoll", "threads": 2, "backend_configured": "auto"},
            "listeners": [{"kind": "tcp", "bind": "127.0.0.1:1883"}],
            "counts": {"connections": 4, "connections_accepted": 9, "sessions": 5,
                       "subscriptions": 6, "retained": 1, "messages_received": 10,
                       "messages_sent": 20, "messages_dropped": 0},
            "sources": {"tracked": 3, "max": 65536, "evictions": 7, "top": []}
        });
        let text = summary(&doc);
        assert!(text.contains("node n1 (core)"), "{text}");
        assert!(text.contains("up 1h02m03s"), "{text}");
        assert!(text.contains("epoll x 2 threads"), "{text}");
        assert!(text.contains("tcp 127.0.0.1:1883"), "{text}");
        assert!(text.contains("4 connected"), "{text}");
        assert!(
            text.contains("sources:   3 tracked (max 65536), 7 evicted"),
            "{text}"
        );
    }
}
