//! The OpenAPI 3.0 document a gateway serves at `GET /v1/openapi.json`.
//!
//! Two parts, joined at run time: the paths, parameters, status codes and prose
//! (`openapi_template.json`, written by hand), and `components.schemas`, generated from the
//! [`crate::types`] the server serialises and clients deserialise. `servers` names the node
//! that serves the document. Tests check that every route of [`crate::ROUTES`] is described,
//! that every `$ref` resolves, and that each route's success schema is the type its client
//! method returns.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::types;

/// The hand-written part of the document.
const TEMPLATE: &str = include_str!("openapi_template.json");

/// The generated schemas, by component name.
pub fn schemas() -> Map<String, Value> {
    let mut g = SchemaSettings::openapi3().into_generator();
    fn add<T: JsonSchema>(g: &mut schemars::SchemaGenerator) {
        g.subschema_for::<T>();
    }
    add::<types::ErrorBody>(&mut g);
    add::<types::Status>(&mut g);
    add::<types::Block>(&mut g);
    add::<types::Tx>(&mut g);
    add::<types::TxSubmit>(&mut g);
    add::<types::TxSubmitted>(&mut g);
    add::<types::TxBatchResult>(&mut g);
    add::<types::TxStatus>(&mut g);
    add::<types::Challenge>(&mut g);
    add::<types::MailboxFetchRequest>(&mut g);
    add::<types::MailboxFetchResponse>(&mut g);
    add::<types::MailboxAckRequest>(&mut g);
    add::<types::MailboxAckResponse>(&mut g);
    add::<types::Device>(&mut g);
    add::<types::DeviceList>(&mut g);
    add::<types::Group>(&mut g);
    add::<types::AnchorLocation>(&mut g);
    add::<types::ProofFileSchema>(&mut g);
    add::<types::Event>(&mut g);
    add::<types::Policy>(&mut g);
    add::<types::ValidatorList>(&mut g);
    add::<crate::console::Console>(&mut g);
    add::<crate::console::Audit>(&mut g);
    add::<crate::console::RevokeRequest>(&mut g);
    add::<crate::console::TicketRequest>(&mut g);
    add::<crate::console::AdminDone>(&mut g);
    add::<crate::console::TicketIssued>(&mut g);
    add::<types::MqttCustody>(&mut g);
    g.take_definitions(true)
}

/// The whole document, with `server` (e.g. `http://127.0.0.1:7700`) as its one server.
pub fn document(server: &str) -> Value {
    let mut doc: Value =
        serde_json::from_str(TEMPLATE).expect("the OpenAPI template is valid JSON (tested)");
    doc["servers"] = serde_json::json!([{ "url": server }]);
    doc["components"]["schemas"] = Value::Object(schemas());
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        if let Some(s) = x.as_str() {
                            out.push(s.to_string());
                        }
                    }
                    refs(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document("http://127.0.0.1:7700");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 30, "{all:?}");
        for r in all {
            let path = r.strip_prefix("#/").unwrap_or_else(|| panic!("{r}"));
            let mut at = &doc;
            for part in path.split('/') {
                at = at
                    .get(part)
                    .unwrap_or_else(|| panic!("{r} does not resolve"));
            }
        }
    }

    #[test]
    fn every_route_is_described_with_its_success_schema() {
        let doc = document("http://x");
        for r in crate::ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} is not in the document",
                r.method,
                r.path
            );
            let ok = &op["responses"]["200"]["content"];
            if let Some(schema) = r.response {
                assert_eq!(
                    ok["application/json"]["schema"]["$ref"],
                    format!("#/components/schemas/{schema}"),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
        // And nothing is described that the router does not serve.
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method == "parameters" {
                    continue;
                }
                assert!(
                    crate::ROUTES
                        .iter()
                        .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                    "{method} {path} is described but not routed"
                );
            }
        }
    }

    #[test]
    fn servers_name_the_serving_node() {
        let doc = document("http://10.0.0.7:7700");
        assert_eq!(doc["servers"][0]["url"], "http://10.0.0.7:7700");
    }

    #[test]
    fn bodies_and_ids_carry_their_patterns() {
        let doc = document("http://127.0.0.1:7700");
        let body = &doc["paths"]["/v1/tx"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(body["schema"]["$ref"], "#/components/schemas/TxSubmit");
        // An empty transaction does not match: at least one hex byte.
        let tx = doc["components"]["schemas"]["TxSubmit"]["properties"]["tx"]["pattern"]
            .as_str()
            .unwrap();
        assert_eq!(tx, "^([0-9a-f]{2})+$");
        let peer = "^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$";
        for (schema, field) in [("Device", "id"), ("Device", "sign_key"), ("Tx", "signer")] {
            assert_eq!(
                doc["components"]["schemas"][schema]["properties"][field]["pattern"], peer,
                "{schema}.{field}"
            );
        }
        let txs = doc["paths"]["/v1/txs"]["post"]["description"]
            .as_str()
            .unwrap();
        assert!(txs.contains("u32 count"), "{txs}");
    }
}
