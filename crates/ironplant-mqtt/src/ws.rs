//! MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5.0 §6): turns a WebSocket, a stream of messages,
//! into the byte stream the broker reads and writes, so browsers and web HMIs can connect.
//!
//! The WebSocket protocol itself (handshake, framing, masking, ping/pong and close replies) is
//! the job of a WebSocket library; this module is independent of which one. The glue for a
//! library maps its messages to [`WsIn`] / [`WsOut`] (`ironplant-api` does it for axum, whose
//! WebSocket is tokio-tungstenite's) and hands the result to the broker:
//! `broker.serve_connection(Generic(WsByteStream::new(socket, limit)), peer)`.
//!
//! # Invariants
//! - **MQTT packets and WebSocket messages are unrelated.** A packet may span messages and a
//!   message may hold several packets: the broker sees only the concatenated bytes.
//! - **Binary only.** A text message is a protocol error (MQTT §6.0: the connection MUST be
//!   closed): the adapter sends close code 1003 and the read fails. A message larger than the
//!   limit is refused with close code 1009 (the library should refuse it earlier, from the
//!   frame header, so it is never buffered).
//! - **Bounded buffering.** At most one received message is held (the next is not read until
//!   the broker has consumed it); each write becomes one binary message that is flushed before
//!   the write completes, so nothing waits in the library's buffer for a flush that the broker
//!   (which writes to TCP and never flushes) would not make.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// WebSocket close codes the adapter sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure: the broker ended the connection.
    pub const NORMAL: u16 = 1000;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The message type is not accepted: a text message.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message larger than the limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A received WebSocket message, as far as MQTT cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsIn {
    /// A binary message: MQTT bytes.
    Binary(Bytes),
    /// A text message: always a protocol error for MQTT.
    Text,
    /// Ping or pong. The library answers pings itself; the adapter skips both.
    Control,
    /// The peer's close frame (the library sends the reply): end of the byte stream.
    Close,
    /// The library refused a message larger than its limit (from the frame header, before
    /// buffering it); `size` is what the header announced.
    TooBig { size: usize },
}

/// A WebSocket message the adapter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsOut {
    /// MQTT bytes, one message per write of the broker.
    Binary(Bytes),
    /// A close frame with its code and a short reason (at most 123 bytes).
    Close { code: u16, reason: &'static str },
}

/// A WebSocket as an [`AsyncRead`] + [`AsyncWrite`] byte stream for the broker.
///
/// `S` is the library's socket mapped to [`WsIn`]/[`WsOut`]; `max_message` is the largest
/// message accepted (use the broker's `max_packet_size`: a client has no reason to send more
/// in one message than the broker takes in one packet).
pub struct WsByteStream<S> {
    ws: S,
    max_message: usize,
    /// The rest of the message being read.
    pending: Bytes,
    /// The peer closed (or the stream ended): reads return end of file.
    eof: bool,
    /// A protocol error: the close frame to send, then the error to return from the read.
    failure: Option<Failure>,
    /// Length of a write whose message is sent but not yet flushed.
    in_flight: Option<usize>,
    /// Our close frame has been handed to the socket.
    close_sent: bool,
}

struct Failure {
    code: u16,
    reason: &'static str,
    error: io::ErrorKind,
    message: String,
}

impl<S> WsByteStream<S>
where
    S: Stream<Item = io::Result<WsIn>> + Sink<WsOut, Error = io::Error> + Unpin,
{
    pub fn new(ws: S, max_message: usize) -> WsByteStream<S> {
        WsByteStream {
            ws,
            max_message,
            pending: Bytes::new(),
            eof: false,
            failure: None,
            in_flight: None,
            close_sent: false,
        }
    }

    /// Sends our close frame once and flushes it; errors on the way are ignored, since the
    /// connection is ending anyway.
    fn poll_send_close(
        &mut self,
        cx: &mut Context<'_>,
        code: u16,
        reason: &'static str,
    ) -> Poll<()> {
        if !self.close_sent {
            match ready!(Pin::new(&mut self.ws).poll_ready(cx)) {
                Ok(()) => {
                    self.close_sent = true;
                    if Pin::new(&mut self.ws)
                        .start_send(WsOut::Close { code, reason })
                        .is_err()
                    {
                        return Poll::Ready(());
                    }
                }
                Err(_) => {
                    self.close_sent = true;
                    return Poll::Ready(());
                }
            }
        }
        let _ = ready!(Pin::new(&mut self.ws).poll_flush(cx));
        Poll::Ready(())
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: Stream<Item = io::Result<WsIn>> + Sink<WsOut, Error = io::Error> + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = &this.failure {
                let (code, reason) = (f.code, f.reason);
                ready!(this.poll_send_close(cx, code, reason));
                let f = this.failure.take().expect("checked above");
                this.eof = true;
                return Poll::Ready(Err(io::Error::new(f.error, f.message)));
            }
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(WsIn::Close)) => this.eof = true,
                Some(Err(e)) => {
                    // A broken frame, or the connection is gone: try to say so, then end.
                    this.failure = Some(Failure {
                        code: close_code::PROTOCOL_ERROR,
                        reason: "WebSocket protocol error",
                        error: e.kind(),
                        message: format!("WebSocket error: {e}"),
                    })
                }
                Some(Ok(WsIn::Control)) => {}
                Some(Ok(WsIn::Text)) => {
                    this.failure = Some(Failure {
                        code: close_code::UNSUPPORTED_DATA,
                        reason: "MQTT over WebSocket takes binary messages only",
                        error: io::ErrorKind::InvalidData,
                        message: "text WebSocket message: MQTT over WebSocket takes binary \
                                  messages only (MQTT 5.0 section 6.0); send the packets as \
                                  binary frames"
                            .to_owned(),
                    })
                }
                Some(Ok(WsIn::TooBig { size })) => {
                    this.failure = Some(too_big(size, this.max_message))
                }
                Some(Ok(WsIn::Binary(b))) if b.len() > this.max_message => {
                    this.failure = Some(too_big(b.len(), this.max_message))
                }
                Some(Ok(WsIn::Binary(b))) => this.pending = b,
            }
        }
    }
}

fn too_big(size: usize, max: usize) -> Failure {
    Failure {
        code: close_code::MESSAGE_TOO_BIG,
        reason: "message larger than the broker's maximum packet size",
        error: io::ErrorKind::InvalidData,
        message: format!(
            "WebSocket message of {size} bytes exceeds the limit of {max} bytes; send smaller \
             messages (an MQTT packet may span several)"
        ),
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: Stream<Item = io::Result<WsIn>> + Sink<WsOut, Error = io::Error> + Unpin,
{
    /// Sends `buf` as one binary message and flushes it before reporting it written.
    ///
    /// If the flush is pending, the message is already queued: the next call completes it and
    /// reports its length, whatever it is passed. Callers that retry the same bytes after
    /// `Pending` (`write_all`, as the broker does) see ordinary semantics.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.in_flight.is_none() {
            if this.close_sent {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx))?;
            Pin::new(&mut this.ws).start_send(WsOut::Binary(Bytes::copy_from_slice(buf)))?;
            this.in_flight = Some(buf.len());
        }
        let flushed = ready!(Pin::new(&mut this.ws).poll_flush(cx));
        let n = this.in_flight.take().unwrap_or(0);
        flushed.map(|()| n).into()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_flush(cx))?;
        this.in_flight = None;
        Poll::Ready(Ok(()))
    }

    /// Sends a normal close frame (unless one went out already) and closes the socket.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.in_flight.is_some() {
            ready!(Pin::new(&mut this.ws).poll_flush(cx))?;
            this.in_flight = None;
        }
        ready!(this.poll_send_close(cx, close_code::NORMAL, ""));
        // The peer may already be gone; the connection ends either way.
        let _ = ready!(Pin::new(&mut this.ws).poll_close(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Generic;
    use crate::codec::{
        self, Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscribe,
        SubscribeProperties, Subscription, SubscriptionOptions,
    };
    use crate::{Broker, BrokerConfig};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// What the adapter did to the socket, in order.
    #[derive(Debug, PartialEq)]
    enum Event {
        Sent(WsOut),
        Flushed,
        Closed,
    }

    /// An in-memory WebSocket: the test feeds messages in and watches what goes out.
    struct FakeWs {
        rx: mpsc::UnboundedReceiver<io::Result<WsIn>>,
        tx: mpsc::UnboundedSender<Event>,
        /// Pending flushes to report before each successful one (a slow socket).
        slow_flushes: usize,
        unflushed: bool,
    }

    impl Stream for FakeWs {
        type Item = io::Result<WsIn>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.poll_recv(cx)
        }
    }

    impl Sink<WsOut> for FakeWs {
        type Error = io::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: WsOut) -> io::Result<()> {
            self.unflushed = true;
            self.tx
                .send(Event::Sent(item))
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.slow_flushes > 0 {
                self.slow_flushes -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if std::mem::take(&mut self.unflushed) {
                let _ = self.tx.send(Event::Flushed);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let _ = self.tx.send(Event::Closed);
            Poll::Ready(Ok(()))
        }
    }

    struct Harness {
        input: mpsc::UnboundedSender<io::Result<WsIn>>,
        output: mpsc::UnboundedReceiver<Event>,
    }

    fn fake(max_message: usize, slow_flushes: usize) -> (WsByteStream<FakeWs>, Harness) {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let ws = FakeWs {
            rx: in_rx,
            tx: out_tx,
            slow_flushes,
            unflushed: false,
        };
        (
            WsByteStream::new(ws, max_message),
            Harness {
                input: in_tx,
                output: out_rx,
            },
        )
    }

    impl Harness {
        fn send(&self, m: WsIn) {
            self.input.send(Ok(m)).expect("adapter alive");
        }
        fn binary(&self, b: &[u8]) {
            self.send(WsIn::Binary(Bytes::copy_from_slice(b)));
        }
        async fn next_event(&mut self) -> Option<Event> {
            tokio::time::timeout(Duration::from_secs(5), self.output.recv())
                .await
                .expect("an event within 5 s")
        }
    }

    fn s(text: &str) -> MqttString {
        MqttString::from_utf8(Bytes::copy_from_slice(text.as_bytes())).expect("valid string")
    }

    fn encode(packets: &[Packet], v: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            codec::encode(p, v, &mut out).expect("encode");
        }
        out
    }

    #[tokio::test]
    async fn bytes_of_several_messages_read_as_one_stream_in_small_reads() {
        let (mut ws, h) = fake(1024, 0);
        h.binary(b"abc");
        h.send(WsIn::Control);
        h.send(WsIn::Binary(Bytes::new()));
        h.binary(b"defgh");
        h.send(WsIn::Close);
        let mut got = Vec::new();
        let mut chunk = [0u8; 2];
        loop {
            let n = ws.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"abcdefgh");
        // End of file stays end of file.
        assert_eq!(ws.read(&mut chunk).await.expect("read after close"), 0);
    }

    #[tokio::test]
    async fn text_message_closes_with_1003_and_fails_the_read() {
        let (mut ws, mut h) = fake(1024, 0);
        h.binary(b"ok");
        h.send(WsIn::Text);
        h.binary(b"never read");
        let mut buf = Vec::new();
        let err = ws
            .read_to_end(&mut buf)
            .await
            .expect_err("text is an error");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("binary"), "{err}");
        assert_eq!(buf, b"ok");
        assert_eq!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Close {
                code: close_code::UNSUPPORTED_DATA,
                reason: "MQTT over WebSocket takes binary messages only"
            }))
        );
        assert_eq!(h.next_event().await, Some(Event::Flushed));
        // Nothing after the failure: no more bytes are read, writes are refused.
        assert_eq!(ws.read(&mut [0u8; 8]).await.expect("eof"), 0);
        assert!(ws.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn oversized_message_closes_with_1009() {
        let (mut ws, mut h) = fake(16, 0);
        h.binary(&[0u8; 16]);
        h.binary(&[0u8; 17]);
        let mut buf = Vec::new();
        let err = ws.read_to_end(&mut buf).await.expect_err("too big");
        assert_eq!(buf.len(), 16, "a message at the limit is accepted");
        assert!(
            err.to_string().contains("17 bytes exceeds the limit of 16"),
            "{err}"
        );
        match h.next_event().await {
            Some(Event::Sent(WsOut::Close { code, .. })) => {
                assert_eq!(code, close_code::MESSAGE_TOO_BIG)
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refusals_of_the_library_close_with_1009_or_1002() {
        let (mut ws, mut h) = fake(16, 0);
        h.send(WsIn::TooBig { size: 5000 });
        let err = ws.read(&mut [0u8; 8]).await.expect_err("too big");
        assert!(
            err.to_string()
                .contains("5000 bytes exceeds the limit of 16"),
            "{err}"
        );
        assert!(matches!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Close {
                code: close_code::MESSAGE_TOO_BIG,
                ..
            }))
        ));

        let (mut ws, mut h) = fake(16, 0);
        h.input
            .send(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reserved bits set",
            )))
            .expect("adapter alive");
        let err = ws.read(&mut [0u8; 8]).await.expect_err("protocol error");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("reserved bits set"), "{err}");
        assert!(matches!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Close {
                code: close_code::PROTOCOL_ERROR,
                ..
            }))
        ));
        // A close goes out once: shutting down afterwards sends no second one.
        ws.shutdown().await.expect("shutdown");
        assert_eq!(h.next_event().await, Some(Event::Flushed));
        assert_eq!(h.next_event().await, Some(Event::Closed));
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message_flushed_even_on_a_slow_socket() {
        let (mut ws, mut h) = fake(1024, 3);
        ws.write_all(b"hello").await.expect("write");
        assert_eq!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Binary(Bytes::from_static(b"hello"))))
        );
        // Flushed before write_all returned, although the socket was slow to flush.
        assert_eq!(h.output.try_recv().ok(), Some(Event::Flushed));
        ws.write_all(b"world").await.expect("write");
        assert_eq!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Binary(Bytes::from_static(b"world"))))
        );
        assert_eq!(h.output.try_recv().ok(), Some(Event::Flushed));
        ws.shutdown().await.expect("shutdown");
        assert_eq!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Close {
                code: close_code::NORMAL,
                reason: ""
            }))
        );
        assert_eq!(h.next_event().await, Some(Event::Flushed));
        assert_eq!(h.next_event().await, Some(Event::Closed));
    }

    /// The real broker over the adapter: CONNECT split over three messages, then SUBSCRIBE,
    /// PUBLISH and PINGREQ in one message; the answers come back as binary messages.
    #[tokio::test]
    async fn broker_over_the_adapter_with_packets_split_and_packed() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let broker = Broker::new(BrokerConfig::default());
            let (ws, mut h) = fake(1 << 20, 0);
            let peer = "127.0.0.1:9".parse().expect("address");
            let b = broker.clone();
            let served = tokio::spawn(async move { b.serve_connection(Generic(ws), peer).await });

            let connect = encode(
                &[Packet::Connect(Box::new(Connect::new(
                    v,
                    s("ws-client"),
                    30,
                )))],
                v,
            );
            h.binary(&connect[..1]);
            h.binary(&connect[1..5]);
            h.binary(&connect[5..]);
            let sub = Subscribe {
                packet_id: std::num::NonZeroU16::new(1).expect("non-zero"),
                properties: SubscribeProperties::default(),
                subscriptions: vec![Subscription {
                    filter: s("ws/t"),
                    options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                }],
            };
            let mut publish = Publish::new(s("ws/t"), Bytes::from_static(b"over ws"));
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = std::num::NonZeroU16::new(2);
            h.binary(&encode(
                &[
                    Packet::Subscribe(sub),
                    Packet::Publish(publish),
                    Packet::PingReq,
                ],
                v,
            ));

            // Collect the answers, however the broker split them into messages.
            let mut bytes = Vec::new();
            let mut got = Vec::new();
            while got.len() < 5 {
                match h.next_event().await {
                    Some(Event::Sent(WsOut::Binary(b))) => bytes.extend_from_slice(&b),
                    Some(Event::Flushed) => {}
                    other => panic!("unexpected {other:?} after {got:?}"),
                }
                while let Some((p, used)) =
                    codec::decode(&bytes, v, 1 << 20).expect("valid packet from the broker")
                {
                    bytes.drain(..used);
                    got.push(p);
                }
            }
            let kinds: Vec<&str> = got.iter().map(kind).collect();
            // The broker may deliver before or after acknowledging; sort what is unordered.
            assert_eq!(kinds[0], "CONNACK", "{got:?}");
            let mut rest = kinds[1..].to_vec();
            rest.sort_unstable();
            assert_eq!(rest, ["PINGRESP", "PUBACK", "PUBLISH", "SUBACK"], "{got:?}");
            let delivered = got
                .iter()
                .find_map(|p| match p {
                    Packet::Publish(p) => Some(p),
                    _ => None,
                })
                .expect("the message came back");
            assert_eq!(delivered.topic.as_str(), "ws/t");
            assert_eq!(&delivered.payload[..], b"over ws");

            // The client closes: the broker ends the connection.
            h.send(WsIn::Close);
            tokio::time::timeout(Duration::from_secs(5), served)
                .await
                .expect("connection ends after the close frame")
                .expect("task")
                .expect("a close frame ends the connection without error");
        }
    }

    #[tokio::test]
    async fn broker_drops_a_connection_that_sends_text() {
        let broker = Broker::new(BrokerConfig::default());
        let (ws, mut h) = fake(1 << 20, 0);
        let peer = "127.0.0.1:9".parse().expect("address");
        let b = broker.clone();
        let served = tokio::spawn(async move { b.serve_connection(Generic(ws), peer).await });
        h.send(WsIn::Text);
        let result = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("connection ends")
            .expect("task");
        assert!(result.is_err(), "the text message is reported as an error");
        assert_eq!(
            h.next_event().await,
            Some(Event::Sent(WsOut::Close {
                code: close_code::UNSUPPORTED_DATA,
                reason: "MQTT over WebSocket takes binary messages only"
            }))
        );
    }

    fn kind(p: &Packet) -> &'static str {
        match p {
            Packet::Connack(_) => "CONNACK",
            Packet::SubAck(_) => "SUBACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PingResp => "PINGRESP",
            _ => "other",
        }
    }
}
