//! The production chain adapter: Bitcoin Core's JSON-RPC over HTTP/1.1.
//!
//! Owns the RPC transport (one short-lived connection per call, basic auth from a user and
//! password or from the node's cookie file), the mapping of RPC answers to the port's
//! types, and a few ops/test helpers that are not part of the port (`generate_to`,
//! `invalidate_block`, `reconsider_block`, `stop`). Blocks and transactions travel as
//! consensus-encoded hex, never as bitcoind's JSON rendering. Transaction status needs the
//! node to run with `-txindex`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bitcoin::consensus::encode;
use bitcoin::{
    Address, Amount, Block, BlockHash, FeeRate, Network, OutPoint, Script, ScriptBuf, Transaction, TxOut, Txid,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{BlockRef, Chain, ChainError, Result, TxStatus, Utxo};

// Bitcoin Core RPC error codes (src/rpc/protocol.h) that carry meaning for the port.
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_INVALID_PARAMETER: i64 = -8;
const RPC_VERIFY_ERROR: i64 = -25;
const RPC_VERIFY_REJECTED: i64 = -26;
const RPC_VERIFY_ALREADY_IN_CHAIN: i64 = -27;

/// How to authenticate to the node.
#[derive(Debug, Clone)]
pub enum BitcoindAuth {
    UserPass {
        user: String,
        password: String,
    },
    /// The `.cookie` file bitcoind writes in its datadir; read on every call so a node
    /// restart (which rotates the cookie) needs no reconnect.
    CookieFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BitcoindConfig {
    /// `http://host:port` (a path such as `/wallet/x` is kept).
    pub url: String,
    pub auth: BitcoindAuth,
    /// The chain the node must run; checked at connect.
    pub network: Network,
    /// Returned by `fee_rate` when `estimatesmartfee` has no estimate (always the case on a
    /// fresh regtest chain).
    pub fallback_fee_rate: FeeRate,
    /// Upper bound for one RPC round trip (raise it for `utxos` on mainnet, where
    /// `scantxoutset` reads the whole UTXO set and takes minutes).
    pub timeout: Duration,
}

impl BitcoindConfig {
    pub fn new(url: impl Into<String>, auth: BitcoindAuth, network: Network) -> Self {
        BitcoindConfig {
            url: url.into(),
            auth,
            network,
            fallback_fee_rate: FeeRate::from_sat_per_vb_u32(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A connected bitcoind.
#[derive(Debug)]
pub struct Bitcoind {
    config: BitcoindConfig,
    /// `host:port` to dial and to send as `Host`.
    authority: String,
    path: String,
    next_id: AtomicU64,
    /// bitcoind runs one `scantxoutset` at a time and refuses a second with "Scan already in
    /// progress"; callers in this process queue here instead of failing.
    scan: tokio::sync::Mutex<()>,
}

impl Bitcoind {
    /// Parses the URL, then checks that the node answers and runs the configured network.
    pub async fn connect(config: BitcoindConfig) -> Result<Self> {
        let node = Self::new_unchecked(config)?;
        let info = node.call("getblockchaininfo", json!([])).await?;
        let chain = info["chain"].as_str().ok_or_else(|| decode("getblockchaininfo.chain"))?;
        if chain != node.config.network.to_core_arg() {
            return Err(ChainError::NetworkMismatch { configured: node.config.network, node: chain.to_string() });
        }
        Ok(node)
    }

    /// Builds the client without contacting the node (for waiting on a starting node).
    pub fn new_unchecked(config: BitcoindConfig) -> Result<Self> {
        let uri: hyper::Uri =
            config.url.parse().map_err(|e| ChainError::InvalidRequest(format!("bad RPC url {}: {e}", config.url)))?;
        if uri.scheme_str() != Some("http") {
            return Err(ChainError::InvalidRequest(format!("RPC url {} must be http://", config.url)));
        }
        let host =
            uri.host().ok_or_else(|| ChainError::InvalidRequest(format!("RPC url {} has no host", config.url)))?;
        let port = uri.port_u16().unwrap_or(default_rpc_port(config.network));
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok(Bitcoind { authority: format!("{host}:{port}"), path, config, next_id: AtomicU64::new(1), scan: tokio::sync::Mutex::new(()) })
    }

    /// `scantxoutset start`, one at a time from this process; a scan started by another client
    /// of the same node (RPC error -8) is waited out for up to the call timeout.
    async fn scan_txout_set(&self, descriptors: Vec<Value>) -> Result<Value> {
        const SCAN_IN_PROGRESS: i64 = -8;
        let _one_at_a_time = self.scan.lock().await;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            match self.call("scantxoutset", json!(["start", descriptors.clone()])).await {
                Err(ChainError::Rpc { code: SCAN_IN_PROGRESS, ref message, .. })
                    if message.contains("in progress") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    pub fn config(&self) -> &BitcoindConfig {
        &self.config
    }

    fn auth_header(&self) -> Result<String> {
        let credentials = match &self.config.auth {
            BitcoindAuth::UserPass { user, password } => format!("{user}:{password}"),
            BitcoindAuth::CookieFile(path) => std::fs::read_to_string(path)
                .map_err(|e| ChainError::Transport(format!("cannot read cookie file {}: {e}", path.display())))?
                .trim()
                .to_string(),
        };
        Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)))
    }

    /// One HTTP POST with a JSON body; returns the HTTP status and the body.
    async fn post(&self, body: Vec<u8>) -> Result<(hyper::StatusCode, Bytes)> {
        let round_trip = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| ChainError::Transport(format!("connect {}: {e}", self.authority)))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ChainError::Transport(format!("handshake {}: {e}", self.authority)))?;
            // The connection task ends when the response is read and the sender dropped.
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "bitcoind RPC connection closed with error");
                }
            });
            let request = Request::post(self.path.as_str())
                .header(hyper::header::HOST, self.authority.as_str())
                .header(hyper::header::AUTHORIZATION, self.auth_header()?)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| ChainError::Transport(format!("build request: {e}")))?;
            let response =
                sender.send_request(request).await.map_err(|e| ChainError::Transport(format!("send request: {e}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ChainError::Transport(format!("read response: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.timeout, round_trip).await.map_err(|_| {
            ChainError::Transport(format!("no answer from {} within {:?}", self.authority, self.config.timeout))
        })?
    }

    /// Calls one RPC method and returns its `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params}))
            .map_err(|e| ChainError::Transport(format!("encode {method} request: {e}")))?;
        let (status, body) = self.post(body).await?;
        if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
            return Err(ChainError::Transport(format!("{method}: RPC credentials refused (HTTP {status})")));
        }
        // bitcoind answers RPC errors with HTTP 500/404 and a JSON-RPC body; only a body that
        // is not JSON-RPC is a transport failure.
        let reply: Value = serde_json::from_slice(&body).map_err(|_| {
            ChainError::Transport(format!(
                "{method}: HTTP {status} with a non-JSON body: {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        rpc_result(method, reply)
    }

    /// Calls one method once per parameter list in a single JSON-RPC batch; the answers come
    /// back in the order of `params`.
    async fn call_batch(&self, method: &str, params: Vec<Value>) -> Result<Vec<Result<Value>>> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let first_id = self.next_id.fetch_add(params.len() as u64, Ordering::Relaxed);
        let requests: Vec<Value> = params
            .into_iter()
            .enumerate()
            .map(|(i, p)| json!({"jsonrpc": "1.0", "id": first_id + i as u64, "method": method, "params": p}))
            .collect();
        let count = requests.len();
        let body = serde_json::to_vec(&requests).map_err(|e| ChainError::Transport(format!("encode batch: {e}")))?;
        let (status, body) = self.post(body).await?;
        let replies: Vec<Value> = serde_json::from_slice(&body).map_err(|_| {
            ChainError::Transport(format!(
                "{method} batch: HTTP {status} with a non-batch body: {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        let mut ordered: Vec<Option<Result<Value>>> = (0..count).map(|_| None).collect();
        for reply in replies {
            let slot = reply["id"].as_u64().and_then(|id| id.checked_sub(first_id)).map(|i| i as usize);
            match slot.and_then(|i| ordered.get_mut(i)) {
                Some(slot) => *slot = Some(rpc_result(method, reply)),
                None => return Err(decode(&format!("{method} batch reply with an unknown id"))),
            }
        }
        ordered
            .into_iter()
            .map(|r| r.ok_or_else(|| decode(&format!("{method} batch reply missing an answer"))))
            .collect()
    }

    /// Mines `blocks` blocks paying their coinbase to `script` (regtest only): through
    /// `generatetoaddress` when the script has an address form, else `generatetodescriptor`.
    pub async fn generate_to(&self, script: &Script, blocks: u32) -> Result<Vec<BlockHash>> {
        let reply = match Address::from_script(script, self.config.network) {
            Ok(address) => self.call("generatetoaddress", json!([blocks, address.to_string()])).await?,
            Err(_) => self.call("generatetodescriptor", json!([blocks, raw_descriptor(script)])).await?,
        };
        let hashes = reply.as_array().ok_or_else(|| decode("generatetoaddress result"))?;
        hashes.iter().map(|h| parse_hash::<BlockHash>(h, "generated block hash")).collect()
    }

    /// Hands a block to the node (`submitblock`); the error carries the node's verdict
    /// (e.g. `bad-txnmrklroot`, `duplicate`, `inconclusive` for a side branch).
    pub async fn submit_block(&self, block: &Block) -> Result<()> {
        match self.call("submitblock", json!([encode::serialize_hex(block)])).await? {
            Value::Null => Ok(()),
            verdict => Err(ChainError::Rpc {
                method: "submitblock".into(),
                code: 0,
                message: verdict.as_str().map_or_else(|| verdict.to_string(), str::to_string),
            }),
        }
    }

    /// Marks `hash` invalid, disconnecting it and its descendants (their transactions go
    /// back to the mempool).
    pub async fn invalidate_block(&self, hash: &BlockHash) -> Result<()> {
        self.call("invalidateblock", json!([hash.to_string()])).await.map(|_| ())
    }

    /// Undoes [`Bitcoind::invalidate_block`].
    pub async fn reconsider_block(&self, hash: &BlockHash) -> Result<()> {
        self.call("reconsiderblock", json!([hash.to_string()])).await.map(|_| ())
    }

    /// Asks the node to shut down.
    pub async fn stop(&self) -> Result<()> {
        self.call("stop", json!([])).await.map(|_| ())
    }
}

#[async_trait]
impl Chain for Bitcoind {
    fn network(&self) -> Network {
        self.config.network
    }

    async fn tip(&self) -> Result<BlockRef> {
        // One call, so height and hash describe the same tip.
        let info = self.call("getblockchaininfo", json!([])).await?;
        Ok(BlockRef {
            height: parse_u32(&info["blocks"], "getblockchaininfo.blocks")?,
            hash: parse_hash(&info["bestblockhash"], "getblockchaininfo.bestblockhash")?,
        })
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>> {
        match self.call("getblockhash", json!([height])).await {
            Ok(hash) => Ok(Some(parse_hash(&hash, "getblockhash")?)),
            // "Block height out of range"
            Err(ChainError::Rpc { code: RPC_INVALID_PARAMETER, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn block(&self, hash: &BlockHash) -> Result<Block> {
        match self.call("getblock", json!([hash.to_string(), 0])).await {
            Ok(hex) => {
                let block: Block = decode_hex(&hex, "block")?;
                if block.block_hash() != *hash {
                    return Err(decode(&format!("block {hash}: node returned block {}", block.block_hash())));
                }
                Ok(block)
            }
            Err(ChainError::Rpc { code: RPC_INVALID_ADDRESS_OR_KEY, .. }) => {
                Err(ChainError::NotFound(format!("block {hash}")))
            }
            Err(e) => Err(e),
        }
    }

    async fn mempool(&self) -> Result<Vec<Transaction>> {
        let txids = self.call("getrawmempool", json!([])).await?;
        let txids = txids.as_array().ok_or_else(|| decode("getrawmempool result"))?;
        let params = txids
            .iter()
            .map(|t| parse_hash::<Txid>(t, "mempool txid").map(|txid| json!([txid.to_string(), false])))
            .collect::<Result<Vec<_>>>()?;
        let mut txs = Vec::with_capacity(params.len());
        for reply in self.call_batch("getrawtransaction", params).await? {
            match reply {
                Ok(hex) => txs.push(decode_hex(&hex, "mempool transaction")?),
                // Mined or evicted between the two calls.
                Err(ChainError::Rpc { code: RPC_INVALID_ADDRESS_OR_KEY, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(txs)
    }

    async fn transaction_status(&self, txid: &Txid) -> Result<TxStatus> {
        let verbose = match self.call("getrawtransaction", json!([txid.to_string(), true])).await {
            Ok(v) => v,
            Err(ChainError::Rpc { code: RPC_INVALID_ADDRESS_OR_KEY, .. }) => return Ok(TxStatus::Unknown),
            Err(e) => return Err(e),
        };
        // bitcoind looks in the mempool first, and only then in the txindex.
        let block_hash = match verbose.get("blockhash") {
            None | Some(Value::Null) => return Ok(TxStatus::InMempool),
            Some(h) => parse_hash::<BlockHash>(h, "getrawtransaction.blockhash")?,
        };
        // The txindex keeps transactions of blocks that were reorged out; the header tells
        // whether the block is still in the best chain (confirmations -1 when it is not).
        let header = match self.call("getblockheader", json!([block_hash.to_string(), true])).await {
            Ok(h) => h,
            Err(ChainError::Rpc { code: RPC_INVALID_ADDRESS_OR_KEY, .. }) => return Ok(TxStatus::Unknown),
            Err(e) => return Err(e),
        };
        let confirmations = header["confirmations"].as_i64().ok_or_else(|| decode("getblockheader.confirmations"))?;
        if confirmations < 1 {
            return Ok(TxStatus::Unknown);
        }
        Ok(TxStatus::Confirmed {
            height: parse_u32(&header["height"], "getblockheader.height")?,
            block_hash,
            confirmations: u32::try_from(confirmations).map_err(|_| decode("getblockheader.confirmations"))?,
        })
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid> {
        let txid = tx.compute_txid();
        match self.call("sendrawtransaction", json!([encode::serialize_hex(tx)])).await {
            Ok(reply) => {
                let accepted: Txid = parse_hash(&reply, "sendrawtransaction")?;
                if accepted != txid {
                    return Err(decode(&format!("sendrawtransaction returned {accepted} for {txid}")));
                }
                Ok(txid)
            }
            Err(ChainError::Rpc {
                code: RPC_VERIFY_ERROR | RPC_VERIFY_REJECTED | RPC_VERIFY_ALREADY_IN_CHAIN,
                message,
                ..
            }) => Err(ChainError::Rejected { txid, reason: message }),
            Err(e) => Err(e),
        }
    }

    async fn test_mempool_accept(&self, tx: &Transaction) -> Result<()> {
        let txid = tx.compute_txid();
        let reply = self.call("testmempoolaccept", json!([[encode::serialize_hex(tx)]])).await?;
        let verdict = reply.get(0).ok_or_else(|| decode("testmempoolaccept result"))?;
        match verdict["allowed"].as_bool() {
            Some(true) => Ok(()),
            Some(false) => {
                let mut reason = verdict["reject-reason"].as_str().unwrap_or("rejected").to_string();
                if let Some(details) = verdict["reject-details"].as_str() {
                    reason = format!("{reason} ({details})");
                }
                Err(ChainError::Rejected { txid, reason })
            }
            None => Err(decode("testmempoolaccept.allowed")),
        }
    }

    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate> {
        let estimate = self.call("estimatesmartfee", json!([target_blocks.max(1)])).await?;
        // No "feerate" (with "errors") means the node has no data yet.
        let Some(btc_per_kvb) = estimate.get("feerate").and_then(Value::as_f64) else {
            return Ok(self.config.fallback_fee_rate);
        };
        let sat_per_kvb = btc_to_sat(btc_per_kvb).ok_or_else(|| decode("estimatesmartfee.feerate"))?;
        // 1 kvB = 4 kWU; round up so the rate never falls under the estimate. Floor at 1 sat/vB
        // because peers on older policy refuse to relay anything cheaper.
        Ok(FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4)).max(FeeRate::BROADCAST_MIN))
    }

    async fn utxos(&self, scripts: &[ScriptBuf]) -> Result<Vec<Utxo>> {
        if scripts.is_empty() {
            return Ok(Vec::new());
        }
        let descriptors: Vec<Value> = scripts.iter().map(|s| json!({"desc": raw_descriptor(s)})).collect();
        let scan = self.scan_txout_set(descriptors).await?;
        if scan["success"].as_bool() != Some(true) {
            return Err(ChainError::Rpc {
                method: "scantxoutset".into(),
                code: 0,
                message: "scan did not complete".into(),
            });
        }
        let unspents = scan["unspents"].as_array().ok_or_else(|| decode("scantxoutset.unspents"))?;
        unspents
            .iter()
            .map(|u| {
                let script_pubkey = ScriptBuf::from_bytes(
                    hex::decode(u["scriptPubKey"].as_str().ok_or_else(|| decode("scantxoutset scriptPubKey"))?)
                        .map_err(|e| decode(&format!("scantxoutset scriptPubKey: {e}")))?,
                );
                let value = u["amount"].as_f64().and_then(btc_to_sat).ok_or_else(|| decode("scantxoutset amount"))?;
                Ok(Utxo {
                    outpoint: OutPoint {
                        txid: parse_hash(&u["txid"], "scantxoutset txid")?,
                        vout: parse_u32(&u["vout"], "scantxoutset vout")?,
                    },
                    txout: TxOut { value: Amount::from_sat(value), script_pubkey },
                    height: parse_u32(&u["height"], "scantxoutset height")?,
                })
            })
            .collect()
    }
}

fn default_rpc_port(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 8332,
        Network::Testnet => 18332,
        Network::Testnet4 => 48332,
        Network::Signet => 38332,
        Network::Regtest => 18443,
    }
}

/// Splits a JSON-RPC reply into its result or an [`ChainError::Rpc`].
fn rpc_result(method: &str, mut reply: Value) -> Result<Value> {
    match reply.get("error") {
        None | Some(Value::Null) => Ok(reply.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
        Some(error) => Err(ChainError::Rpc {
            method: method.to_string(),
            code: error["code"].as_i64().unwrap_or(0),
            message: error["message"].as_str().unwrap_or("(no message)").to_string(),
        }),
    }
}

/// A descriptor matching exactly this script.
fn raw_descriptor(script: &Script) -> String {
    format!("raw({})", hex::encode(script.as_bytes()))
}

fn decode(what: &str) -> ChainError {
    ChainError::Decode(what.to_string())
}

fn decode_hex<T: encode::Decodable>(value: &Value, what: &str) -> Result<T> {
    let hex = value.as_str().ok_or_else(|| decode(&format!("{what}: expected a hex string")))?;
    encode::deserialize_hex(hex).map_err(|e| decode(&format!("{what}: {e}")))
}

fn parse_hash<H: std::str::FromStr>(value: &Value, what: &str) -> Result<H>
where
    H::Err: std::fmt::Display,
{
    let s = value.as_str().ok_or_else(|| decode(&format!("{what}: expected a hash string")))?;
    s.parse().map_err(|e| decode(&format!("{what} {s}: {e}")))
}

fn parse_u32(value: &Value, what: &str) -> Result<u32> {
    value.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| decode(&format!("{what}: expected a u32")))
}

/// Converts a BTC amount as bitcoind prints it (8 decimals) to satoshis. Exact: every
/// 8-decimal value below 21 million BTC is the nearest double to an integer satoshi count.
fn btc_to_sat(btc: f64) -> Option<u64> {
    let sat = (btc * 100_000_000.0).round();
    (sat.is_finite() && sat >= 0.0 && sat <= Amount::MAX_MONEY.to_sat() as f64).then_some(sat as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash as _;

    #[test]
    fn btc_amounts_convert_to_the_satoshi() {
        assert_eq!(btc_to_sat(0.0001), Some(10_000));
        assert_eq!(btc_to_sat(20_999_999.976_9), Some(2_099_999_997_690_000));
        assert_eq!(btc_to_sat(0.00000001), Some(1));
        assert_eq!(btc_to_sat(-1.0), None);
        assert_eq!(btc_to_sat(f64::NAN), None);
    }

    #[test]
    fn rpc_errors_keep_code_and_message() {
        let err = rpc_result(
            "getblockhash",
            json!({"result": null, "error": {"code": -8, "message": "Block height out of range"}, "id": 1}),
        )
        .unwrap_err();
        assert!(matches!(err, ChainError::Rpc { code: -8, ref message, .. } if message == "Block height out of range"));
        assert_eq!(rpc_result("x", json!({"result": 5, "error": null})).unwrap(), json!(5));
    }

    #[test]
    fn url_without_port_uses_the_network_default() {
        let auth = BitcoindAuth::UserPass { user: "u".into(), password: "p".into() };
        let node =
            Bitcoind::new_unchecked(BitcoindConfig::new("http://127.0.0.1", auth.clone(), Network::Signet)).unwrap();
        assert_eq!(node.authority, "127.0.0.1:38332");
        assert!(Bitcoind::new_unchecked(BitcoindConfig::new("https://x:1", auth, Network::Regtest)).is_err());
    }

    #[test]
    fn block_hash_type_round_trips() {
        let hash = BlockHash::all_zeros();
        assert_eq!(parse_hash::<BlockHash>(&json!(hash.to_string()), "h").unwrap(), hash);
        assert!(parse_hash::<BlockHash>(&json!("zz"), "h").is_err());
    }
}
