//! The `Hello` handshake without I/O: the frame a client says and what it accepts
//! back. Both of [`Client`](super::Client)'s transports and the load tester's lean
//! sessions (`load/session.rs`, `load/websocket.rs`) feed it the frames they read,
//! so the rules (a connect hook's `ConnectInfo` may come first, then `Welcome`
//! or `Error`) are written once.

use bytes::Bytes;

use super::{ClientError, Welcome};
use crate::protocol::{ClientFrame, ServerFrame, PROTOCOL_VERSION};

/// The `Hello` that opens a session with `token`.
pub(crate) fn hello(token: &str) -> ClientFrame {
    ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        token: token.to_owned(),
    }
}

/// Where the answer to `Hello` stands; feed it the control frames in order.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// What the connect hook attached, once its `ConnectInfo` came.
    data: Option<Bytes>,
}

impl Handshake {
    /// `Ok(Some(welcome))` once welcomed, `Ok(None)` to read on (the one
    /// `ConnectInfo` that may precede `Welcome`); a refusal is
    /// [`ClientError::Server`], anything else [`ClientError::Protocol`].
    pub(crate) fn on_frame(&mut self, frame: ServerFrame) -> Result<Option<Welcome>, ClientError> {
        match frame {
            ServerFrame::ConnectInfo { data } if self.data.is_none() => {
                self.data = Some(data);
                Ok(None)
            }
            ServerFrame::Welcome {
                session,
                user,
                max_frame,
                online,
            } => Ok(Some(Welcome {
                session,
                user,
                max_frame,
                online,
                data: self.data.take(),
            })),
            ServerFrame::Error { code, message, .. } => Err(ClientError::Server { code, message }),
            other => Err(ClientError::Protocol(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn welcome_frame() -> ServerFrame {
        ServerFrame::Welcome {
            session: 1,
            user: "u".into(),
            max_frame: 65_536,
            online: None,
        }
    }

    #[test]
    fn welcome_ends_it_with_the_connect_hooks_data() {
        let mut h = Handshake::default();
        let info = ServerFrame::ConnectInfo {
            data: Bytes::from_static(b"{}"),
        };
        assert!(h.on_frame(info).unwrap().is_none(), "read on");
        let w = h.on_frame(welcome_frame()).unwrap().unwrap();
        assert_eq!((w.session, w.user.as_str()), (1, "u"));
        assert_eq!(w.data.as_deref(), Some(&b"{}"[..]));
        let bare = Handshake::default().on_frame(welcome_frame()).unwrap();
        assert_eq!(bare.unwrap().data, None);
    }

    #[test]
    fn an_error_refuses_and_anything_else_is_a_violation() {
        let err = Handshake::default()
            .on_frame(ServerFrame::Error {
                req: 0,
                code: ErrorCode::Unauthorized,
                message: "bad token".into(),
            })
            .unwrap_err();
        assert!(matches!(
            err,
            ClientError::Server { code: ErrorCode::Unauthorized, ref message } if message == "bad token"
        ));
        let mut h = Handshake::default();
        let info = || ServerFrame::ConnectInfo { data: Bytes::new() };
        h.on_frame(info()).unwrap();
        assert!(
            matches!(h.on_frame(info()), Err(ClientError::Protocol(_))),
            "one ConnectInfo at most"
        );
        let ack = ServerFrame::Ack { req: 1, seq: 1 };
        assert!(matches!(
            Handshake::default().on_frame(ack),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn hello_carries_the_version_and_token() {
        assert!(matches!(
            hello("t"),
            ClientFrame::Hello { version: PROTOCOL_VERSION, token } if token == "t"
        ));
    }
}
