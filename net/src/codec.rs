//! The request-response codec: postcard-encoded envelopes, read to the end of the stream with a size limit.
//!
//! A message is the envelope's wire bytes, written whole and followed by
//! closing the stream. The reader stops at its limit plus one byte: anything
//! longer is an error before any parsing, so an oversized request costs the
//! node at most the limit in memory.

use std::io;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use witmed_crypto::Envelope;
use witmed_protocol::wire::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PROTOCOL};

/// Size limits of one side.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// Largest request read.
    pub max_request: usize,
    /// Largest response read.
    pub max_response: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            max_request: MAX_REQUEST_BYTES,
            max_response: MAX_RESPONSE_BYTES,
        }
    }
}

/// The stream protocol.
pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Envelope> {
    let mut bytes = Vec::new();
    io.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over the limit of {max} bytes"),
        ));
    }
    Envelope::from_bytes(&bytes, max)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_all<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    envelope: &Envelope,
) -> io::Result<()> {
    io.write_all(&envelope.to_bytes()).await?;
    io.close().await
}

#[async_trait]
impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Envelope;
    type Response = Envelope;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &res).await
    }
}
