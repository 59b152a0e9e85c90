//! Packet framing: a 3-byte little-endian length, a 1-byte sequence id, then the payload. A
//! payload of 0xFF_FFFF bytes or more is split into full frames followed by a shorter (possibly
//! empty) one. We reassemble logical packets so that the layers above see whole payloads, and
//! re-split them identically on the way out, so a relayed packet is byte-for-byte the same.

use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The largest payload one frame carries.
pub(crate) const MAX_FRAME: usize = 0xFF_FFFF;

/// One logical packet: the sequence id of its first frame and the reassembled payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) seq: u8,
    pub(crate) payload: Vec<u8>,
}

impl Packet {
    /// The sequence id the packet after this one must carry.
    pub(crate) fn next_seq(&self) -> u8 {
        let frames = self.payload.len() / MAX_FRAME + 1;
        self.seq.wrapping_add(frames as u8)
    }

    pub(crate) fn first_byte(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PacketError {
    /// The peer closed the connection cleanly between packets.
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads logical packets. `read` is cancel-safe: every byte taken from the socket is recorded in
/// `self` before the next await, so a `read` dropped by `select!` resumes where it stopped.
pub(crate) struct PacketReader<R> {
    inner: BufReader<R>,
    max_payload: usize,
    header: [u8; 4],
    header_len: usize,
    /// Bytes of the current frame still to copy into `payload`.
    frame_left: Option<usize>,
    first_seq: Option<u8>,
    payload: Vec<u8>,
    last_frame: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub(crate) fn new(inner: R, max_payload: usize) -> Self {
        PacketReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max_payload,
            header: [0; 4],
            header_len: 0,
            frame_left: None,
            first_seq: None,
            payload: Vec::new(),
            last_frame: false,
        }
    }

    pub(crate) fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }

    /// Whether bytes are already buffered (a pipelining client sent more than one command).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.inner.buffer().is_empty() || self.header_len > 0 || self.first_seq.is_some()
    }

    /// Waits until at least one byte is buffered; an empty slice means the peer closed.
    pub(crate) async fn fill_buf(&mut self) -> io::Result<&[u8]> {
        use tokio::io::AsyncBufReadExt;
        self.inner.fill_buf().await
    }

    /// Reads one logical packet. The length limit is checked before the payload is read, so an
    /// oversized packet costs no memory.
    pub(crate) async fn read(&mut self) -> Result<Packet, PacketError> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                let clean = self.header_len == 0 && self.first_seq.is_none();
                return Err(if clean {
                    PacketError::Closed
                } else {
                    PacketError::Truncated
                });
            }
            let available = buf.len();
            let Some(left) = self.frame_left else {
                let n = (4 - self.header_len).min(available);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&buf[..n]);
                self.inner.consume(n);
                self.header_len += n;
                if self.header_len == 4 {
                    let h = self.header;
                    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
                    self.first_seq.get_or_insert(h[3]);
                    let total = self.payload.len() + len;
                    if total > self.max_payload {
                        return Err(PacketError::TooLarge {
                            len: total,
                            max: self.max_payload,
                        });
                    }
                    self.payload.reserve(len);
                    self.last_frame = len < MAX_FRAME;
                    self.frame_left = Some(len);
                    self.header_len = 0;
                    if len == 0 {
                        if let Some(p) = self.finish_frame() {
                            return Ok(p);
                        }
                    }
                }
                continue;
            };
            let n = left.min(available);
            self.payload.extend_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.frame_left = Some(left - n);
            if left == n {
                if let Some(p) = self.finish_frame() {
                    return Ok(p);
                }
            }
        }
    }

    /// Called when a frame is complete: returns the packet if it was the last frame.
    fn finish_frame(&mut self) -> Option<Packet> {
        self.frame_left = None;
        if !self.last_frame {
            return None;
        }
        Some(Packet {
            seq: self.first_seq.take().unwrap_or(0),
            payload: std::mem::take(&mut self.payload),
        })
    }
}

pub(crate) struct PacketWriter<W: AsyncWrite> {
    inner: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        PacketWriter {
            inner: BufWriter::with_capacity(64 * 1024, inner),
        }
    }

    /// Buffers one logical packet starting at `seq`; returns the next sequence id.
    pub(crate) async fn write(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let mut seq = seq;
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_FRAME);
            let header = [n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
            self.inner.write_all(&header).await?;
            self.inner.write_all(&rest[..n]).await?;
            seq = seq.wrapping_add(1);
            rest = &rest[n..];
            // A frame of exactly MAX_FRAME bytes must be followed by another, possibly empty.
            if n < MAX_FRAME {
                return Ok(seq);
            }
        }
    }

    pub(crate) async fn write_packet(&mut self, packet: &Packet) -> io::Result<u8> {
        self.write(packet.seq, &packet.payload).await
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(len: usize) -> (Vec<u8>, Packet) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        let mut w = PacketWriter::new(&mut wire);
        let next = w.write(3, &payload).await.unwrap();
        w.flush().await.unwrap();
        drop(w);
        let mut r = PacketReader::new(&wire[..], usize::MAX);
        let packet = r.read().await.unwrap();
        assert_eq!(packet.payload, payload);
        assert_eq!(packet.seq, 3);
        assert_eq!(packet.next_seq(), next);
        (wire, packet)
    }

    #[tokio::test]
    async fn small_and_multi_frame_packets_round_trip_byte_for_byte() {
        let (wire, _) = round_trip(10).await;
        assert_eq!(&wire[..4], &[10, 0, 0, 3]);
        let (wire, p) = round_trip(MAX_FRAME).await;
        // Exactly one full frame must be followed by an empty frame.
        assert_eq!(wire.len(), MAX_FRAME + 8);
        assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0, 4]);
        assert_eq!(p.next_seq(), 5);
        let (wire, _) = round_trip(2 * MAX_FRAME + 7).await;
        assert_eq!(wire.len(), 2 * MAX_FRAME + 7 + 12);
    }

    /// A reader that yields one byte per poll, and Pending in between, to exercise resumption.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            self.ready = false;
            if self.pos < self.data.len() {
                let b = self.data[self.pos];
                self.pos += 1;
                buf.put_slice(&[b]);
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn read_is_cancel_safe_across_pending_polls() {
        let mut wire = Vec::new();
        let mut w = PacketWriter::new(&mut wire);
        w.write(0, b"hello").await.unwrap();
        w.write(1, b"").await.unwrap();
        w.write(2, b"world!").await.unwrap();
        w.flush().await.unwrap();
        drop(w);
        let mut r = PacketReader::new(
            Trickle {
                data: wire,
                pos: 0,
                ready: false,
            },
            1024,
        );
        let mut got = Vec::new();
        for _ in 0..1000 {
            // Poll once, then drop the future, as a losing select! branch would.
            let once = tokio::time::timeout(std::time::Duration::from_millis(1), r.read()).await;
            if let Ok(p) = once {
                got.push(p.unwrap());
                if got.len() == 3 {
                    break;
                }
            }
        }
        let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_slice()).collect();
        assert_eq!(payloads, vec![&b"hello"[..], &b""[..], &b"world!"[..]]);
        assert_eq!(got[2].seq, 2);
    }

    #[tokio::test]
    async fn oversized_and_truncated_packets_are_errors() {
        let mut r = PacketReader::new(&[0xff, 0xff, 0x00, 0, 1, 2][..], 1024);
        assert!(matches!(
            r.read().await,
            Err(PacketError::TooLarge {
                len: 0xffff,
                max: 1024
            })
        ));
        let mut r = PacketReader::new(&[5, 0, 0, 0, 1, 2][..], 1024);
        assert!(matches!(r.read().await, Err(PacketError::Truncated)));
        let mut r = PacketReader::new(&[5, 0][..], 1024);
        assert!(matches!(r.read().await, Err(PacketError::Truncated)));
        let mut r = PacketReader::new(&[][..], 1024);
        assert!(matches!(r.read().await, Err(PacketError::Closed)));
    }
}
