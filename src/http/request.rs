//! Reading and routing one request head. The server needs only the request line: every answer
//! is chosen by path, and no handler reads a body. The head is still read to its end, bounded
//! in size here and in time by the caller, so that a well-behaved client has finished sending
//! before the answer and the close arrive: closing with unread input makes the kernel send a
//! reset, which can destroy the answer before the checker reads it (HAProxy's "Recv failure",
//! which the script papers over with `sleep 0.1`).
//!
//! It owns the framing rules for a request head. It must not decide answers.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Which surface a request asks for. Any path that is not `/metrics` or `/status` is a
/// clustercheck, as with the script, which answers whatever is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Clustercheck,
    Metrics,
    Status,
}

#[derive(Debug)]
pub(crate) enum HeadError {
    /// Not an HTTP/1.x request line.
    Malformed,
    /// No end of head within the size limit.
    TooLarge,
    /// The peer closed before finishing its head.
    Closed,
    Io(std::io::Error),
}

/// What the bytes received so far say.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Complete(Route),
    NeedMore,
    Malformed,
}

/// Reads until the head is complete, known to be malformed, or `max_bytes` long.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Route, HeadError> {
    let mut buf = vec![0u8; max_bytes];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let n = reader
            .read(&mut buf[filled..])
            .await
            .map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        filled += n;
        match inspect(&buf[..filled]) {
            Progress::Complete(route) => return Ok(route),
            Progress::Malformed => return Err(HeadError::Malformed),
            Progress::NeedMore => {}
        }
    }
}

fn inspect(received: &[u8]) -> Progress {
    // The request line is judged as soon as it is complete, so garbage is refused at once
    // rather than after the header timeout.
    let Some(line_end) = received.iter().position(|&b| b == b'\n') else {
        return Progress::NeedMore;
    };
    let line = &received[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(route) = route_of_request_line(line) else {
        return Progress::Malformed;
    };
    // Bare LF line ends are accepted too: hand-typed checks (`printf ... | nc`) use them.
    let rest = &received[line_end..];
    let head_done = contains(rest, b"\n\r\n") || contains(rest, b"\n\n");
    if head_done {
        Progress::Complete(route)
    } else {
        Progress::NeedMore
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn route_of_request_line(line: &[u8]) -> Option<Route> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return None;
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    let path = path_of_target(target)?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Some(match path {
        "/metrics" => Route::Metrics,
        "/status" => Route::Status,
        _ => Route::Clustercheck,
    })
}

/// The path of an origin-form (`/x`), absolute-form (`http://h/x`) or asterisk-form target.
fn path_of_target(target: &str) -> Option<&str> {
    if target.starts_with('/') || target == "*" {
        return Some(target);
    }
    let after_scheme = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(after_scheme.find('/').map_or("/", |i| &after_scheme[i..]))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_ignoring_query_and_method() {
        let cases: [(&[u8], Route); 8] = [
            (b"GET /metrics HTTP/1.1\r\n\r\n", Route::Metrics),
            (
                b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                Route::Metrics,
            ),
            (b"GET /status HTTP/1.0\r\n\r\n", Route::Status),
            (b"GET / HTTP/1.1\r\n\r\n", Route::Clustercheck),
            // HAProxy's default `option httpchk` request.
            (b"OPTIONS / HTTP/1.0\r\n\r\n", Route::Clustercheck),
            (b"GET /status/extra HTTP/1.1\r\n\r\n", Route::Clustercheck),
            (
                b"GET http://db1:9200/status HTTP/1.1\r\n\r\n",
                Route::Status,
            ),
            (b"HEAD /anything HTTP/1.1\nHost: a\n\n", Route::Clustercheck),
        ];
        for (head, route) in cases {
            assert_eq!(
                inspect(head),
                Progress::Complete(route),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn incomplete_heads_need_more() {
        let partial: [&[u8]; 4] = [
            b"",
            b"GET / HT",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
        ];
        for head in partial {
            assert_eq!(inspect(head), Progress::NeedMore);
        }
    }

    #[test]
    fn garbage_request_lines_are_malformed() {
        let garbage: [&[u8]; 7] = [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            b"hello\r\n",
            b"GET /\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 extra\r\n",
            b"G(T / HTTP/1.1\r\n",
        ];
        for head in garbage {
            assert_eq!(
                inspect(head),
                Progress::Malformed,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn read_head_stops_at_the_size_limit() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 100));
        let err = read_head(&mut big.as_slice(), 64).await;
        assert!(matches!(err, Err(HeadError::TooLarge)), "{err:?}");
    }

    #[tokio::test]
    async fn read_head_reports_early_close() {
        let err = read_head(&mut &b"GET / HTTP/1.1\r\n"[..], 1024).await;
        assert!(matches!(err, Err(HeadError::Closed)), "{err:?}");
    }

    #[tokio::test]
    async fn read_head_accepts_a_head_split_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [
                &b"GET /sta"[..],
                b"tus HTTP/1.1\r\nHo",
                b"st: x\r\n",
                b"\r\n",
            ] {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(read_head(&mut server, 1024).await.unwrap(), Route::Status);
        drop(writer.await.unwrap());
    }
}
