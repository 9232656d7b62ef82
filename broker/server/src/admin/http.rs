//! A deliberately tiny HTTP/1.1 subset for the admin server: one GET per connection, the
//! request head bounded in size, the response written with `Connection: close`.

/// Why a request head could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head grew past `admin.max_request_bytes` without ending.
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    /// The request line is not `METHOD PATH HTTP/1.x`.
    #[error("malformed request line")]
    Malformed,
    /// The `Content-Length` exceeds `admin.max_request_bytes`.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Content-Length` header (0 when absent).
    pub content_length: usize,
    /// Bytes of the head including its final blank line (the body starts there).
    pub head_len: usize,
    /// The body (filled by the server after the head, at most `content_length` bytes).
    pub body: Vec<u8>,
}

/// Looks for a complete request head in `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<Request>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= max {
            return Err(HttpError::TooLarge(max));
        }
        return Ok(None);
    };
    if end + 4 > max {
        return Err(HttpError::TooLarge(max));
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed)?;
    let line = head.lines().next().ok_or(HttpError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(HttpError::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target);
    let mut authorization = None;
    let mut content_length = 0;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| HttpError::Malformed)?;
        }
    }
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        authorization,
        content_length,
        head_len: end + 4,
        body: Vec::new(),
    }))
}

/// Formats a complete response; `head_only` omits the body (for HEAD).
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        413 => "Content Too Large",
        507 => "Insufficient Storage",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let auth = if status == 401 {
        "www-authenticate: Bearer\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{auth}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_heads_only() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 100),
            Ok(None)
        );
        let r = parse_head(b"GET /status?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/status");
        assert_eq!(r.authorization, None);
        let r = parse_head(
            b"POST /bans HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 12\r\n\r\n{}",
            200,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert_eq!((r.content_length, r.head_len), (12, 68));
    }

    #[test]
    fn rejects_oversized_and_malformed_heads() {
        assert_eq!(parse_head(&[b'a'; 64], 64), Err(HttpError::TooLarge(64)));
        assert_eq!(
            parse_head(b"GARBAGE\r\n\r\n", 64),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET metrics HTTP/1.1\r\n\r\n", 64),
            Err(HttpError::Malformed)
        );
    }

    #[test]
    fn response_has_length_and_close() {
        let r = String::from_utf8(response(200, "text/plain", "ok", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("content-length: 2\r\n"));
        assert!(r.ends_with("\r\n\r\nok"));
    }
}
