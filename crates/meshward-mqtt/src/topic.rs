//! Meshward's MQTT topics (FORMATS.md, "MQTT front door").
//!
//! | topic | direction | meaning |
//! |---|---|---|
//! | `meshward/v1/to/<device-id>` | publish | send the payload to that device (peer id form) |
//! | `meshward/v1/group/<name>` | publish | send the payload to every member of a group |
//! | `meshward/v1/inbox` | subscribe | messages addressed to this device: the plaintext, with MQTT 5 user properties `from` and `commitment` |
//! | `meshward/v1/receipts` | subscribe | `{"commitment":"<hex>","height":N}` once a message this device sent is final |
//! | `meshward/v1/sealed` | publish | sealed mode only: a request frame of a device holding its own keys (`meshward_sdk::sealed`); replies and mail come on the inbox |
//!
//! Wildcards are not offered: a subscription names one of the two topics exactly.

/// The prefix of every topic.
pub const PREFIX: &str = "meshward/v1/";
/// Messages for this device.
pub const INBOX: &str = "meshward/v1/inbox";
/// Receipts of this device's messages once final.
pub const RECEIPTS: &str = "meshward/v1/receipts";
/// Sealed mode's requests.
pub const SEALED: &str = "meshward/v1/sealed";

/// Where a PUBLISH goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device, by its peer id (as text; the caller parses it).
    Device(String),
    /// A group, by name (as text; the caller checks it).
    Group(String),
    /// A sealed-mode request frame.
    Sealed,
}

/// What a subscription is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `meshward/v1/inbox`.
    Inbox,
    /// `meshward/v1/receipts`.
    Receipts,
}

impl Feed {
    /// Its topic.
    pub fn topic(self) -> &'static str {
        match self {
            Feed::Inbox => INBOX,
            Feed::Receipts => RECEIPTS,
        }
    }
}

/// The target of a publish topic, or `None` if it is not one this server routes.
pub fn target(topic: &str) -> Option<Target> {
    if topic == SEALED {
        return Some(Target::Sealed);
    }
    let rest = topic.strip_prefix(PREFIX)?;
    let (kind, name) = rest.split_once('/')?;
    if name.is_empty() || name.contains(['/', '+', '#']) {
        return None;
    }
    match kind {
        "to" => Some(Target::Device(name.to_string())),
        "group" => Some(Target::Group(name.to_string())),
        _ => None,
    }
}

/// The feed a subscription filter names, or `None`.
pub fn feed(filter: &str) -> Option<Feed> {
    match filter {
        INBOX => Some(Feed::Inbox),
        RECEIPTS => Some(Feed::Receipts),
        _ => None,
    }
}

/// The JSON receipt published on [`RECEIPTS`].
pub fn receipt_json(commitment_hex: &str, height: u64) -> String {
    format!("{{\"commitment\":\"{commitment_hex}\",\"height\":{height}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_and_strangers_do_not() {
        assert_eq!(
            target("meshward/v1/to/12D3KooWabc"),
            Some(Target::Device("12D3KooWabc".into()))
        );
        assert_eq!(
            target("meshward/v1/group/sensors"),
            Some(Target::Group("sensors".into()))
        );
        for bad in [
            "meshward/v1/to/",
            "meshward/v1/to/a/b",
            "meshward/v1/to/+",
            "meshward/v1/inbox",
            "meshward/v2/to/x",
            "other/to/x",
            "meshward/v1/sealed/x",
        ] {
            assert_eq!(target(bad), None, "{bad}");
        }
        assert_eq!(target("meshward/v1/sealed"), Some(Target::Sealed));
        assert_eq!(feed("meshward/v1/inbox"), Some(Feed::Inbox));
        assert_eq!(feed("meshward/v1/receipts"), Some(Feed::Receipts));
        assert_eq!(feed("meshward/v1/#"), None);
        assert_eq!(receipt_json("ab", 7), r#"{"commitment":"ab","height":7}"#);
    }
}
