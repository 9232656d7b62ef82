//! The HTTP/1.1 upgrade request of RFC 6455 section 4.2.1, parsed with httparse, and the
//! answers to it.

use super::WsConfig;

/// Subprotocols accepted, in the server's preference order: `mqtt` (MQTT 3.1.1 and 5.0)
/// and `mqttv3.1` (MQTT 3.1 clients), as Mosquitto does.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// An upgrade request that may be accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The `Sec-WebSocket-Key` value.
    pub key: Vec<u8>,
    /// The subprotocol to answer with (`None` only with `allow_missing_subprotocol`).
    pub protocol: Option<&'static str>,
    /// Length of the request head; bytes after it are WebSocket frames.
    pub head_len: usize,
}

/// A refused request: the HTTP status to answer and the reason (for the error and logs).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }

    /// The HTTP response to send before closing.
    pub fn response(&self) -> String {
        let text = match self.status {
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            405 => "Method Not Allowed",
            _ => "Bad Request",
        };
        // RFC 6455 4.4: a version mismatch is answered with the versions we speak.
        let version = if self.status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {text}\r\n{version}Connection: close\r\nContent-Length: 0\r\n\r\n",
            self.status
        )
    }
}

/// Outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The head is incomplete.
    Partial,
    Accept(Upgrade),
    Refuse(Refusal),
}

/// True when a comma-separated header value contains `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses and checks an upgrade request head.
pub(crate) fn parse(buf: &[u8], config: &WsConfig) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_handshake_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(Refusal::new(431, "too many headers"));
        }
        Err(_) => return Parsed::Refuse(Refusal::new(400, "malformed HTTP request")),
    };
    if req.method != Some("GET") {
        return Parsed::Refuse(Refusal::new(405, "method is not GET"));
    }
    if req.version != Some(1) {
        return Parsed::Refuse(Refusal::new(400, "HTTP version is not 1.1"));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut version = None;
    let mut key = None;
    let mut offered = false;
    let mut protocol = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offered = true;
            // The client's list is in its order of preference: take its first one we speak.
            if protocol.is_none() {
                protocol = h.value.split(|&b| b == b',').find_map(|t| {
                    let t = t.trim_ascii();
                    SUBPROTOCOLS.into_iter().find(|p| p.as_bytes() == t)
                });
            }
        }
    }
    if !upgrade || !connection {
        return Parsed::Refuse(Refusal::new(400, "not a WebSocket upgrade request"));
    }
    if version != Some(b"13".as_slice()) {
        return Parsed::Refuse(Refusal::new(426, "Sec-WebSocket-Version is not 13"));
    }
    // The key is the base64 form of 16 bytes: 24 characters ending in "==".
    let key = match key {
        Some(k) if k.len() == 24 && k.ends_with(b"==") => k.to_vec(),
        _ => return Parsed::Refuse(Refusal::new(400, "missing or malformed Sec-WebSocket-Key")),
    };
    if protocol.is_none() && (offered || !config.allow_missing_subprotocol) {
        // [MQTT-6.0.0-3]: the client must offer "mqtt".
        return Parsed::Refuse(Refusal::new(400, "no mqtt subprotocol offered"));
    }
    Parsed::Accept(Upgrade {
        key,
        protocol,
        head_len,
    })
}

/// The `101 Switching Protocols` answer.
pub(crate) fn accept_response(upgrade: &Upgrade) -> String {
    let accept = tungstenite::handshake::derive_accept_key(&upgrade.key);
    let protocol = match upgrade.protocol {
        Some(p) => format!("Sec-WebSocket-Protocol: {p}\r\n"),
        None => String::new(),
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn parse_default(s: &str) -> Parsed {
        parse(s.as_bytes(), &WsConfig::default())
    }

    #[test]
    fn rfc_sample_key_gives_rfc_accept_value() {
        // RFC 6455 section 1.3 example.
        let Parsed::Accept(up) = parse_default(&request("Sec-WebSocket-Protocol: mqtt\r\n")) else {
            panic!("refused");
        };
        let resp = accept_response(&up);
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn subprotocol_is_the_clients_first_known_one() {
        for (offer, want) in [
            ("mqtt", "mqtt"),
            ("mqttv3.1", "mqttv3.1"),
            ("chat, mqttv3.1, mqtt", "mqttv3.1"),
            ("mqtt,mqttv3.1", "mqtt"),
        ] {
            let r = parse_default(&request(&format!("Sec-WebSocket-Protocol: {offer}\r\n")));
            match r {
                Parsed::Accept(up) => assert_eq!(up.protocol, Some(want), "{offer}"),
                other => panic!("{offer}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_or_foreign_subprotocol_is_refused() {
        // [MQTT-6.0.0-3]
        for extra in ["", "Sec-WebSocket-Protocol: chat\r\n"] {
            match parse_default(&request(extra)) {
                Parsed::Refuse(r) => assert_eq!(r.status, 400),
                other => panic!("{extra:?}: {other:?}"),
            }
        }
        let lenient = WsConfig {
            allow_missing_subprotocol: true,
            ..WsConfig::default()
        };
        match parse(request("").as_bytes(), &lenient) {
            Parsed::Accept(up) => assert_eq!(up.protocol, None),
            other => panic!("{other:?}"),
        }
        // Lenient still refuses a list without mqtt: the client asked for something else.
        let r = parse(
            request("Sec-WebSocket-Protocol: chat\r\n").as_bytes(),
            &lenient,
        );
        assert!(matches!(r, Parsed::Refuse(_)));
    }

    #[test]
    fn partial_head_waits_and_head_len_excludes_frames() {
        let full = request("Sec-WebSocket-Protocol: mqtt\r\n");
        assert_eq!(parse_default(&full[..full.len() - 3]), Parsed::Partial);
        let mut with_frame = full.clone().into_bytes();
        with_frame.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
        match parse(&with_frame, &WsConfig::default()) {
            Parsed::Accept(up) => assert_eq!(up.head_len, full.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        let cases = [
            (request("").replace("GET", "POST"), 405),
            (
                request("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                426,
            ),
            (
                request("").replace("Upgrade: websocket", "Upgrade: h2c"),
                400,
            ),
            (
                request("").replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
                400,
            ),
            ("garbage\0\r\n\r\n".to_owned(), 400),
        ];
        for (req, status) in cases {
            let req = req.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n");
            match parse_default(&req) {
                Parsed::Refuse(r) => assert_eq!(r.status, status, "{req}"),
                other => panic!("{req}: {other:?}"),
            }
        }
        let resp = Refusal::new(426, "x").response();
        assert!(resp.starts_with("HTTP/1.1 426 "));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn too_many_headers_is_431() {
        let config = WsConfig {
            max_handshake_headers: 4,
            ..WsConfig::default()
        };
        let r = parse(
            request("Sec-WebSocket-Protocol: mqtt\r\n").as_bytes(),
            &config,
        );
        assert!(matches!(r, Parsed::Refuse(Refusal { status: 431, .. })));
    }
}
