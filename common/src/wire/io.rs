//! Reading and writing whole frames on an async stream: the thin edge
//! adapter the agent and the collector share. Everything protocol-specific
//! stays in the sans-IO modules beside this one.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::frame::{announced_len, FrameError, FRAME_HEADER_LEN};
use crate::wire::message::{Codec, WireError};

/// A frame could not be read or written on a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameIoError {
    /// The peer closed the stream between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// The frame header was refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The payload was not a valid message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload into `buf` (reused between calls; grows at
/// most to `max_len`).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), FrameIoError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameIoError::Closed),
        Err(e) => return Err(e.into()),
    }
    read_exact_or_truncated(reader, &mut header[1..]).await?;
    let len = announced_len(&header, max_len)?;
    buf.clear();
    buf.resize(len, 0);
    read_exact_or_truncated(reader, buf).await
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(reader: &mut R, out: &mut [u8]) -> Result<(), FrameIoError> {
    match reader.read_exact(out).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameIoError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// Reads and decodes one message.
pub async fn read_message<M: Codec, R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_len: usize,
) -> Result<M, FrameIoError> {
    read_frame(reader, buf, max_len).await?;
    Ok(M::decode(buf)?)
}

/// Encodes and writes one message, then flushes.
pub async fn write_message<M: Codec, W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &M,
    max_len: usize,
) -> Result<(), FrameIoError> {
    let mut out = Vec::new();
    msg.encode_frame(max_len, &mut out)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads whole messages from a stream and is cancel-safe: it may be one
/// branch of a `tokio::select!` beside outgoing work, and a partly read
/// frame stays buffered here when another branch wins. Buffers at most one
/// frame (the bound plus its header) and one read's slack.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max_len: usize,
}

/// Bytes asked for per read before a frame's length is known.
const READ_CHUNK: usize = 8 * 1024;

impl FrameReader {
    /// A reader that refuses frames over `max_len`.
    pub fn new(max_len: usize) -> Self {
        Self { buf: Vec::new(), max_len }
    }

    /// Changes the bound (e.g. to the peer's, once known).
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// The next message. Cancel-safe.
    pub async fn next<M: Codec, R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<M, FrameIoError> {
        loop {
            if let Some((payload, used)) = crate::wire::frame::parse_frame(&self.buf, self.max_len)? {
                let decoded = M::decode(payload);
                self.buf.drain(..used);
                // Idle connections should not hold on to a large frame's buffer.
                if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
                    self.buf = Vec::new();
                }
                return Ok(decoded?);
            }
            // Ask for exactly what completes the frame when its length is
            // known, so the buffer never grows past one frame.
            let wanted = match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                Some(header) => FRAME_HEADER_LEN + announced_len(header, self.max_len)? - self.buf.len(),
                None => READ_CHUNK,
            };
            self.buf.reserve(wanted);
            let mut limited = (&mut *reader).take(wanted as u64);
            // `read_buf` is cancel-safe: if another select! branch wins,
            // no bytes were taken from the stream.
            let read = limited.read_buf(&mut self.buf).await?;
            if read == 0 {
                return Err(if self.buf.is_empty() { FrameIoError::Closed } else { FrameIoError::Truncated });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::{AgentMessage, CollectorMessage};

    #[tokio::test]
    async fn reads_messages_split_anywhere_and_refuses_oversize() {
        let mut wire = Vec::new();
        AgentMessage::Goodbye.encode_frame(1024, &mut wire).unwrap();
        CollectorMessage::Ack { stream_seq: 7 }.encode_frame(1024, &mut wire).unwrap();
        let (mut client, mut server) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            for byte in wire {
                client.write_all(&[byte]).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(1024);
        assert_eq!(reader.next::<AgentMessage, _>(&mut server).await.unwrap(), AgentMessage::Goodbye);
        assert_eq!(
            reader.next::<CollectorMessage, _>(&mut server).await.unwrap(),
            CollectorMessage::Ack { stream_seq: 7 }
        );
        writer.await.unwrap();
        assert!(matches!(reader.next::<AgentMessage, _>(&mut server).await, Err(FrameIoError::Closed)));

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 8, 0]).await.unwrap();
        let mut reader = FrameReader::new(1024);
        assert!(matches!(reader.next::<AgentMessage, _>(&mut server).await, Err(FrameIoError::Frame(_))));
    }
}
