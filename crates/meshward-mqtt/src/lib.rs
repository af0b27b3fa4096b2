//! Meshward's MQTT front door, without the gateway: the packet codec for MQTT 3.1.1 and 5 (on
//! rumqttc's `mqttbytes`, never a hand-written one), Meshward's topics, password hashes and
//! failed-login limits, and the listener that drives each session against a [`Backend`]
//! (implemented by the gateway, `meshward-node`'s `mqtt` module: custody, sealing, anchoring,
//! live revocation).
//!
//! Secure by default: no anonymous CONNECT (a user name and a password are required), passwords
//! only as argon2id hashes, failed logins limited per address and per user name, every queue
//! and packet bounded (see [`server::Limits`]).

pub mod auth;
pub mod codec;
pub mod server;
pub mod topic;

pub use server::{serve, Accepted, Backend, BoxFuture, Limits, Login, Push, SessionHandle};
