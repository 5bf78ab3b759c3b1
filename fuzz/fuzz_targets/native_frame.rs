//! Arbitrary bytes as a native-protocol byte stream: split into frames with a 1 MiB limit and
//! decode each as a request and as a response. Property: no panic, no abort, no allocation by an
//! unchecked length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weir::protocol::native::{decode_body, FrameDecoder, Request, Response};

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let _ = decode_body::<Request>(&frame);
        let _ = decode_body::<Response>(&frame);
    }
    let _ = decode_body::<Request>(data);
});
