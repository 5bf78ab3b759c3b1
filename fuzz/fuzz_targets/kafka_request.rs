//! Arbitrary bytes as a Kafka request stream and as single request frames: split into frames
//! with a 1 MiB limit, peek each header and decode each request; re-encode what decodes and
//! decode that again. Property: no panic, no abort, no allocation by an unchecked length, and
//! a decoded request re-encodes to something that decodes to the same value. The same bytes go
//! to the embedded consumer protocol's decoders too (a consumer's subscription in its JoinGroup
//! metadata, an assignment in SyncGroup), with the same properties.
//! Seeds: the real clients' frames in `tests/fixtures/kafka-corpus/` (as they are, or with a
//! 4-byte big-endian length prepended).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use weir::protocol::kafka::embedded::{self, Subscription, SUBSCRIPTION_VERSION};
use weir::protocol::kafka::{decode_request, encode_request, peek_header, FrameDecoder};

fn check_embedded(bytes: Bytes) {
    if let Ok(s) = embedded::decode_subscription(bytes.clone()) {
        let again = embedded::decode_subscription(embedded::encode_subscription(&s))
            .expect("a decoded subscription re-encodes");
        // (A version above the highest known is written as the highest known.)
        let version = s.version.min(SUBSCRIPTION_VERSION);
        assert_eq!(again, Subscription { version, ..s });
    }
    if let Ok(a) = embedded::decode_assignment(bytes) {
        let again = embedded::decode_assignment(embedded::encode_assignment(0, &a))
            .expect("a decoded assignment re-encodes");
        assert_eq!(again, a);
    }
}

fn check(frame: Bytes) {
    let _ = peek_header(&frame);
    if let Ok((header, request)) = decode_request(frame) {
        let encoded = encode_request(&header, &request).expect("a decoded request re-encodes");
        let (h2, r2) = decode_request(encoded.freeze()).expect("its encoding decodes");
        assert_eq!((h2, r2), (header, request));
    }
}

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        check(frame);
    }
    check(Bytes::copy_from_slice(data));
    check_embedded(Bytes::copy_from_slice(data));
});
