//! MQTT over WebSocket for browsers and web HMIs: `ws://HOST:PORT/mqtt` on the HTTP listener
//! (same origin as the web HMI), and optionally a dedicated listener that takes any path.
//!
//! axum (tokio-tungstenite underneath) does the handshake, framing, masking and ping/pong;
//! [`ironplant_mqtt::ws::WsByteStream`] turns the socket into the broker's byte stream. This
//! module is only the glue: the subprotocol (`mqtt`, or `mqttv3.1` from older clients), the
//! size limits, and the mapping of axum's messages.
//!
//! Why the byte-stream adapter lives in `ironplant-mqtt` and this glue here: how MQTT rides on
//! WebSocket messages (binary only, packets independent of messages, close codes) is MQTT's
//! business and is tested against the real broker without any HTTP; accepting an HTTP upgrade
//! is the HTTP server's, and keeps the broker crate free of axum.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use futures_util::{Sink, Stream};
use ironplant_mqtt::broker::Generic;
use ironplant_mqtt::ws::{WsByteStream, WsIn, WsOut};
use ironplant_mqtt::Broker;
use tokio_tungstenite::tungstenite::{self, error::CapacityError};

use crate::{ApiError, ApiState};

/// The path of MQTT over WebSocket on the HTTP listener.
pub const PATH: &str = "/mqtt";

/// Subprotocols accepted, in order of preference: `mqtt` (MQTT 3.1.1 and 5.0) and `mqttv3.1`
/// (sent by older browser clients, e.g. Paho JavaScript, whatever MQTT version they speak).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Largest WebSocket message (and frame) accepted: the broker's default maximum packet size,
/// since a client has no reason to send more in one message than the broker takes in one
/// packet. tungstenite refuses a larger frame from its header, before buffering it.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Read buffer of each WebSocket connection (it grows for larger messages).
const READ_BUFFER: usize = 4 * 1024;

/// `GET /mqtt` on the API's router.
pub(crate) async fn upgrade_api(
    State(st): State<Arc<ApiState>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match &st.mqtt {
        Some(broker) => upgrade(broker.clone(), peer, ws),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "mqtt_disabled",
            "the MQTT broker is off; start the platform without --mqtt off to use MQTT over \
             WebSocket at /mqtt",
        )
        .into_response(),
    }
}

/// Any path on the dedicated listener.
async fn upgrade_dedicated(
    State(broker): State<Broker>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(broker, peer, ws)
}

/// Serves MQTT over WebSocket alone on `listener` (any path), until `shutdown` resolves, with
/// the connection limits and timeouts of the HTTP listeners (`conns`, shared with them).
pub async fn serve_dedicated(
    listener: tokio::net::TcpListener,
    broker: Broker,
    conns: Arc<crate::listen::Connections>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Router::new().fallback(upgrade_dedicated).with_state(broker);
    crate::listen::serve(
        listener,
        "mqtt-ws",
        crate::listen::plain,
        app,
        conns,
        shutdown,
    )
    .await
}

fn upgrade(
    broker: Broker,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                format!(
                    "this is the MQTT over WebSocket endpoint and needs a WebSocket upgrade \
                     ({e}); connect an MQTT client to ws://HOST:PORT{PATH} with subprotocol \
                     \"mqtt\""
                ),
            )
            .into_response()
        }
    };
    let offered: Vec<String> = ws
        .requested_protocols()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .collect();
    let ws = ws.protocols(SUBPROTOCOLS);
    // A client that offers no subprotocol is served (some tools do not send one); a client
    // that offers only others would fail the handshake anyway (RFC 6455 §4.1), so say why.
    if !offered.is_empty() && ws.selected_protocol().is_none() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_subprotocol",
            format!(
                "the client offered the WebSocket subprotocols {offered:?}; MQTT over \
                 WebSocket needs \"mqtt\" (or \"mqttv3.1\")"
            ),
        )
        .into_response();
    }
    let peer = peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |Extension(c)| c.0);
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        // Write each message out at once: the adapter flushes after every write anyway.
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            tracing::debug!(%peer, "mqtt over websocket connected");
            let stream = WsByteStream::new(AxumSocket(socket), MAX_MESSAGE);
            if let Err(e) = broker.serve_connection(Generic(stream), peer).await {
                tracing::debug!(%peer, error = %e, "mqtt over websocket connection ended");
            }
        })
}

/// axum's WebSocket seen through [`WsIn`]/[`WsOut`].
struct AxumSocket(WebSocket);

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Stream for AxumSocket {
    type Item = io::Result<WsIn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let msg = ready!(Pin::new(&mut self.0).poll_next(cx));
        Poll::Ready(msg.map(|m| match m {
            Ok(Message::Binary(b)) => Ok(WsIn::Binary(b)),
            Ok(Message::Text(_)) => Ok(WsIn::Text),
            Ok(Message::Ping(_) | Message::Pong(_)) => Ok(WsIn::Control),
            Ok(Message::Close(_)) => Ok(WsIn::Close),
            Err(e) => {
                // tungstenite refuses an oversized frame from its header; tell the client why
                // (close code 1009) rather than as a generic protocol error.
                let e = e.into_inner();
                match e.downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                        size,
                        ..
                    })) => Ok(WsIn::TooBig { size: *size }),
                    _ => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
        }))
    }
}

impl Sink<WsOut> for AxumSocket {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsOut) -> io::Result<()> {
        let msg = match item {
            WsOut::Binary(b) => Message::Binary(b),
            WsOut::Close { code, reason } => Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })),
        };
        Pin::new(&mut self.0).start_send(msg).map_err(io_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(io_error)
    }
}
