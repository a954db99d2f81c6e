#![no_main]
//! Any WebSocket message splits into its lane and decodes, or errors; never panics.

use libfuzzer_sys::fuzz_target;
use wtgate::protocol::lane::{self, Lane};
use wtgate::protocol::{decode_datagram, ClientFrame};

fuzz_target!(|data: &[u8]| {
    match lane::parse(data) {
        Ok(Lane::Control(body)) => {
            let _ = lane::decode_control::<ClientFrame>(body);
        }
        Ok(Lane::Volatile(body)) => {
            let _ = decode_datagram(body);
        }
        _ => {}
    }
});
