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
