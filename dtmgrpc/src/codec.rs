//! A codec that passes message bytes through unchanged.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A tonic [`Codec`] whose messages are the encoded bytes themselves, like the DTM server's
/// `dtm_raw` codec ([`trans_status.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/trans_status.go)).
///
/// The SDK calls branches with it (the payload is already protobuf-encoded); use it to call a
/// method whose message type you do not have, or to serve one that takes any payload:
///
/// ```no_run
/// # async fn demo(channel: tonic::transport::Channel, payload: bytes::Bytes) -> Result<(), tonic::Status> {
/// use dtmgrpc::codec::RawCodec;
///
/// let mut grpc = tonic::client::Grpc::new(channel);
/// grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
/// let path = http::uri::PathAndQuery::from_static("/busi.Busi/TransIn");
/// let reply = grpc.unary(tonic::Request::new(payload), path, RawCodec).await?;
/// println!("{} reply bytes", reply.get_ref().len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// The encoder of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// The decoder of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
