//! The MQTT front door's packet decoding (`meshward_mqtt::codec`): what a gateway reads from
//! any client on its MQTT port, before and after authentication, and the custody grants other
//! gateways forward (`Request::Custody`'s JSON).
//!
//! Checks: no input panics the CONNECT reader, the 3.1.1 or 5 packet reader (read repeatedly
//! over the buffer, as the listener does), or the grant parser and its shape check; a packet
//! read never consumes more than the buffer held; a PUBLISH the encoder writes reads back the
//! same. The first input byte picks the decoder.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshward_mqtt::codec::{self, Inbound, Qos, Version};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
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
        _ => {
            if let Ok(g) = serde_json::from_slice::<meshward_sdk::custody::Grant>(rest) {
                let _ = g.check_shape("meshward-fuzz", |_| Ok(()));
                let _ = g.signing_bytes();
            }
        }
    }
});
