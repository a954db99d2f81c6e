//! Error codes: carried in `ServerFrame::Error` and used as session close codes.

use serde::{Deserialize, Serialize};

/// Why a request failed or a session was closed.
///
/// On the wire a code is its number (a postcard varint); numbers are stable.
/// Unknown numbers decode to [`ErrorCode::Other`] so old clients survive new codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub enum ErrorCode {
    /// Malformed frame or a frame not allowed at this point; the session is closed.
    Protocol,
    /// Missing, forged or expired token; the session is closed.
    Unauthorized,
    /// The token's claims or the namespace settings do not allow this.
    Forbidden,
    /// `Hello.version` is not supported; the session is closed.
    UnsupportedVersion,
    /// A frame exceeded the size limit; the session is closed.
    FrameTooLarge,
    /// Too many publishes per second; the publish was dropped.
    RateLimited,
    /// The session is in as many rooms as allowed.
    TooManyRooms,
    /// The room name is empty, too long or has forbidden characters.
    InvalidRoom,
    /// The room is not joined by this session.
    NotJoined,
    /// The session already joined this room.
    AlreadyJoined,
    /// A command this server does not know (decoded as an unknown variant).
    UnknownCommand,
    /// The client did not read fast enough; the session is closed.
    SlowConsumer,
    /// The server is shutting down; the session is closed.
    GoingAway,
    /// No `Hello` arrived in time; the session is closed.
    HelloTimeout,
    /// Too many sessions (in total or for this user).
    TooManySessions,
    /// A server-side failure (e.g. the broker is unavailable).
    Internal,
    /// The session's token expired and no `Refresh` replaced it; the session is
    /// closed (reconnect with a new token).
    TokenExpired,
    /// The application's backend refused the request (a connect, join, publish or
    /// RPC hook); the message is the backend's. A backend may also answer with its
    /// own code in 1000..=4999, which the client receives as is.
    Rejected,
    /// The application's backend could not answer: down, too slow, or too many
    /// calls already in flight. Retrying later may succeed.
    BackendUnavailable,
    /// A code this build does not know.
    Other(u32),
}

impl ErrorCode {
    /// Every code this build knows, in wire order.
    pub const KNOWN: [ErrorCode; 19] = [
        ErrorCode::Protocol,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::InvalidRoom,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownCommand,
        ErrorCode::SlowConsumer,
        ErrorCode::GoingAway,
        ErrorCode::HelloTimeout,
        ErrorCode::TooManySessions,
        ErrorCode::Internal,
        ErrorCode::TokenExpired,
        ErrorCode::Rejected,
        ErrorCode::BackendUnavailable,
    ];

    /// The stable wire number of this code.
    pub fn to_code(self) -> u32 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::Unauthorized => 2,
            ErrorCode::Forbidden => 3,
            ErrorCode::UnsupportedVersion => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::RateLimited => 6,
            ErrorCode::TooManyRooms => 7,
            ErrorCode::InvalidRoom => 8,
            ErrorCode::NotJoined => 9,
            ErrorCode::AlreadyJoined => 10,
            ErrorCode::UnknownCommand => 11,
            ErrorCode::SlowConsumer => 12,
            ErrorCode::GoingAway => 13,
            ErrorCode::HelloTimeout => 14,
            ErrorCode::TooManySessions => 15,
            ErrorCode::Internal => 16,
            ErrorCode::TokenExpired => 17,
            ErrorCode::Rejected => 18,
            ErrorCode::BackendUnavailable => 19,
            ErrorCode::Other(n) => n,
        }
    }

    /// Whether the server closes the session after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::Protocol
                | ErrorCode::Unauthorized
                | ErrorCode::UnsupportedVersion
                | ErrorCode::FrameTooLarge
                | ErrorCode::SlowConsumer
                | ErrorCode::GoingAway
                | ErrorCode::HelloTimeout
                | ErrorCode::TooManySessions
                | ErrorCode::TokenExpired
        )
    }
}

impl From<u32> for ErrorCode {
    fn from(n: u32) -> Self {
        match n {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::Unauthorized,
            3 => ErrorCode::Forbidden,
            4 => ErrorCode::UnsupportedVersion,
            5 => ErrorCode::FrameTooLarge,
            6 => ErrorCode::RateLimited,
            7 => ErrorCode::TooManyRooms,
            8 => ErrorCode::InvalidRoom,
            9 => ErrorCode::NotJoined,
            10 => ErrorCode::AlreadyJoined,
            11 => ErrorCode::UnknownCommand,
            12 => ErrorCode::SlowConsumer,
            13 => ErrorCode::GoingAway,
            14 => ErrorCode::HelloTimeout,
            15 => ErrorCode::TooManySessions,
            16 => ErrorCode::Internal,
            17 => ErrorCode::TokenExpired,
            18 => ErrorCode::Rejected,
            19 => ErrorCode::BackendUnavailable,
            n => ErrorCode::Other(n),
        }
    }
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        c.to_code()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Debug already shows the number: `Other(1000)`, not `Other(1000)(1000)`.
            ErrorCode::Other(_) => write!(f, "{self:?}"),
            _ => write!(f, "{self:?}({})", self.to_code()),
        }
    }
}
