//! The MQTT front door's packet decoding (`meshward_mqtt::codec`): what a gateway reads from
//! any client on its MQTT port, before and after authentication, the custody grants other
//! gateways forward (`Request::Custody`'s JSON), and sealed mode's frames and login tokens
//! (`meshward_sdk::sealed`: request frames and tokens the gateway reads, reply and mail frames a
//! device reads).
//!
//! Checks: no input panics the CONNECT reader, the 3.1.1 or 5 packet reader (read repeatedly
//! over the buffer, as the listener does), the grant parser and its shape check, or the sealed
//! frame and token parsers; a packet read never consumes more than the buffer held; a PUBLISH
//! the encoder writes reads back the same; a frame that decodes re-encodes to exactly the input,
//! and a token that parses prints as text that parses to the same token. The first input byte
//! picks the decoder.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshward_core::codec::Encode;
use meshward_mqtt::codec::{self, Inbound, Qos, Version};
use meshward_sdk::sealed::{self, LoginToken};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let mut b = BytesMut::from(rest);
            let _ = codec::read_connect(&mut b, MAX);
        }
        1 | 2 => {
            let v = if which % 4 == 1 {
                Version::V311
            } else {
                Version::V5
            };
            let mut b = BytesMut::from(rest);
            let mut left = b.len();
            while let Ok(Some(p)) = codec::read(v, &mut b, MAX) {
                assert!(b.len() < left, "a packet was read without consuming bytes");
                left = b.len();
                if let Inbound::Publish {
                    topic,
                    qos: Some(q),
                    pkid,
                    payload,
                    ..
                } = p
                {
                    // What the server would send back on this topic reads back the same.
                    let pkid = if q == Qos::AtMostOnce { 0 } else { pkid };
                    let mut out = BytesMut::new();
                    codec::publish(v, &topic, q, pkid, payload.clone(), Vec::new(), &mut out);
                    if let Ok(Some(Inbound::Publish {
                        topic: t2,
                        payload: p2,
                        ..
                    })) = codec::read(v, &mut out, usize::MAX)
                    {
                        assert_eq!((t2, p2), (topic, payload));
                    }
                }
            }
        }
        3 => {
            if let Ok(g) = serde_json::from_slice::<meshward_sdk::custody::Grant>(rest) {
                let _ = g.check_shape("meshward-fuzz", |_| Ok(()));
                let _ = g.signing_bytes();
            }
        }
        4 => {
            if let Ok((id, req)) = sealed::parse_request(rest) {
                assert_eq!(sealed::request_frame(id, &req), rest);
            }
            if let Some(t) = std::str::from_utf8(rest).ok().and_then(LoginToken::parse) {
                assert_eq!(LoginToken::parse(&t.to_text()), Some(t));
            }
        }
        _ => match sealed::parse_inbound(rest) {
            Ok(sealed::Inbound::Mail { number, envelope }) => {
                assert_eq!(sealed::mail_frame(number, &envelope.to_bytes()), rest);
            }
            Ok(r @ sealed::Inbound::Reply { id, .. }) => {
                if let Some(Ok(resp)) = r.response() {
                    assert_eq!(sealed::reply_frame(id, &resp), rest);
                }
            }
            Err(_) => {}
        },
    }
});
