//! The request-response protocol `/meshward/rpc/1.0.0`: opaque bytes, one frame each way.
//!
//! Wire format (version 1): on a fresh stream the requester writes one frame and closes its
//! write side; the responder answers with one frame and closes the stream. A frame is
//! `u32 big-endian length || bytes`. What the bytes mean is the node's business.
//!
//! A frame over the reader's limit is an `InvalidData` error before anything is read, and the
//! body is read as it arrives, so a claimed length never decides an allocation.

use std::io;

use async_trait::async_trait;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// The protocol name of Meshward's request-response protocol.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshward/rpc/1.0.0");

/// Streams open at once on one connection, inbound and outbound together; an inbound stream
/// beyond this is dropped by libp2p (the requester sees an error).
pub const RPC_MAX_CONCURRENT_STREAMS: usize = 64;

/// Reads and writes the frames, refusing any over the configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RpcCodec {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

fn too_large(len: usize, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("rpc frame of {len} bytes exceeds the limit of {max} bytes"),
    )
}

async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(too_large(len, max));
    }
    // Grows with the bytes that actually arrive, not with what the header claims.
    let mut bytes = Vec::new();
    (&mut *io).take(len as u64).read_to_end(&mut bytes).await?;
    if bytes.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("rpc frame truncated: {} of {len} bytes", bytes.len()),
        ));
    }
    Ok(bytes)
}

async fn write_frame<T>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if bytes.len() > max {
        return Err(too_large(bytes.len(), max));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| too_large(bytes.len(), max))?;
    // One write for header and body: each write to a stream becomes its own Yamux frame and
    // Noise message.
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    io.write_all(&frame).await?;
    io.flush().await
}

#[async_trait]
impl request_response::Codec for RpcCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.max_request_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.max_response_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use libp2p::futures::io::Cursor;
    use request_response::Codec;

    use super::*;

    fn codec() -> RpcCodec {
        RpcCodec {
            max_request_bytes: 16,
            max_response_bytes: 32,
        }
    }

    fn frame(claimed_len: u32, body: &[u8]) -> Cursor<Vec<u8>> {
        let mut bytes = claimed_len.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        Cursor::new(bytes)
    }

    #[tokio::test]
    async fn frames_round_trip_up_to_the_limit() {
        let mut c = codec();
        for body in [&b""[..], b"ping", &[7u8; 16]] {
            let mut out = Cursor::new(Vec::new());
            c.write_request(&RPC_PROTOCOL, &mut out, body.to_vec())
                .await
                .unwrap();
            let wire = out.into_inner();
            assert_eq!(wire[..4], (body.len() as u32).to_be_bytes());
            let read = c
                .read_request(&RPC_PROTOCOL, &mut Cursor::new(wire))
                .await
                .unwrap();
            assert_eq!(read, body);
        }
        // Responses have their own, larger limit.
        let mut out = Cursor::new(Vec::new());
        c.write_response(&RPC_PROTOCOL, &mut out, vec![1; 32])
            .await
            .unwrap();
        let read = c
            .read_response(&RPC_PROTOCOL, &mut Cursor::new(out.into_inner()))
            .await
            .unwrap();
        assert_eq!(read, vec![1; 32]);
    }

    #[tokio::test]
    async fn frame_over_the_limit_is_invalid_data() {
        let mut c = codec();
        // A header claiming 4 GiB with no body: refused from the header alone.
        let err = c
            .read_request(&RPC_PROTOCOL, &mut frame(u32::MAX, b""))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = c
            .read_request(&RPC_PROTOCOL, &mut frame(17, &[0; 17]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = c
            .read_response(&RPC_PROTOCOL, &mut frame(33, &[0; 33]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Nothing over the limit is written either.
        let mut out = Cursor::new(Vec::new());
        let err = c
            .write_request(&RPC_PROTOCOL, &mut out, vec![0; 17])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.into_inner().is_empty());
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut c = codec();
        let err = c
            .read_request(&RPC_PROTOCOL, &mut frame(10, b"short"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = c
            .read_request(&RPC_PROTOCOL, &mut Cursor::new(vec![0, 0]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
