//! tandem: the one binary. Command line, configuration, and the wiring of matching, journal,
//! store and gateway into a node (`node`), plus the demo (`demo`), the operator's journal tools
//! (`journal_cli`), the HTTP load tool (`bench_http`) and the user's wallet (`wallet`).

pub mod bench_http;
pub mod client;
pub mod cosigner;
pub mod custody_cli;
pub mod demo;
pub mod demo_wallets;
pub mod deposits;
pub mod journal_cli;
pub mod journal_port;
pub mod mpc_link;
pub mod node;
pub mod provider;
pub mod replay;
pub mod wallet;
