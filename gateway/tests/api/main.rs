//! API tests against a real sequencer, store, projector and HTTP server.

mod harness;
mod http;
mod wallet;
mod websocket;
