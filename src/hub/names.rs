//! Room name rules.

use thiserror::Error;

/// Why a room name is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RoomNameError {
    /// Empty name.
    #[error("room name is empty")]
    Empty,
    /// Longer than the limit.
    #[error("room name is {len} bytes, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Contains whitespace or a control character.
    #[error("room name contains whitespace or control characters")]
    BadCharacter,
}

/// Checks a room name: 1..=`max` bytes, no whitespace or control characters.
pub fn validate_room_name(name: &str, max: usize) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > max {
        return Err(RoomNameError::TooLong {
            len: name.len(),
            max,
        });
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RoomNameError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(validate_room_name("lobby", 8), Ok(()));
        assert_eq!(validate_room_name("équipe:1/α", 64), Ok(()));
        assert_eq!(validate_room_name("", 8), Err(RoomNameError::Empty));
        assert_eq!(
            validate_room_name("123456789", 8),
            Err(RoomNameError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(
            validate_room_name("a b", 8),
            Err(RoomNameError::BadCharacter)
        );
        assert_eq!(
            validate_room_name("a\u{0}", 8),
            Err(RoomNameError::BadCharacter)
        );
        assert_eq!(
            validate_room_name("a\n", 8),
            Err(RoomNameError::BadCharacter)
        );
    }
}
