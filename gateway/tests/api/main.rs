//! API tests against a real sequencer, store, projector and HTTP server.

mod binance;
mod binance_streams;
mod harness;
mod http;
mod mpc;
mod openapi;
mod wallet;
mod websocket;
