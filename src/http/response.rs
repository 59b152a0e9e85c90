//! The bytes of every response this server sends. Each one has the same four-line shape as the
//! legacy clustercheck script (status line, `Content-Type`, `Connection: close`,
//! `Content-Length`): no `Date`, no `Server`, no keep-alive, so that the clustercheck answers are
//! byte-identical to the script's and every other answer is just as predictable.
//! It owns framing only; which body to send is decided by the caller.

/// A complete HTTP/1.1 response, ready to write and then close the connection.
pub(crate) fn response(code: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub(crate) fn bad_request() -> Vec<u8> {
    response(400, "text/plain", b"Bad request.\r\n")
}

pub(crate) fn header_too_large() -> Vec<u8> {
    response(431, "text/plain", b"Request header too large.\r\n")
}

pub(crate) fn internal_error() -> Vec<u8> {
    response(500, "text/plain", b"Internal error.\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_exact_length_and_no_extra_headers() {
        let bytes = response(200, "text/plain", b"hello\r\n");
        assert_eq!(
            bytes,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 7\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn error_responses_carry_their_codes() {
        assert!(bad_request().starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(header_too_large().starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(internal_error().starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    }
}
