#![no_main]
//! Any datagram payload decodes or errors, never panics.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wtgate::protocol::decode_datagram(data);
});
