#![no_main]
//! Any bytes on a control stream: the decoder returns frames or errors, never panics,
//! and never consumes more than it was given.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wtgate::protocol::{decode_frame, ClientFrame, ServerFrame, DEFAULT_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_frame::<ClientFrame>(&mut buf, DEFAULT_MAX_FRAME) {}
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_frame::<ServerFrame>(&mut buf, DEFAULT_MAX_FRAME) {}
});
