//! The client's WebSocket transport (PROTOCOL.md §16): one WebSocket with lanes
//! instead of a WebTransport session's streams and datagrams. The
//! [`Client`](super::Client) API is the same over both.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use super::{
    dispatch_control, room_events, volatile_event, ClientError, Event, Handles, Pending, Trust,
};
use crate::protocol::lane::{self, Lane};
use crate::protocol::{ErrorCode, ServerFrame};
use crate::server::SUBPROTOCOL;

/// A WebSocket to a wtgate server, over TLS (`wss://`) or plain TCP (`ws://`, the
/// `--dev` demo listener on loopback).
pub type WsStream = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// The sending half of a client's WebSocket.
pub(super) type WsSink = SplitSink<WsStream, Message>;

/// How a WebSocket session ended: the close code mapped back to an error code
/// (PROTOCOL.md §16.4), and the reason.
pub(super) type Ended = Option<(Option<ErrorCode>, String)>;

/// The WebSocket URL for `url`: `https://` becomes `wss://` (same host, port and
/// path); `wss://` and `ws://` are taken as they are.
pub fn websocket_url(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => url.to_owned(),
    }
}

/// Opens a bare WebSocket to `url` offering the `wtgate.v1` subprotocol (no
/// `Hello`): the building block of [`Client::connect_websocket`](super::Client),
/// and what tests use to speak raw messages. Messages of up to 16 MiB are read.
pub async fn open_websocket(url: &str, trust: &Trust) -> Result<WsStream, ClientError> {
    WsConnector::new(trust).open(url).await
}

/// What opening a WebSocket takes besides the URL, made once for many (the load
/// tester opens thousands): the TLS settings of `trust` and the WebSocket limits.
#[derive(Clone)]
pub struct WsConnector {
    /// Only `wss://` needs it: a bad trust setting fails those alone.
    tls: Result<tokio_rustls::TlsConnector, String>,
    config: WebSocketConfig,
}

impl WsConnector {
    /// Trusting the server as `trust` says (ALPN http/1.1: the upgrade is
    /// HTTP/1.1's); messages of up to 16 MiB.
    pub fn new(trust: &Trust) -> WsConnector {
        let tls = crate::api_client::tls_config(trust).map(|mut config| {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        WsConnector {
            tls: tls.map_err(|e| e.to_string()),
            config: WebSocketConfig::default()
                .max_message_size(Some(16 << 20))
                .max_frame_size(Some(16 << 20)),
        }
    }

    /// Each connection's read buffer, allocated up front (tungstenite's
    /// default: 128 KiB).
    pub fn read_buffer(mut self, bytes: usize) -> WsConnector {
        self.config = self.config.read_buffer_size(bytes);
        self
    }

    /// Opens a bare WebSocket to `url`, as [`open_websocket`].
    pub async fn open(&self, url: &str) -> Result<WsStream, ClientError> {
        let url = websocket_url(url);
        let fail = |reason: String| ClientError::Connect {
            url: url.clone(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| fail(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => {
                return Err(fail(
                    "the URL must start with https://, wss:// or ws://".into(),
                ))
            }
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(super::CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = if tls {
            let connector = self
                .tls
                .as_ref()
                .map_err(|e| ClientError::Trust(e.clone()))?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| fail(e.to_string()))?;
            Either::Right(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(e.to_string()))?,
            )
        } else {
            Either::Left(tcp)
        };
        let (socket, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(self.config))
                .await
                .map_err(|e| fail(e.to_string()))?;
        let selected = response.headers().get("Sec-WebSocket-Protocol");
        if selected.and_then(|v| v.to_str().ok()) != Some(SUBPROTOCOL) {
            return Err(fail(format!("the server did not select {SUBPROTOCOL}")));
        }
        Ok(socket)
    }
}

/// The close code of a WebSocket close as the session's error code: 4000 + n is
/// code n; 1000 (normal) is code 0, as a WebTransport close with code 0 reads.
pub fn close_code(code: u16) -> Option<ErrorCode> {
    match code {
        1000 => Some(ErrorCode::from(0)),
        4000..=4999 => Some(ErrorCode::from(u32::from(code - 4000))),
        _ => None,
    }
}

/// The next lane-0 frame while `Hello` is answered, or how the session ended.
pub(super) async fn control_frame(
    reader: &mut SplitStream<WsStream>,
) -> Result<ServerFrame, ClientError> {
    while let Some(message) = reader.next().await {
        match message {
            Ok(Message::Binary(data)) => match lane::parse(&data) {
                Ok(Lane::Control(body)) => {
                    return lane::decode_control(body)
                        .map_err(|e| ClientError::Protocol(e.to_string()))
                }
                _ => return Err(ClientError::Protocol("expected a control frame".into())),
            },
            Ok(Message::Close(frame)) => {
                return Err(ClientError::Closed(
                    frame.and_then(|f| close_code(f.code.into())),
                ))
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    Err(ClientError::Closed(None))
}

/// Reads every lane until the WebSocket ends: replies to their requests, pushed
/// frames and datagrams to `events`; then records how it ended.
pub(super) async fn read_lanes(
    mut reader: SplitStream<WsStream>,
    pending: Pending,
    handles: Handles,
    events: mpsc::Sender<Event>,
    ended: watch::Sender<Ended>,
) {
    // Room names by the server's handle, from each room's `RoomStream`.
    let mut rooms: HashMap<u32, String> = HashMap::new();
    let mut end = (None, "connection lost".to_owned());
    while let Some(message) = reader.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Close(frame)) => {
                if let Some(frame) = frame {
                    end = (close_code(frame.code.into()), frame.reason.to_string());
                }
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                end.1 = e.to_string();
                break;
            }
        };
        let out: Vec<Event> = match lane::parse(&data) {
            Ok(Lane::Control(body)) => match lane::decode_control::<ServerFrame>(body) {
                Ok(frame) => dispatch_control(frame, &pending).into_iter().collect(),
                Err(_) => Vec::new(),
            },
            Ok(Lane::Room { handle, body }) => match lane::decode_control::<ServerFrame>(body) {
                Ok(ServerFrame::RoomStream { room, .. }) => {
                    rooms.insert(handle, room);
                    Vec::new()
                }
                Ok(frame) => rooms
                    .get(&handle)
                    .map(|room| room_events(room, frame))
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            Ok(Lane::RoomEnd { handle }) => rooms
                .remove(&handle)
                .map(|room| Event::RoomClosed { room })
                .into_iter()
                .collect(),
            Ok(Lane::Volatile(body)) => {
                if let Some(event) = volatile_event(body, &handles) {
                    // Volatile: never wait for a slow application.
                    let _ = events.try_send(event);
                }
                Vec::new()
            }
            Ok(Lane::Unknown(_)) | Err(_) => Vec::new(),
        };
        for event in out {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let _ = ended.send(Some(end.clone()));
    let (code, reason) = end;
    let _ = events.send(Event::Closed { code, reason }).await;
}

/// Sends one message with these bytes.
pub(super) async fn send(sink: &mut WsSink, bytes: Bytes) -> Result<(), ()> {
    sink.send(Message::Binary(bytes)).await.map_err(|_| ())
}

/// Closes the WebSocket normally (1000).
pub(super) async fn close(sink: &mut WsSink) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}
