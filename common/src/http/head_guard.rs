//! Checks every request head on a connection before hyper reads it, so that
//! requests the HTTP layer refuses get the same JSON error body as every
//! other error (docs/api.md): a malformed request line or header is a 400,
//! a request target over `MAX_URI` a 414, a head over `MAX_HEAD` or with
//! more than `MAX_HEADERS` fields a 431. hyper's own refusals have no body,
//! and no hook to give them one; with the guard in front, hyper only ever
//! sees heads that are within its limits and that it can parse.
//!
//! The guard follows the connection's framing: it holds a head back until it
//! is complete and checked, then passes it and `Content-Length` bytes of body
//! on, then checks the next head. A chunked body (or an upgrade) cannot be
//! framed without decoding it; after one the guard lets the rest of that
//! connection through to hyper unchecked. The cluster's own clients always
//! send a length; the cart API sends no bodies at all.
//!
//! On a refused head the guard writes the JSON answer itself, closes the
//! connection and tells hyper the peer went away.

use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{ready, Context, Poll};

use axum::http::{StatusCode, Uri};
use bytes::{Buf, BytesMut};
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api_error::ErrorBody;
use crate::metrics;

/// Longest request target (path and query).
pub const MAX_URI: usize = 8 * 1024;
/// Longest request head, request line and header fields together.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;

static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "http_heads_refused_total",
        "Request heads refused before routing (malformed, target too long, head too large), by \
         status; the connection is closed after the JSON answer.",
        &["status"],
    )
});

/// Pre-creates the refusal series at 0.
pub fn init_metrics() {
    crate::metrics::precreate(&*REFUSED, [["400"], ["414"], ["431"]]);
}

/// Where the guard is in the connection's byte stream.
#[derive(Debug, PartialEq)]
enum Framing {
    /// Waiting for a complete head.
    Head,
    /// Passing on this many more body bytes.
    Body(u64),
    /// No longer framing (chunked body or upgrade): everything passes.
    Open,
    /// Writing the refusal, from this offset.
    Refusing(usize),
    /// Refused and closed: hyper reads end-of-stream.
    Closed,
}

pub struct HeadGuard<S> {
    inner: S,
    framing: Framing,
    /// Bytes read from the peer and not yet handed to hyper.
    pending: BytesMut,
    /// How many bytes at the front of `pending` are checked and may go on.
    cleared: usize,
    refusal: Vec<u8>,
}

impl<S> HeadGuard<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            framing: Framing::Head,
            pending: BytesMut::new(),
            cleared: 0,
            refusal: Vec::new(),
        }
    }

    /// Looks at the pending bytes as a head: clears it, refuses it, or asks
    /// for more (`false`).
    fn check_head(&mut self) -> bool {
        match inspect(&self.pending) {
            Inspection::Incomplete => false,
            Inspection::Passes { len, then } => {
                self.cleared = len;
                self.framing = then;
                true
            }
            Inspection::Refused(status, error, message) => {
                REFUSED.with_label_values(&[status.as_str()]).inc();
                self.refusal = refusal_bytes(status, error, message);
                self.pending.clear();
                self.framing = Framing::Refusing(0);
                true
            }
        }
    }

    /// Clears pending body bytes (all of them once framing is given up).
    fn clear_body(&mut self) {
        match self.framing {
            Framing::Body(left) => {
                let n = (self.pending.len() as u64).min(left);
                self.cleared = n as usize;
                self.framing = if n == left {
                    Framing::Head
                } else {
                    Framing::Body(left - n)
                };
            }
            Framing::Open => self.cleared = self.pending.len(),
            _ => {}
        }
    }
}

enum Inspection {
    Incomplete,
    Passes { len: usize, then: Framing },
    Refused(StatusCode, &'static str, &'static str),
}

fn inspect(buf: &[u8]) -> Inspection {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return too_long_so_far(buf),
        Err(httparse::Error::TooManyHeaders) => {
            return Inspection::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "more header fields than this server accepts",
            )
        }
        Err(_) => {
            return Inspection::Refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "malformed HTTP request line or header",
            )
        }
    };
    let target = request.path.unwrap_or("");
    if target.len() > MAX_URI {
        return uri_too_long();
    }
    if len > MAX_HEAD {
        return head_too_large();
    }
    if Uri::try_from(target).is_err() {
        return Inspection::Refused(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed request target",
        );
    }
    let mut length: Option<u64> = None;
    let mut open = request.method == Some("CONNECT");
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            open = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => {
                    return Inspection::Refused(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "invalid or conflicting Content-Length",
                    )
                }
            }
        }
    }
    let then = match (open, length) {
        (true, _) => Framing::Open,
        (false, Some(n)) if n > 0 => Framing::Body(n),
        (false, _) => Framing::Head,
    };
    Inspection::Passes { len, then }
}

/// An incomplete head that is already over a limit.
fn too_long_so_far(buf: &[u8]) -> Inspection {
    let line_done = buf.contains(&b'\n');
    if !line_done && buf.len() > MAX_URI + 64 {
        uri_too_long()
    } else if buf.len() > MAX_HEAD {
        head_too_large()
    } else {
        Inspection::Incomplete
    }
}

fn uri_too_long() -> Inspection {
    Inspection::Refused(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "the request target is longer than 8 KiB",
    )
}

fn head_too_large() -> Inspection {
    Inspection::Refused(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "the request head is larger than 16 KiB",
    )
}

fn refusal_bytes(status: StatusCode, error: &str, message: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: error.to_string(),
        message: message.to_string(),
    })
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Room made for each read from the peer while a head is arriving.
const READ_CHUNK: usize = 8 * 1024;

/// Whether `buf` may hold a complete head (an empty line after the request
/// line), so that parsing it is worth trying; also true once it is over the
/// limits, to refuse it.
fn worth_parsing(buf: &[u8]) -> bool {
    buf.len() > MAX_HEAD
        || (!buf.contains(&b'\n') && buf.len() > MAX_URI)
        || buf.windows(2).any(|w| w == b"\n\n")
        || buf.windows(3).any(|w| w == b"\n\r\n")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.cleared > 0 {
                let n = this.cleared.min(out.remaining());
                out.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.cleared -= n;
                return Poll::Ready(Ok(()));
            }
            match this.framing {
                Framing::Closed => return Poll::Ready(Ok(())),
                Framing::Refusing(written) => {
                    if written < this.refusal.len() {
                        let n = ready!(
                            Pin::new(&mut this.inner).poll_write(cx, &this.refusal[written..])
                        )?;
                        this.framing = if n == 0 {
                            Framing::Closed
                        } else {
                            Framing::Refusing(written + n)
                        };
                        continue;
                    }
                    ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
                    let _ = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    this.framing = Framing::Closed;
                }
                Framing::Body(_) | Framing::Open if !this.pending.is_empty() => this.clear_body(),
                // Nothing held back: body bytes go straight to hyper.
                Framing::Open => return Pin::new(&mut this.inner).poll_read(cx, out),
                Framing::Body(left) => {
                    let room = (out.remaining() as u64).min(left) as usize;
                    let mut limited = out.take(room);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                    let n = limited.filled().len();
                    // SAFETY: `limited` is the start of `out`'s unfilled
                    // part, and the read initialised and filled its first
                    // `n` bytes.
                    unsafe { out.assume_init(n) };
                    out.advance(n);
                    let n = n as u64;
                    this.framing = if n >= left {
                        Framing::Head
                    } else if n == 0 {
                        // The peer closed mid-body; hyper sees the end.
                        Framing::Body(left)
                    } else {
                        Framing::Body(left - n)
                    };
                    return Poll::Ready(Ok(()));
                }
                Framing::Head => {
                    if !this.pending.is_empty() && worth_parsing(&this.pending) && this.check_head()
                    {
                        continue;
                    }
                    this.pending.reserve(READ_CHUNK);
                    let n = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut this.inner),
                        cx,
                        &mut this.pending
                    ))?;
                    if n == 0 {
                        // The peer closed; an unfinished head goes nowhere.
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What hyper would read through the guard, and what the peer got back.
    async fn through_guard(sent: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut peer, server) = tokio::io::duplex(1 << 20);
        peer.write_all(sent).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut guard = HeadGuard::new(server);
        let mut seen = Vec::new();
        guard.read_to_end(&mut seen).await.unwrap();
        drop(guard);
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.unwrap();
        (seen, answer)
    }

    fn status_and_body(answer: &[u8]) -> (u16, serde_json::Value) {
        let text = String::from_utf8_lossy(answer);
        let status = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn good_requests_pass_unchanged_also_pipelined_with_bodies() {
        let sent = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                     GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let (seen, answer) = through_guard(sent).await;
        assert_eq!(seen, sent.to_vec());
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_looks_like_garbage_is_not_taken_for_a_head() {
        let sent = b"POST /a HTTP/1.1\r\nContent-Length: 7\r\n\r\n\x00\x01 bad\n";
        let (seen, answer) = through_guard(sent).await;
        assert_eq!(seen, sent.to_vec());
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn a_malformed_request_line_gets_a_json_400_and_nothing_reaches_hyper() {
        let (seen, answer) = through_guard(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").await;
        assert!(seen.is_empty());
        let (status, body) = status_and_body(&answer);
        assert_eq!(status, 400);
        assert_eq!(body["error"], "bad_request");
    }

    #[tokio::test]
    async fn a_bad_request_after_a_good_one_is_refused_after_the_good_one_passed() {
        let good = b"GET /a HTTP/1.1\r\n\r\n".to_vec();
        let mut sent = good.clone();
        sent.extend_from_slice(b"GET /b HTTP/1.1\r\nBad Header\r\n\r\n");
        let (seen, answer) = through_guard(&sent).await;
        assert_eq!(seen, good);
        assert_eq!(status_and_body(&answer).0, 400);
    }

    #[tokio::test]
    async fn a_long_target_is_414_and_a_large_head_431_with_json_bodies() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI + 1));
        let (status, body) = status_and_body(&through_guard(long.as_bytes()).await.1);
        assert_eq!(
            (status, body["error"].as_str()),
            (414, Some("uri_too_long"))
        );

        // Also while the line is still arriving.
        let unfinished = format!("GET /{}", "a".repeat(MAX_URI + 100));
        assert_eq!(
            status_and_body(&through_guard(unfinished.as_bytes()).await.1).0,
            414
        );

        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(MAX_HEAD));
        let (status, body) = status_and_body(&through_guard(big.as_bytes()).await.1);
        assert_eq!(
            (status, body["error"].as_str()),
            (431, Some("headers_too_large"))
        );

        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            status_and_body(&through_guard(many.as_bytes()).await.1).0,
            431
        );
    }

    #[tokio::test]
    async fn conflicting_content_lengths_are_refused() {
        let sent = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        let (seen, answer) = through_guard(sent).await;
        assert!(seen.is_empty());
        assert_eq!(status_and_body(&answer).0, 400);
    }

    #[tokio::test]
    async fn after_a_chunked_body_the_rest_passes_unchecked() {
        let sent = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (seen, answer) = through_guard(sent).await;
        assert_eq!(seen, sent.to_vec());
        assert!(answer.is_empty());
    }
}
