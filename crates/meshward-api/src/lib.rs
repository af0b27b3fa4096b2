//! The Meshward gateway's HTTP API, as a contract: the routes ([`ROUTES`]), the JSON bodies
//! ([`types`]), the OpenAPI document generated from them ([`openapi`]), and, with the `client`
//! feature (on by default), a typed blocking client ([`client::ApiClient`]).
//!
//! The gateway (`meshward-node`) builds its router from [`ROUTES`] and answers with these
//! types; the CLI, the devnet, the benchmark and the SDK call it through [`client::ApiClient`],
//! which parses the same types. A change to a body therefore changes server, client and
//! document together, and a route cannot be served without being described (tested).
//!
//! ```
//! use meshward_api::{types::Status, ROUTES};
//! assert!(ROUTES.iter().any(|r| r.method == "GET" && r.path == "/v1/status"));
//! let s: Status = serde_json::from_str(r#"{"chain_id":"fleet","height":3,"last_block_hash":null,
//!     "last_block_time":null,"peers":2,"validators":4,"is_validator":true,"mempool_size":0,
//!     "peer_id":"12D3KooW","mesh_addrs":[]}"#).unwrap();
//! assert_eq!(s.height, 3);
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;

use schemars::JsonSchema;

#[cfg(feature = "client")]
pub mod client;
pub mod console;
pub mod openapi;
pub mod types;

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path template, e.g. `/v1/blocks/{height}`.
    pub path: &'static str,
    /// The schema name of its JSON success body (`None`: not JSON, or not one of ours).
    pub response: Option<&'static str>,
}

const fn route(method: &'static str, path: &'static str, response: Option<&'static str>) -> Route {
    Route {
        method,
        path,
        response,
    }
}

/// Every route the API serves. The router is built from this list, the OpenAPI document must
/// describe each entry with the success schema named here, and each name is the schema of the
/// type the client parses for it (all tested).
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/status", Some("Status")),
    route("GET", "/v1/blocks/{height}", Some("Block")),
    route("POST", "/v1/tx", Some("TxSubmitted")),
    route("POST", "/v1/txs", Some("TxBatchResult")),
    route("GET", "/v1/tx/{hash}", Some("TxStatus")),
    route("GET", "/v1/tx/{hash}/proof", Some("ProofFile")),
    route("GET", "/metrics", None),
    route("GET", "/v1/openapi.json", None),
    route("GET", "/v1/events", None),
    route("POST", "/v1/challenge", Some("Challenge")),
    route("POST", "/v1/enroll", Some("TxSubmitted")),
    route("POST", "/v1/mailbox/fetch", Some("MailboxFetchResponse")),
    route("POST", "/v1/mailbox/ack", Some("MailboxAckResponse")),
    route("GET", "/v1/devices", Some("DeviceList")),
    route("GET", "/v1/devices/{id}", Some("Device")),
    route("GET", "/v1/groups/{name}", Some("Group")),
    route("GET", "/v1/anchors/{commitment}", Some("AnchorLocation")),
    route("GET", "/v1/anchors/{commitment}/proof", Some("ProofFile")),
    route("GET", "/v1/policy", Some("Policy")),
    route("GET", "/v1/validators", Some("ValidatorList")),
    route("GET", "/v1/console", Some("Console")),
    route("GET", "/v1/audit", Some("Audit")),
    route("POST", "/v1/admin/revoke", Some("AdminDone")),
    route("POST", "/v1/admin/ticket", Some("TicketIssued")),
    route("POST", "/v1/mqtt/devices", Some("MqttCustody")),
    route("GET", "/", None),
    route("GET", "/assets/{file}", None),
];

/// The schema name of `T`, as the OpenAPI document's components name it.
pub fn schema_name<T: JsonSchema>() -> Cow<'static, str> {
    T::schema_name()
}

#[cfg(test)]
mod tests {
    use super::types::*;
    use super::*;

    /// The names in [`ROUTES`] are the schemas of the types the server returns and the client
    /// parses for those routes.
    #[test]
    fn route_schemas_are_the_response_types() {
        let want: &[(&str, Cow<'static, str>)] = &[
            ("/v1/status", schema_name::<Status>()),
            ("/v1/blocks/{height}", schema_name::<Block>()),
            ("/v1/tx", schema_name::<TxSubmitted>()),
            ("/v1/txs", schema_name::<TxBatchResult>()),
            ("/v1/tx/{hash}", schema_name::<TxStatus>()),
            ("/v1/tx/{hash}/proof", schema_name::<ProofFileSchema>()),
            ("/v1/challenge", schema_name::<Challenge>()),
            ("/v1/enroll", schema_name::<TxSubmitted>()),
            ("/v1/mailbox/fetch", schema_name::<MailboxFetchResponse>()),
            ("/v1/mailbox/ack", schema_name::<MailboxAckResponse>()),
            ("/v1/devices", schema_name::<DeviceList>()),
            ("/v1/devices/{id}", schema_name::<Device>()),
            ("/v1/groups/{name}", schema_name::<Group>()),
            ("/v1/anchors/{commitment}", schema_name::<AnchorLocation>()),
            (
                "/v1/anchors/{commitment}/proof",
                schema_name::<ProofFileSchema>(),
            ),
            ("/v1/policy", schema_name::<Policy>()),
            ("/v1/validators", schema_name::<ValidatorList>()),
            ("/v1/console", schema_name::<crate::console::Console>()),
            ("/v1/audit", schema_name::<crate::console::Audit>()),
            (
                "/v1/admin/revoke",
                schema_name::<crate::console::AdminDone>(),
            ),
            (
                "/v1/admin/ticket",
                schema_name::<crate::console::TicketIssued>(),
            ),
            ("/v1/mqtt/devices", schema_name::<MqttCustody>()),
        ];
        for (path, name) in want {
            let r = ROUTES.iter().find(|r| r.path == *path).unwrap();
            assert_eq!(r.response, Some(name.as_ref()), "{path}");
        }
        let generated = openapi::schemas();
        for r in ROUTES {
            if let Some(name) = r.response {
                assert!(generated.contains_key(name), "{name} is not generated");
            }
        }
    }
}
