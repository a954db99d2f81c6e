//! The wire codec through the public `wtgate::protocol` API: round trips of every
//! frame (whole and fed in chunks), limits and malformed input, error codes, the
//! append-only variant rule, and the byte-exact vectors in `tests/vectors/` that the
//! JavaScript client checks too.
//!
//! Regenerating the vectors (when a frame is added, or when a frame's fields change, as
//! `Join.since` and `Joined.epoch` did — which changes existing bytes and so every
//! client implementation):
//! `WTGATE_VECTORS_OUT=tests/vectors cargo test --test codec -- --ignored generate_vectors`

use std::collections::BTreeSet;
use std::fmt::Debug;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use serde::Deserialize;
use wtgate::protocol::{
    decode_datagram, decode_frame, encode_datagram, encode_frame, frame_bytes, ClientFrame,
    CodecError, Datagram, ErrorCode, Frame, ServerFrame, Since, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};

const MAX: usize = DEFAULT_MAX_FRAME;

// ---------------------------------------------------------------------------------
// Variant tags. These matches are exhaustive on purpose: adding a variant fails to
// compile here until it gets its tag, a strategy below and a test vector.
// ---------------------------------------------------------------------------------

const CLIENT_VARIANTS: u32 = 10;
const SERVER_VARIANTS: u32 = 18;
const DATAGRAM_VARIANTS: u32 = 2;

fn client_tag(f: &ClientFrame) -> u32 {
    match f {
        ClientFrame::Hello { .. } => 0,
        ClientFrame::Join { .. } => 1,
        ClientFrame::Leave { .. } => 2,
        ClientFrame::Publish { .. } => 3,
        ClientFrame::Online { .. } => 4,
        ClientFrame::AckNotification { .. } => 5,
        ClientFrame::Refresh { .. } => 6,
        ClientFrame::Rpc { .. } => 7,
        ClientFrame::OnlinePage { .. } => 8,
        ClientFrame::MembersPage { .. } => 9,
    }
}

fn server_tag(f: &ServerFrame) -> u32 {
    match f {
        ServerFrame::Welcome { .. } => 0,
        ServerFrame::Ack { .. } => 1,
        ServerFrame::Joined { .. } => 2,
        ServerFrame::Left { .. } => 3,
        ServerFrame::Error { .. } => 4,
        ServerFrame::RoomStream { .. } => 5,
        ServerFrame::Message { .. } => 6,
        ServerFrame::PresenceJoin { .. } => 7,
        ServerFrame::PresenceLeave { .. } => 8,
        ServerFrame::Online { .. } => 9,
        ServerFrame::OnlineJoin { .. } => 10,
        ServerFrame::OnlineLeave { .. } => 11,
        ServerFrame::Broadcast { .. } => 12,
        ServerFrame::GoAway { .. } => 13,
        ServerFrame::Notification { .. } => 14,
        ServerFrame::RpcReply { .. } => 15,
        ServerFrame::ConnectInfo { .. } => 16,
        ServerFrame::PresenceBatch { .. } => 17,
    }
}

fn datagram_tag(d: &Datagram) -> u32 {
    match d {
        Datagram::Send { .. } => 0,
        Datagram::Recv { .. } => 1,
    }
}

/// Every known error code with its wire number (exhaustive for the same reason).
fn code_number(c: ErrorCode) -> u32 {
    match c {
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

/// The library's list of known codes; `code_number` above checks each one's number
/// on its own, and `error_codes_round_trip_through_their_numbers` that they are 1..=19.
const KNOWN_CODES: [ErrorCode; 19] = ErrorCode::KNOWN;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn decode_client(buf: &mut BytesMut) -> Result<Option<ClientFrame>, CodecError> {
    decode_frame::<ClientFrame>(buf, MAX)
}

fn decode_server(buf: &mut BytesMut) -> Result<Option<ServerFrame>, CodecError> {
    decode_frame::<ServerFrame>(buf, MAX)
}

/// LEB128 `u32`, as the codec's length prefix and postcard's integers.
fn leb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Length prefix + `body`, built by hand.
fn framed(body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_slice(&leb128(body.len() as u64));
    buf.put_slice(body);
    buf
}

/// The postcard body of a stream frame, after checking that its prefix is its length.
fn body_of(encoded: &[u8]) -> &[u8] {
    let mut len: u64 = 0;
    for (i, b) in encoded.iter().enumerate().take(5) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let body = &encoded[i + 1..];
            assert_eq!(len, body.len() as u64, "prefix must equal the body length");
            return body;
        }
    }
    panic!("no valid length prefix in {encoded:02x?}");
}

fn encode<T: serde::Serialize>(frame: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf);
    let encoded = buf.to_vec();
    assert_eq!(frame_bytes(frame), encoded, "frame_bytes == encode_frame");
    encoded
}

/// Decodes a whole buffer and checks that exactly the frame was consumed.
fn decode_whole<T: PartialEq + Debug>(
    encoded: &[u8],
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> T {
    let mut buf = BytesMut::from(encoded);
    let frame = decode(&mut buf)
        .expect("decodes")
        .expect("a complete frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frame
}

/// Feeds `encoded` one byte at a time: `Ok(None)` and nothing consumed until the last
/// byte, then the frame with nothing left over.
fn decode_bytewise<T: PartialEq + Debug>(
    encoded: &[u8],
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> T {
    let mut buf = BytesMut::new();
    for (i, b) in encoded.iter().enumerate() {
        buf.put_u8(*b);
        let res = decode(&mut buf);
        if i + 1 < encoded.len() {
            assert_eq!(res, Ok(None), "after {} of {} bytes", i + 1, encoded.len());
            assert_eq!(&buf[..], &encoded[..=i], "nothing is consumed meanwhile");
        } else {
            let frame = res.expect("decodes").expect("complete after the last byte");
            assert!(buf.is_empty());
            return frame;
        }
    }
    panic!("empty encoding");
}

/// Feeds `encoded` in two chunks split at `at`.
fn decode_split<T: PartialEq + Debug>(
    encoded: &[u8],
    at: usize,
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> T {
    let mut buf = BytesMut::from(&encoded[..at]);
    if at < encoded.len() {
        assert_eq!(decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), at);
        buf.put_slice(&encoded[at..]);
    }
    let frame = decode(&mut buf).expect("decodes").expect("complete");
    assert!(buf.is_empty());
    frame
}

/// Feeds a stream in chunks of the given sizes (cycled), collecting every frame.
fn decode_stream<T: PartialEq + Debug>(
    stream: &[u8],
    chunk_sizes: &[usize],
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> Vec<T> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    while pos < stream.len() {
        let n = (*sizes.next().unwrap()).clamp(1, stream.len() - pos);
        buf.put_slice(&stream[pos..pos + n]);
        pos += n;
        while let Some(frame) = decode(&mut buf).expect("valid stream") {
            out.push(frame);
        }
    }
    assert!(buf.is_empty());
    out
}

/// Decodes until the buffer needs more bytes or cannot be resynchronized; must not panic.
fn drain<T>(buf: &mut BytesMut, decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>) {
    loop {
        let before = buf.len();
        match decode(buf) {
            Ok(Some(_)) | Err(CodecError::UnknownVariant(_)) | Err(CodecError::Malformed(_)) => {
                assert!(buf.len() < before, "a complete frame is consumed");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "nothing consumed on Ok(None)");
                return;
            }
            Err(CodecError::TooLarge { .. }) | Err(CodecError::BadLength) => {
                assert_eq!(buf.len(), before);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9_:/.-]{1,16}",
        any::<String>(),
        // Any char at all, control characters and NUL included.
        prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        // Long enough for two-byte length varints.
        prop::collection::vec(any::<char>(), 100..300).prop_map(String::from_iter),
    ]
}

fn body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        prop::collection::vec(any::<u8>(), 120..1500).prop_map(Bytes::from),
    ]
}

fn users() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..6)
}

fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        0..300u64,
        Just(1_700_000_000_000),
        any::<u64>()
    ]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), 0..300u32, any::<u32>()]
}

fn u16s() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0), Just(1), Just(u16::MAX), any::<u16>()]
}

fn since() -> impl Strategy<Value = Since> {
    (u64s(), u64s()).prop_map(|(epoch, seq)| Since { epoch, seq })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        prop::sample::select(KNOWN_CODES.to_vec()),
        // `Other` only round-trips for numbers that are not known codes.
        any::<u32>()
            .prop_filter("unknown number", |n| !(1..=19).contains(n))
            .prop_map(ErrorCode::Other),
        Just(ErrorCode::Other(0)),
        Just(ErrorCode::Other(20)),
        Just(ErrorCode::Other(u32::MAX)),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (u16s(), text()).prop_map(|(version, token)| ClientFrame::Hello { version, token }),
        (u32s(), text(), prop::option::of(since()))
            .prop_map(|(req, room, since)| ClientFrame::Join { req, room, since }),
        (u32s(), text()).prop_map(|(req, room)| ClientFrame::Leave { req, room }),
        (u32s(), text(), body()).prop_map(|(req, room, body)| ClientFrame::Publish {
            req,
            room,
            body
        }),
        u32s().prop_map(|req| ClientFrame::Online { req }),
        (u32s(), u64s()).prop_map(|(req, id)| ClientFrame::AckNotification { req, id }),
        (u32s(), text()).prop_map(|(req, token)| ClientFrame::Refresh { req, token }),
        (u32s(), text(), body()).prop_map(|(req, method, body)| ClientFrame::Rpc {
            req,
            method,
            body
        }),
        (u32s(), text(), u32s()).prop_map(|(req, after, limit)| ClientFrame::OnlinePage {
            req,
            after,
            limit
        }),
        (u32s(), text(), text(), u32s()).prop_map(|(req, room, after, limit)| {
            ClientFrame::MembersPage {
                req,
                room,
                after,
                limit,
            }
        }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (u64s(), text(), u32s(), prop::option::of(users())).prop_map(
            |(session, user, max_frame, online)| ServerFrame::Welcome {
                session,
                user,
                max_frame,
                online
            }
        ),
        (u32s(), u64s()).prop_map(|(req, seq)| ServerFrame::Ack { req, seq }),
        (
            u32s(),
            text(),
            u32s(),
            u64s(),
            u64s(),
            any::<bool>(),
            users()
        )
            .prop_map(|(req, room, handle, epoch, seq, recovered, members)| {
                ServerFrame::Joined {
                    req,
                    room,
                    handle,
                    epoch,
                    seq,
                    recovered,
                    members,
                }
            }),
        (u32s(), text()).prop_map(|(req, room)| ServerFrame::Left { req, room }),
        (u32s(), error_code(), text()).prop_map(|(req, code, message)| ServerFrame::Error {
            req,
            code,
            message
        }),
        (text(), u32s()).prop_map(|(room, handle)| ServerFrame::RoomStream { room, handle }),
        (u64s(), text(), body(), u64s()).prop_map(|(seq, from, body, ts)| {
            ServerFrame::Message {
                seq,
                from,
                body,
                ts,
            }
        }),
        text().prop_map(|user| ServerFrame::PresenceJoin { user }),
        text().prop_map(|user| ServerFrame::PresenceLeave { user }),
        (u32s(), users()).prop_map(|(req, users)| ServerFrame::Online { req, users }),
        text().prop_map(|user| ServerFrame::OnlineJoin { user }),
        text().prop_map(|user| ServerFrame::OnlineLeave { user }),
        (text(), body(), u64s()).prop_map(|(from, body, ts)| ServerFrame::Broadcast {
            from,
            body,
            ts
        }),
        text().prop_map(|message| ServerFrame::GoAway { message }),
        (u64s(), text(), body(), u64s())
            .prop_map(|(id, kind, body, ts)| { ServerFrame::Notification { id, kind, body, ts } }),
        (u32s(), body()).prop_map(|(req, body)| ServerFrame::RpcReply { req, body }),
        body().prop_map(|data| ServerFrame::ConnectInfo { data }),
        (users(), users()).prop_map(|(joins, leaves)| ServerFrame::PresenceBatch { joins, leaves }),
    ]
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (u32s(), body()).prop_map(|(handle, body)| Datagram::Send { handle, body }),
        (u32s(), text(), body()).prop_map(|(handle, from, body)| Datagram::Recv {
            handle,
            from,
            body
        }),
    ]
}

// ---------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------

proptest! {
    #[test]
    fn client_frames_round_trip(frame in client_frame(), split in any::<prop::sample::Index>()) {
        let encoded = encode(&frame);
        prop_assert_eq!(u32::from(body_of(&encoded)[0]), client_tag(&frame));
        prop_assert_eq!(&decode_whole(&encoded, decode_client), &frame);
        prop_assert_eq!(&decode_bytewise(&encoded, decode_client), &frame);
        let at = split.index(encoded.len() + 1);
        prop_assert_eq!(&decode_split(&encoded, at, decode_client), &frame);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame(), split in any::<prop::sample::Index>()) {
        let encoded = encode(&frame);
        prop_assert_eq!(u32::from(body_of(&encoded)[0]), server_tag(&frame));
        prop_assert_eq!(&decode_whole(&encoded, decode_server), &frame);
        prop_assert_eq!(&decode_bytewise(&encoded, decode_server), &frame);
        let at = split.index(encoded.len() + 1);
        prop_assert_eq!(&decode_split(&encoded, at, decode_server), &frame);
    }

    #[test]
    fn datagrams_round_trip(d in datagram()) {
        let encoded = encode_datagram(&d);
        prop_assert_eq!(u32::from(encoded[0]), datagram_tag(&d));
        prop_assert_eq!(decode_datagram(&encoded), Ok(d.clone()));
        // A datagram is the bare postcard body: the same bytes as a stream frame's body.
        let framed = encode(&d);
        prop_assert_eq!(body_of(&framed), &encoded[..]);
    }

    #[test]
    fn frames_back_to_back_decode_in_order(
        frames in prop::collection::vec(server_frame(), 1..8),
        chunks in prop::collection::vec(1usize..200, 1..8),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            encode_frame(f, &mut stream);
        }
        let mut whole = stream.clone();
        for f in &frames {
            prop_assert_eq!(decode_server(&mut whole), Ok(Some(f.clone())));
        }
        prop_assert!(whole.is_empty());
        prop_assert_eq!(decode_server(&mut whole), Ok(None));

        prop_assert_eq!(decode_stream(&stream, &chunks, decode_server), frames);
    }

    #[test]
    fn client_frames_back_to_back_decode_in_order(
        frames in prop::collection::vec(client_frame(), 1..8),
        chunks in prop::collection::vec(1usize..50, 1..8),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            encode_frame(f, &mut stream);
        }
        prop_assert_eq!(decode_stream(&stream, &chunks, decode_client), frames);
    }
}

// `Since` is a struct: on the wire, `epoch` then `seq`, two varints, nothing else.
proptest! {
    #[test]
    fn join_and_joined_bodies_match_a_hand_built_layout(
        req in u32s(),
        room in text(),
        since in prop::option::of(since()),
        handle in u32s(),
        epoch in u64s(),
        seq in u64s(),
        recovered in any::<bool>(),
        members in users(),
    ) {
        let string = |s: &str| [leb128(s.len() as u64), s.as_bytes().to_vec()].concat();

        let mut join = vec![0x01];
        join.extend(leb128(req.into()));
        join.extend(string(&room));
        match since {
            None => join.push(0x00),
            Some(Since { epoch, seq }) => {
                join.push(0x01);
                join.extend(leb128(epoch));
                join.extend(leb128(seq));
            }
        }
        let frame = ClientFrame::Join { req, room: room.clone(), since };
        let encoded = encode(&frame);
        prop_assert_eq!(body_of(&encoded), &join[..]);

        let mut joined = vec![0x02];
        joined.extend(leb128(req.into()));
        joined.extend(string(&room));
        joined.extend(leb128(handle.into()));
        joined.extend(leb128(epoch));
        joined.extend(leb128(seq));
        joined.push(u8::from(recovered));
        joined.extend(leb128(members.len() as u64));
        for m in &members {
            joined.extend(string(m));
        }
        let frame = ServerFrame::Joined { req, room, handle, epoch, seq, recovered, members };
        let encoded = encode(&frame);
        prop_assert_eq!(body_of(&encoded), &joined[..]);
    }
}

// ---------------------------------------------------------------------------------
// Garbage never panics
// ---------------------------------------------------------------------------------

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for max in [MAX, 16, 0] {
            drain(&mut BytesMut::from(&bytes[..]), |b| decode_frame::<ClientFrame>(b, max));
            drain(&mut BytesMut::from(&bytes[..]), |b| decode_frame::<ServerFrame>(b, max));
            drain(&mut BytesMut::from(&bytes[..]), |b| decode_frame::<Datagram>(b, max));
        }
        let _ = decode_datagram(&bytes);
    }

    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        // A valid prefix around random bytes reaches the postcard decoder every time.
        drain(&mut framed(&body), decode_client);
        drain(&mut framed(&body), decode_server);
        let _ = decode_datagram(&body);
        let mut tagged = vec![0u8];
        for tag in 0..SERVER_VARIANTS as u8 {
            tagged[0] = tag;
            tagged.truncate(1);
            tagged.extend_from_slice(&body);
            drain(&mut framed(&tagged), decode_client);
            drain(&mut framed(&tagged), decode_server);
            let _ = decode_datagram(&tagged);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        frame in server_frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut encoded = encode(&frame);
        for (i, x) in flips {
            let i = i.index(encoded.len());
            encoded[i] ^= x;
        }
        drain(&mut BytesMut::from(&encoded[..]), decode_server);
        drain(&mut BytesMut::from(&encoded[..]), decode_client);
        let _ = decode_datagram(&encoded);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn large_random_inputs_never_panic(bytes in prop::collection::vec(any::<u8>(), 100_000..300_000)) {
        drain(&mut BytesMut::from(&bytes[..]), decode_client);
        drain(&mut BytesMut::from(&bytes[..]), decode_server);
        drain(&mut framed(&bytes), |b| decode_frame::<ServerFrame>(b, usize::MAX));
        drain(&mut framed(&bytes), |b| decode_frame::<ClientFrame>(b, usize::MAX));
        let _ = decode_datagram(&bytes);
    }
}

#[test]
fn huge_announced_lengths_inside_a_body_do_not_allocate_or_panic() {
    // Joined.members announcing u32::MAX strings, Welcome.online announcing a huge list,
    // a string length of 2^35: all must fail cleanly.
    // Joined: req 1, room "r", handle 0, epoch 0, seq 0, recovered false, members: count.
    let mut members = vec![2, 1, 1, b'r', 0, 0, 0, 0];
    members.extend_from_slice(&leb128(u64::from(u32::MAX)));
    assert!(matches!(
        decode_server(&mut framed(&members)),
        Err(CodecError::Malformed(_))
    ));
    let mut online = vec![0, 0, 0, 0, 1];
    online.extend_from_slice(&leb128(u64::MAX));
    assert!(matches!(
        decode_server(&mut framed(&online)),
        Err(CodecError::Malformed(_))
    ));
    let mut token = vec![0, 1];
    token.extend_from_slice(&leb128(1 << 35));
    assert!(matches!(
        decode_client(&mut framed(&token)),
        Err(CodecError::Malformed(_))
    ));
}

// ---------------------------------------------------------------------------------
// Limits and malformed input
// ---------------------------------------------------------------------------------

#[test]
fn a_prefix_over_the_limit_fails_before_the_body_arrives() {
    let mut buf = BytesMut::from(&leb128(MAX as u64 + 1)[..]);
    assert_eq!(
        decode_client(&mut buf),
        Err(CodecError::TooLarge {
            len: MAX as u64 + 1,
            max: MAX
        })
    );
    assert_eq!(buf.len(), 3, "nothing consumed");

    // Exactly the limit is allowed: it waits for the body.
    let mut buf = BytesMut::from(&leb128(MAX as u64)[..]);
    assert_eq!(decode_client(&mut buf), Ok(None));

    // The largest u32 is a valid prefix, just too large.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x0f][..]);
    assert_eq!(
        decode_server(&mut buf),
        Err(CodecError::TooLarge {
            len: u64::from(u32::MAX),
            max: MAX
        })
    );
}

#[test]
fn the_limit_is_on_the_body_length() {
    let frame = ClientFrame::Publish {
        req: 1,
        room: "r".into(),
        body: Bytes::from(vec![7; 1000]),
    };
    let encoded = encode(&frame);
    let body_len = body_of(&encoded).len();
    let mut buf = BytesMut::from(&encoded[..]);
    assert_eq!(
        decode_frame::<ClientFrame>(&mut buf, body_len),
        Ok(Some(frame))
    );
    let mut buf = BytesMut::from(&encoded[..]);
    assert_eq!(
        decode_frame::<ClientFrame>(&mut buf, body_len - 1),
        Err(CodecError::TooLarge {
            len: body_len as u64,
            max: body_len - 1
        })
    );
}

#[test]
fn bad_length_prefixes() {
    for prefix in [
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..], // six bytes
        &[0x80, 0x80, 0x80, 0x80, 0x80][..],       // fifth byte still continues
        &[0xff, 0xff, 0xff, 0xff, 0x10][..],       // 2^32
        &[0xff, 0xff, 0xff, 0xff, 0x7f][..],       // far beyond u32
    ] {
        let mut buf = BytesMut::from(prefix);
        assert_eq!(
            decode_client(&mut buf),
            Err(CodecError::BadLength),
            "{prefix:02x?}"
        );
        assert_eq!(
            decode_frame::<ServerFrame>(&mut buf, usize::MAX),
            Err(CodecError::BadLength)
        );
    }
    // Up to four continuation bytes may still be completed.
    for n in 1..=4 {
        let mut buf = BytesMut::from(&vec![0x80; n][..]);
        assert_eq!(decode_client(&mut buf), Ok(None));
        assert_eq!(buf.len(), n);
    }
    assert_eq!(decode_client(&mut BytesMut::new()), Ok(None));
}

#[test]
fn unknown_variants_are_skipped() {
    let next = ClientFrame::Online { req: 7 };
    let mut buf = framed(&[0x63]);
    encode_frame(&next, &mut buf);
    assert_eq!(decode_client(&mut buf), Err(CodecError::UnknownVariant(99)));
    assert_eq!(decode_client(&mut buf), Ok(Some(next.clone())));
    assert!(buf.is_empty());

    // The first unknown tag with a payload a newer peer would have attached, and a
    // multi-byte tag.
    let mut buf = framed(&[CLIENT_VARIANTS as u8, 0x01, 0x02, 0x03]);
    buf.extend_from_slice(&framed(&[0xac, 0x02, 0xff]));
    encode_frame(&next, &mut buf);
    assert_eq!(
        decode_client(&mut buf),
        Err(CodecError::UnknownVariant(CLIENT_VARIANTS))
    );
    assert_eq!(
        decode_client(&mut buf),
        Err(CodecError::UnknownVariant(300))
    );
    assert_eq!(decode_client(&mut buf), Ok(Some(next)));

    let mut buf = framed(&[SERVER_VARIANTS as u8, 0x00]);
    assert_eq!(
        decode_server(&mut buf),
        Err(CodecError::UnknownVariant(SERVER_VARIANTS))
    );
    assert!(buf.is_empty());
    assert_eq!(
        decode_datagram(&[0x02, 0x00]),
        Err(CodecError::UnknownVariant(2))
    );
}

/// The server drops datagrams of unknown types (a newer client's volatile events) but
/// closes the session on a malformed one; the codec tells the two apart.
#[test]
fn unknown_datagram_types_are_told_apart_from_malformed_ones() {
    let unknown: &[(&[u8], u32)] = &[
        (&[0x02], 2),
        (&[0x02, 0x00, 0x03, 0x01, 0x02, 0x03], 2),
        (&[0x7f, 0xff, 0xff], 127),
        (&[0xac, 0x02, 0x00], 300),
        (&[0xff, 0xff, 0xff, 0xff, 0x0f], u32::MAX),
    ];
    for (bytes, tag) in unknown {
        assert_eq!(
            decode_datagram(bytes),
            Err(CodecError::UnknownVariant(*tag)),
            "{bytes:02x?}"
        );
    }
    let malformed: &[&[u8]] = &[
        &[],
        &[0x80],                                     // truncated tag
        &[0xff, 0xff, 0xff, 0xff, 0x10],             // tag beyond u32: not a tag at all
        &[0x00, 0x01, 0x05, 0x01],                   // Send, body cut short
        &[0x00, 0x01, 0x00, 0x00],                   // Send, trailing byte
        &[0x00, 0xff, 0xff, 0xff, 0xff, 0x10, 0x00], // Send, handle beyond u32
        &[0x01, 0x00, 0x02, 0xc3, 0x28, 0x00],       // Recv, invalid UTF-8
    ];
    for bytes in malformed {
        assert!(
            matches!(decode_datagram(bytes), Err(CodecError::Malformed(_))),
            "{bytes:02x?}"
        );
    }
    // A well-formed `Recv` decodes; refusing it from a client is the server's job.
    assert_eq!(
        decode_datagram(&[0x01, 0x00, 0x00, 0x00]),
        Ok(Datagram::Recv {
            handle: 0,
            from: String::new(),
            body: Bytes::new(),
        })
    );
}

#[test]
fn malformed_bodies_are_consumed_and_reported() {
    let next = ServerFrame::Ack { req: 1, seq: 2 };
    let cases: &[(&str, &[u8])] = &[
        ("empty body", &[]),
        ("trailing byte", &[0x01, 0x01, 0x02, 0x00]),
        ("truncated string", &[0x0d, 0x05, b'a']),
        ("truncated varint", &[0x01, 0x01, 0x80]),
        ("invalid utf-8", &[0x0d, 0x02, 0xff, 0xfe]),
        ("utf-16 surrogate", &[0x0d, 0x03, 0xed, 0xa0, 0x80]),
        ("overlong utf-8", &[0x0d, 0x02, 0xc0, 0xaf]),
        // Joined: req 1, room "r", handle 0, epoch 0, seq 0, recovered 2, no members.
        (
            "bool 2",
            &[0x02, 0x01, 0x01, b'r', 0x00, 0x00, 0x00, 0x02, 0x00],
        ),
        // Joined cut after its epoch (a body in the old, epoch-less layout).
        (
            "joined without epoch",
            &[0x02, 0x01, 0x01, b'r', 0x00, 0x00, 0x00, 0x00],
        ),
        ("option tag 2", &[0x00, 0x01, 0x00, 0x00, 0x02]),
        (
            "u32 varint overflow",
            &[0x01, 0xff, 0xff, 0xff, 0xff, 0x10, 0x00],
        ),
        ("truncated list", &[0x09, 0x01, 0x02, 0x01, b'a']),
    ];
    for (what, body) in cases {
        let mut buf = framed(body);
        encode_frame(&next, &mut buf);
        assert!(
            matches!(decode_server(&mut buf), Err(CodecError::Malformed(_))),
            "{what}"
        );
        assert_eq!(decode_server(&mut buf), Ok(Some(next.clone())), "{what}");
    }

    // Client side: trailing bytes, truncated body, invalid UTF-8 in a token,
    // a u16 version that overflows, then `Join { req: 1, room: "r", since }` with a bad
    // `since`: option tag 2, only an epoch (the old `Option<u64>` layout), an epoch
    // whose tenth varint byte exceeds 0x01, an eleven-byte epoch, trailing bytes.
    let ff9 = [0xff; 9];
    let epoch_overflow = [&[0x01, 0x01, 0x01, b'r', 0x01][..], &ff9, &[0x02, 0x00]].concat();
    let epoch_too_long = [
        &[0x01, 0x01, 0x01, b'r', 0x01][..],
        &ff9,
        &[0x81, 0x00, 0x00],
    ]
    .concat();
    for body in [
        &[0x04, 0x01, 0x00][..],
        &[0x00, 0x01, 0x05, b'a'][..],
        &[0x00, 0x01, 0x02, 0xc3, 0x28][..],
        &[0x00, 0x80, 0x80, 0x04, 0x00][..],
        &[0x01, 0x01, 0x01, b'r', 0x02, 0x00, 0x00][..],
        &[0x01, 0x01, 0x01, b'r', 0x01, 0x2a][..],
        &epoch_overflow[..],
        &epoch_too_long[..],
        &[0x01, 0x01, 0x01, b'r', 0x01, 0x07, 0x2a, 0x00][..],
    ] {
        let mut buf = framed(body);
        assert!(
            matches!(decode_client(&mut buf), Err(CodecError::Malformed(_))),
            "{body:02x?}"
        );
        assert!(buf.is_empty());
    }

    for d in [
        &[][..],
        &[0x00][..],
        &[0x00, 0x01, 0x02, 0xaa][..],
        &[0x01, 0x00, 0x01, 0xff, 0x00][..],
    ] {
        assert!(
            matches!(decode_datagram(d), Err(CodecError::Malformed(_))),
            "{d:02x?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Append-only variants
// ---------------------------------------------------------------------------------

/// Classifies a one-byte body, which is never a complete frame of any variant.
fn classify<T: PartialEq + Debug>(
    tag: u32,
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> Result<Option<T>, CodecError> {
    decode(&mut framed(&leb128(u64::from(tag))))
}

#[test]
fn the_last_variants_carry_the_highest_tags() {
    let last_client = ClientFrame::MembersPage {
        req: 0,
        room: String::new(),
        after: String::new(),
        limit: 0,
    };
    let last_server = ServerFrame::PresenceBatch {
        joins: vec![],
        leaves: vec![],
    };
    let last_datagram = Datagram::Recv {
        handle: 0,
        from: String::new(),
        body: Bytes::new(),
    };
    assert_eq!(body_of(&encode(&last_client))[0], 9);
    assert_eq!(body_of(&encode(&last_server))[0], 17);
    assert_eq!(encode_datagram(&last_datagram)[0], 1);
    assert_eq!(client_tag(&last_client), CLIENT_VARIANTS - 1);
    assert_eq!(server_tag(&last_server), SERVER_VARIANTS - 1);
    assert_eq!(datagram_tag(&last_datagram), DATAGRAM_VARIANTS - 1);

    assert_eq!(<ClientFrame as Frame>::VARIANTS, CLIENT_VARIANTS);
    assert_eq!(<ServerFrame as Frame>::VARIANTS, SERVER_VARIANTS);
    assert_eq!(<Datagram as Frame>::VARIANTS, DATAGRAM_VARIANTS);

    // And the decoder uses it: the last tag is known (a truncated body is malformed),
    // the next one is unknown.
    for (tag, unknown) in [(CLIENT_VARIANTS - 1, false), (CLIENT_VARIANTS, true)] {
        let res = classify(tag, decode_client);
        assert_eq!(
            matches!(res, Err(CodecError::UnknownVariant(t)) if t == tag),
            unknown
        );
        assert_eq!(matches!(res, Err(CodecError::Malformed(_))), !unknown);
    }
    for (tag, unknown) in [(SERVER_VARIANTS - 1, false), (SERVER_VARIANTS, true)] {
        let res = classify(tag, decode_server);
        assert_eq!(
            matches!(res, Err(CodecError::UnknownVariant(t)) if t == tag),
            unknown
        );
        assert_eq!(matches!(res, Err(CodecError::Malformed(_))), !unknown);
    }
    for (tag, unknown) in [(DATAGRAM_VARIANTS - 1, false), (DATAGRAM_VARIANTS, true)] {
        let res = decode_datagram(&leb128(u64::from(tag)));
        assert_eq!(
            matches!(res, Err(CodecError::UnknownVariant(t)) if t == tag),
            unknown
        );
        assert_eq!(matches!(res, Err(CodecError::Malformed(_))), !unknown);
    }
}

// ---------------------------------------------------------------------------------
// Error codes
// ---------------------------------------------------------------------------------

#[test]
fn error_codes_round_trip_through_their_numbers() {
    let mut seen = BTreeSet::new();
    for code in KNOWN_CODES {
        let n = code.to_code();
        assert_eq!(n, code_number(code), "{code:?}");
        assert_eq!(ErrorCode::from(n), code);
        assert_eq!(u32::from(code), n);
        assert!(seen.insert(n), "{n} used twice");
    }
    assert_eq!(seen, (1..=19).collect(), "known codes are 1..=19");
    for n in [0, 20, 1000, u32::MAX] {
        assert_eq!(ErrorCode::from(n), ErrorCode::Other(n));
        assert_eq!(ErrorCode::Other(n).to_code(), n);
    }
    assert_eq!(ErrorCode::FrameTooLarge.to_string(), "FrameTooLarge(5)");
    assert_eq!(ErrorCode::Other(1000).to_string(), "Other(1000)");
    // On the wire a code is its number as a varint.
    let frame = ServerFrame::Error {
        req: 0,
        code: ErrorCode::Other(1000),
        message: String::new(),
    };
    assert_eq!(body_of(&encode(&frame)), [0x04, 0x00, 0xe8, 0x07, 0x00]);
    let frame = ServerFrame::Error {
        req: 0,
        code: ErrorCode::GoingAway,
        message: String::new(),
    };
    assert_eq!(body_of(&encode(&frame)), [0x04, 0x00, 0x0d, 0x00]);
}

#[test]
fn fatal_error_codes() {
    let fatal = [
        ErrorCode::Protocol,
        ErrorCode::Unauthorized,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::SlowConsumer,
        ErrorCode::GoingAway,
        ErrorCode::HelloTimeout,
        ErrorCode::TooManySessions,
        ErrorCode::TokenExpired,
    ];
    for code in KNOWN_CODES {
        assert_eq!(code.is_fatal(), fatal.contains(&code), "{code:?}");
    }
    for n in [0, 20, 1000, u32::MAX] {
        assert!(!ErrorCode::Other(n).is_fatal());
    }
}

// ---------------------------------------------------------------------------------
// Byte-exact vectors shared with the JavaScript client
// ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    frame: serde_json::Value,
    hex: String,
}

fn load_vectors(file: &str) -> Vec<Vector> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let vectors: Vec<Vector> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid: {e}"));
    assert!(!vectors.is_empty(), "{path} holds no vectors");
    let names: BTreeSet<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), vectors.len(), "{path}: names must be unique");
    vectors
}

/// Checks each vector both ways and returns the tags covered.
fn check_vectors<T>(
    file: &str,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, CodecError>,
    tag: impl Fn(&T) -> u32,
) -> BTreeSet<u32>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let mut tags = BTreeSet::new();
    for v in load_vectors(file) {
        let ctx = format!("{file} / {}", v.name);
        let frame: T = serde_json::from_value(v.frame.clone())
            .unwrap_or_else(|e| panic!("{ctx}: frame does not parse: {e}"));
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            v.frame,
            "{ctx}: frame JSON is not in serde_json's canonical form"
        );
        assert_eq!(v.hex, v.hex.to_lowercase(), "{ctx}: hex must be lowercase");
        let bytes = hex::decode(&v.hex).unwrap_or_else(|e| panic!("{ctx}: bad hex: {e}"));
        assert_eq!(
            hex::encode(encode(&frame)),
            v.hex,
            "{ctx}: encoding differs"
        );
        assert_eq!(decode(&bytes), Ok(frame), "{ctx}: decoding differs");
        tags.insert(tag(&serde_json::from_value(v.frame).unwrap()));
    }
    tags
}

fn decode_stream_vector<T: PartialEq + Debug>(
    bytes: &[u8],
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, CodecError>,
) -> Result<T, CodecError> {
    let mut buf = BytesMut::from(bytes);
    let frame = decode(&mut buf)?.ok_or_else(|| CodecError::Malformed("incomplete".into()))?;
    if !buf.is_empty() {
        return Err(CodecError::Malformed("bytes after the frame".into()));
    }
    Ok(frame)
}

#[test]
fn client_frame_vectors() {
    let tags = check_vectors::<ClientFrame>(
        "client_frames.json",
        |f| frame_bytes(f).to_vec(),
        |b| decode_stream_vector(b, decode_client),
        client_tag,
    );
    assert_eq!(
        tags,
        (0..CLIENT_VARIANTS).collect(),
        "every variant needs a vector"
    );
}

#[test]
fn server_frame_vectors() {
    let tags = check_vectors::<ServerFrame>(
        "server_frames.json",
        |f| frame_bytes(f).to_vec(),
        |b| decode_stream_vector(b, decode_server),
        server_tag,
    );
    assert_eq!(
        tags,
        (0..SERVER_VARIANTS).collect(),
        "every variant needs a vector"
    );
}

#[test]
fn datagram_vectors() {
    let tags = check_vectors::<Datagram>(
        "datagrams.json",
        |d| encode_datagram(d).to_vec(),
        decode_datagram,
        datagram_tag,
    );
    assert_eq!(
        tags,
        (0..DATAGRAM_VARIANTS).collect(),
        "every variant needs a vector"
    );
}

#[test]
fn hand_checked_vectors() {
    // Worked by hand from the postcard rules, independent of the JSON files.
    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        token: "abc".into(),
    };
    // len 6 | tag 0 | version 1 | len 3 "abc"
    assert_eq!(hex::encode(encode(&hello)), "06000103616263");

    let join = ClientFrame::Join {
        req: 300,
        room: "é".into(),
        since: Some(Since {
            epoch: 1_700_000_000_000,
            seq: 42,
        }),
    };
    // len 14 | tag 1 | 300 = ac 02 | len 2 c3 a9 | Some 01
    //   | epoch 1_700_000_000_000 = 80 d0 95 ff bc 31 | seq 42 = 2a
    assert_eq!(hex::encode(encode(&join)), "0e01ac0202c3a90180d095ffbc312a");

    let join = ClientFrame::Join {
        req: 300,
        room: "é".into(),
        since: Some(Since {
            epoch: u64::MAX,
            seq: u64::MAX,
        }),
    };
    // len 27 | tag 1 | ac 02 | 02 c3 a9 | Some 01 | epoch u64::MAX = ff x9, 01 | seq the same
    assert_eq!(
        hex::encode(encode(&join)),
        "1b01ac0202c3a901ffffffffffffffffff01ffffffffffffffffff01"
    );

    let join = ClientFrame::Join {
        req: 1,
        room: "lobby".into(),
        since: None,
    };
    // len 9 | tag 1 | req 1 | len 5 "lobby" | None 00
    assert_eq!(hex::encode(encode(&join)), "090101056c6f62627900");

    let joined = ServerFrame::Joined {
        req: 1,
        room: "lobby".into(),
        handle: 0,
        epoch: 1_700_000_000_000,
        seq: 42,
        recovered: true,
        members: vec!["al".into()],
    };
    // len 21 | tag 2 | req 1 | 05 "lobby" | handle 0 | epoch 80 d0 95 ff bc 31 | seq 2a
    //   | recovered 01 | 1 member | 02 "al"
    assert_eq!(
        hex::encode(encode(&joined)),
        "150201056c6f6262790080d095ffbc312a010102616c"
    );

    let message = ServerFrame::Message {
        seq: 1,
        from: "al".into(),
        body: Bytes::from_static(&[0xff]),
        ts: 1_700_000_000_000,
    };
    // len 13 | tag 6 | seq 1 | len 2 "al" | len 1 ff | ts 1_700_000_000_000 = 80 d0 95 ff bc 31
    assert_eq!(
        hex::encode(encode(&message)),
        "0d060102616c01ff80d095ffbc31"
    );

    let recv = Datagram::Recv {
        handle: 128,
        from: String::new(),
        body: Bytes::new(),
    };
    // no prefix | tag 1 | 128 = 80 01 | "" = 00 | empty body = 00
    assert_eq!(hex::encode(encode_datagram(&recv)), "0180010000");
}

/// The Join/Joined vectors, worked out byte by byte rather than by the generator.
#[test]
fn join_and_joined_vectors_are_hand_checked() {
    const LOBBY: &str = "056c6f626279"; // len 5 "lobby"
    const EPOCH: &str = "80d095ffbc31"; // 1_700_000_000_000
    const MAX64: &str = "ffffffffffffffffff01"; // u64::MAX
    let client: &[(&str, String)] = &[
        // len 9 | tag 1 | req 1 | lobby | None
        ("join", format!("090101{LOBBY}00")),
        // len 16 | tag 1 | req 2 | lobby | Some | epoch | seq 0
        ("join_since_seq_zero", format!("100102{LOBBY}01{EPOCH}00")),
        // len 16 | tag 1 | req 3 | lobby | Some | epoch | seq 42
        ("join_since_42", format!("100103{LOBBY}01{EPOCH}2a")),
        // len 29 | tag 1 | req 4 | lobby | Some | epoch u64::MAX | seq u64::MAX
        ("join_since_max", format!("1d0104{LOBBY}01{MAX64}{MAX64}")),
        // len 11 | tag 1 | req 5 | lobby | Some | epoch 0 | seq 0
        ("join_since_epoch_zero", format!("0b0105{LOBBY}010000")),
        // len 17 | tag 1 | req u32::MAX = ff ff ff ff 0f | "r" | Some
        //   | epoch 1_700_000_300_000 = e0 f7 a7 ff bc 31 | seq 128 = 80 01
        (
            "join_req_max",
            "1101ffffffff0f017201e0f7a7ffbc318001".to_owned(),
        ),
    ];
    let server: &[(&str, String)] = &[
        // len 24 | tag 2 | req 1 | lobby | handle 0 | epoch | seq 0 | false | [alice]
        (
            "joined",
            format!("180201{LOBBY}00{EPOCH}00000105616c696365"),
        ),
        // len 28 | tag 2 | req 4 | lobby | handle 1 | epoch | seq 42 | true | [alice, bob]
        (
            "joined_recovered",
            format!("1c0204{LOBBY}01{EPOCH}2a010205616c69636503626f62"),
        ),
        // len 24 | tag 2 | req 5 | lobby | handle 2 | epoch 1_700_000_300_000 | seq 0
        //   | false | [alice]
        (
            "joined_new_epoch",
            format!("180205{LOBBY}02e0f7a7ffbc3100000105616c696365"),
        ),
        // len 37 | tag 2 | req 300 | len 9 "日本語" | handle 300 | epoch u64::MAX
        //   | seq u64::MAX | false | no members
        (
            "joined_no_members",
            format!("2502ac0209e697a5e69cace8aa9eac02{MAX64}{MAX64}0000"),
        ),
    ];
    for (file, expected) in [
        ("client_frames.json", client),
        ("server_frames.json", server),
    ] {
        let vectors = load_vectors(file);
        for (name, hex) in expected {
            let v = vectors
                .iter()
                .find(|v| v.name == *name)
                .unwrap_or_else(|| panic!("{file}: no vector {name}"));
            assert_eq!(&v.hex, hex, "{file} / {name}");
            let bytes = hex::decode(hex).unwrap();
            assert_eq!(bytes[0] as usize, bytes.len() - 1, "{name}: length prefix");
        }
    }
}

// ---------------------------------------------------------------------------------
// Vector generator (run by hand; see the top of this file)
// ---------------------------------------------------------------------------------

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn users_of(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| s(n)).collect()
}

fn at(epoch: u64, seq: u64) -> Option<Since> {
    Some(Since { epoch, seq })
}

/// A realistic epoch (a room created at 2023-11-14T22:13:20Z) and the next life of
/// the room, five minutes later.
const EPOCH: u64 = 1_700_000_000_000;
const NEXT_EPOCH: u64 = 1_700_000_300_000;

/// A JWT-shaped token of 167 bytes: a two-byte string length and a two-byte frame prefix.
const LONG_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMCwicm9vbXMiOlsibG9iYnkiLCJ0ZWFtLSoiXX0.Zm9yLXRlc3QtdmVjdG9ycy1vbmx5LW5vdC1hLXNpZ25hdHVyZQ";

// The case tables stay one vector per line.
#[rustfmt::skip]
fn client_cases() -> Vec<(String, ClientFrame)> {
    use ClientFrame::*;
    let cases = vec![
        ("hello", Hello { version: 1, token: s("abc") }),
        ("hello_empty_token", Hello { version: 1, token: s("") }),
        ("hello_long_token", Hello { version: 1, token: s(LONG_TOKEN) }),
        ("hello_version_max", Hello { version: u16::MAX, token: s("t") }),
        ("join", Join { req: 1, room: s("lobby"), since: None }),
        ("join_since_seq_zero", Join { req: 2, room: s("lobby"), since: at(EPOCH, 0) }),
        ("join_since_42", Join { req: 3, room: s("lobby"), since: at(EPOCH, 42) }),
        ("join_since_max", Join { req: 4, room: s("lobby"), since: at(u64::MAX, u64::MAX) }),
        ("join_since_epoch_zero", Join { req: 5, room: s("lobby"), since: at(0, 0) }),
        ("join_unicode_room", Join { req: 300, room: s("café/日本語/😀"), since: None }),
        ("join_req_max", Join { req: u32::MAX, room: s("r"), since: at(NEXT_EPOCH, 128) }),
        ("leave", Leave { req: 5, room: s("lobby") }),
        ("leave_empty_room", Leave { req: 0, room: s("") }),
        ("publish", Publish { req: 6, room: s("lobby"), body: b(b"hello") }),
        ("publish_empty_body", Publish { req: 7, room: s("lobby"), body: Bytes::new() }),
        ("publish_binary_body", Publish { req: 8, room: s("lobby"), body: b(&[0x00, 0x7f, 0x80, 0xff]) }),
        ("publish_body_128", Publish { req: 9, room: s("lobby"), body: (0..128u8).collect() }),
        ("online", Online { req: 10 }),
        ("online_req_two_bytes", Online { req: 128 }),
        ("ack_notification", AckNotification { req: 11, id: 1 }),
        ("ack_notification_large_id", AckNotification { req: 12, id: 1_700_000_000_000_001 }),
        ("refresh", Refresh { req: 13, token: s("eyJ.e30.sig") }),
        ("rpc", Rpc { req: 14, method: s("history.search"), body: b(br#"{"q":"hi"}"#) }),
        ("rpc_empty", Rpc { req: 0, method: s(""), body: Bytes::new() }),
        ("online_page_first", OnlinePage { req: 15, after: s(""), limit: 1000 }),
        ("online_page_after", OnlinePage { req: 16, after: s("zoë"), limit: 200 }),
        ("members_page", MembersPage { req: 17, room: s("lobby"), after: s("zoë"), limit: 1000 }),
    ];
    named(cases)
}

#[rustfmt::skip]
fn server_cases() -> Vec<(String, ServerFrame)> {
    use ServerFrame::*;
    let cases = vec![
        ("welcome", Welcome { session: 1, user: s("alice"), max_frame: 65536, online: None }),
        ("welcome_online_empty", Welcome { session: 2, user: s("alice"), max_frame: 65536, online: Some(vec![]) }),
        ("welcome_online", Welcome { session: 1_700_000_000_000, user: s("zoë"), max_frame: 1024, online: Some(users_of(&["alice", "bob", "zoë"])) }),
        ("ack", Ack { req: 6, seq: 1 }),
        ("ack_no_seq", Ack { req: 1, seq: 0 }),
        ("ack_large", Ack { req: 2_097_152, seq: 1_700_000_000_000 }),
        ("ack_max", Ack { req: u32::MAX, seq: u64::MAX }),
        ("joined", Joined { req: 1, room: s("lobby"), handle: 0, epoch: EPOCH, seq: 0, recovered: false, members: users_of(&["alice"]) }),
        ("joined_recovered", Joined { req: 4, room: s("lobby"), handle: 1, epoch: EPOCH, seq: 42, recovered: true, members: users_of(&["alice", "bob"]) }),
        ("joined_new_epoch", Joined { req: 5, room: s("lobby"), handle: 2, epoch: NEXT_EPOCH, seq: 0, recovered: false, members: users_of(&["alice"]) }),
        ("joined_no_members", Joined { req: 300, room: s("日本語"), handle: 300, epoch: u64::MAX, seq: u64::MAX, recovered: false, members: vec![] }),
        ("left", Left { req: 5, room: s("lobby") }),
        ("error", Error { req: 3, code: ErrorCode::NotJoined, message: s("not in room lobby") }),
        ("error_fatal", Error { req: 0, code: ErrorCode::Unauthorized, message: s("token expired") }),
        ("error_other_1000", Error { req: 0, code: ErrorCode::Other(1000), message: s("") }),
        ("room_stream", RoomStream { room: s("lobby"), handle: 0 }),
        ("room_stream_unicode", RoomStream { room: s("équipe/😀"), handle: 128 }),
        ("message", Message { seq: 1, from: s("alice"), body: b(b"hello"), ts: 1_700_000_000_000 }),
        ("message_empty_body", Message { seq: 2, from: s("server"), body: Bytes::new(), ts: 0 }),
        ("message_body_200", Message { seq: u64::MAX, from: s("😀"), body: (0..200u16).map(|i| (i * 7) as u8).collect(), ts: u64::MAX }),
        ("presence_join", PresenceJoin { user: s("bob") }),
        ("presence_leave", PresenceLeave { user: s("bob") }),
        ("presence_join_empty", PresenceJoin { user: s("") }),
        ("online", Online { req: 10, users: users_of(&["alice", "bob"]) }),
        ("online_empty", Online { req: 11, users: vec![] }),
        ("online_join", OnlineJoin { user: s("carol") }),
        ("online_leave", OnlineLeave { user: s("carol") }),
        ("broadcast", Broadcast { from: s("server"), body: b(b"maintenance at 10:00"), ts: 1_700_000_000_000 }),
        ("broadcast_empty", Broadcast { from: s(""), body: Bytes::new(), ts: 0 }),
        ("go_away", GoAway { message: s("shutting down") }),
        ("go_away_empty", GoAway { message: s("") }),
        ("notification", Notification { id: 1, kind: s("mention"), body: b(br#"{"room":"lobby"}"#), ts: 1_700_000_000_000 }),
        ("notification_empty", Notification { id: u64::MAX, kind: s(""), body: Bytes::new(), ts: 0 }),
        ("rpc_reply", RpcReply { req: 14, body: b(br#"{"hits":[]}"#) }),
        ("rpc_reply_empty", RpcReply { req: u32::MAX, body: Bytes::new() }),
        ("connect_info", ConnectInfo { data: b(br#"{"name":"Alice"}"#) }),
        ("connect_info_empty", ConnectInfo { data: Bytes::new() }),
        ("presence_batch", PresenceBatch { joins: users_of(&["carol", "dave"]), leaves: users_of(&["bob"]) }),
        ("presence_batch_empty", PresenceBatch { joins: vec![], leaves: vec![] }),
    ];
    let mut cases = named(cases);
    // One vector per known code, so a client's code table is pinned too.
    let names = [
        "protocol", "unauthorized", "forbidden", "unsupported_version", "frame_too_large",
        "rate_limited", "too_many_rooms", "invalid_room", "not_joined", "already_joined",
        "unknown_command", "slow_consumer", "going_away", "hello_timeout",
        "too_many_sessions", "internal", "token_expired", "rejected", "backend_unavailable",
    ];
    for (name, code) in names.iter().zip(KNOWN_CODES) {
        cases.push((format!("error_code_{name}"), Error { req: 0, code, message: s("") }));
    }
    cases
}

#[rustfmt::skip]
fn datagram_cases() -> Vec<(String, Datagram)> {
    use Datagram::*;
    let cases = vec![
        ("send", Send { handle: 0, body: b(&[1, 2, 3]) }),
        ("send_empty", Send { handle: 1, body: Bytes::new() }),
        ("send_handle_max", Send { handle: u32::MAX, body: b(b"x") }),
        ("send_body_200", Send { handle: 128, body: (0..200u16).map(|i| (255 - i) as u8).collect() }),
        ("recv", Recv { handle: 0, from: s("alice"), body: b(b"typing") }),
        ("recv_unicode", Recv { handle: 300, from: s("zoë 😀"), body: b(&[0xff]) }),
        ("recv_empty", Recv { handle: 1, from: s(""), body: Bytes::new() }),
    ];
    named(cases)
}

fn named<T>(cases: Vec<(&str, T)>) -> Vec<(String, T)> {
    cases.into_iter().map(|(n, f)| (n.to_owned(), f)).collect()
}

fn render<N: serde::Serialize, T: serde::Serialize>(
    cases: &[(N, T)],
    encode: impl Fn(&T) -> Vec<u8>,
) -> String {
    let lines: Vec<String> = cases
        .iter()
        .map(|(name, frame)| {
            format!(
                "  {{\"name\": {}, \"frame\": {}, \"hex\": {}}}",
                serde_json::to_string(name).unwrap(),
                serde_json::to_string(frame).unwrap(),
                serde_json::to_string(&hex::encode(encode(frame))).unwrap()
            )
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

#[test]
#[ignore = "generates tests/vectors/*.json; run by hand"]
fn generate_vectors() {
    let files = [
        (
            "client_frames.json",
            render(&client_cases(), |f| frame_bytes(f).to_vec()),
        ),
        (
            "server_frames.json",
            render(&server_cases(), |f| frame_bytes(f).to_vec()),
        ),
        (
            "datagrams.json",
            render(&datagram_cases(), |d| encode_datagram(d).to_vec()),
        ),
    ];
    match std::env::var("WTGATE_VECTORS_OUT") {
        Ok(dir) => {
            for (file, text) in files {
                let path = format!("{dir}/{file}");
                std::fs::write(&path, text).unwrap_or_else(|e| panic!("{path}: {e}"));
                eprintln!("wrote {path}");
            }
        }
        Err(_) => {
            for (file, text) in files {
                println!("== {file}\n{text}");
            }
        }
    }
}
