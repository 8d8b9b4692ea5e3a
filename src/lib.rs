//! tandem: the one binary. Command line, configuration, and the wiring of matching, journal,
//! store and gateway into a node (`node`), plus the demo (`demo`), the operator's journal tools
//! (`journal_cli`), the HTTP load tool (`bench_http`) and the user's wallet (`wallet`); with a
//! shared journal, the settlement leader's turns among replicas (`leadership`).

pub mod bench_http;
pub mod bench_settlement;
pub mod client;
pub mod config_file;
pub mod cosigner;
pub mod custodian;
pub mod custody_cli;
pub mod demo;
pub mod demo_wallets;
pub mod deposits;
pub mod settlement;
pub mod shared_journal;
pub mod journal_cli;
pub mod journal_port;
pub mod market_data;
pub mod leadership;
pub mod mpc_link;
pub mod node;
pub mod obligations;
pub mod process;
pub mod provider;
pub mod replay;
pub mod wallet;

/// A Bitcoin network as people write it: `bitcoin` / `main` / `mainnet`, `testnet`, `signet`,
/// `regtest` (Bitcoin Core's names and rust-bitcoin's both work).
pub fn parse_network(name: &str) -> anyhow::Result<bitcoin::Network> {
    let name = name.trim().to_ascii_lowercase();
    let parsed = match name.as_str() {
        "mainnet" => Ok(bitcoin::Network::Bitcoin),
        other => bitcoin::Network::from_core_arg(other).or_else(|_| other.parse::<bitcoin::Network>()),
    };
    parsed.map_err(|_| anyhow::anyhow!("unknown Bitcoin network {name:?}: use bitcoin, testnet, signet or regtest"))
}

#[cfg(test)]
mod network_tests {
    #[test]
    fn networks_parse_by_either_name() {
        use bitcoin::Network::*;
        for (s, n) in [("bitcoin", Bitcoin), ("main", Bitcoin), ("mainnet", Bitcoin), ("regtest", Regtest), ("Signet", Signet)] {
            assert_eq!(super::parse_network(s).unwrap(), n, "{s}");
        }
        assert!(super::parse_network("moon").is_err());
    }
}
