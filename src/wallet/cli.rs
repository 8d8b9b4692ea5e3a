//! `tandem wallet ...`: trade straight from the wallet. Every request is signed by the
//! wallet's device key; the provider's URL and the account come from the wallet file.
//!
//! Each command prints a readable summary, or with `--json` the provider's reply as it came.
//! Errors name the provider's stable code and say what to do about it.

use super::device::DeviceKey;
use super::keystore::{KdfCost, Passphrase, WalletFile, WalletKey, DEVICE_KEY_NAME, KIND_DEVICE_KEY};
use super::passphrase::{self, Purpose};
use crate::client::{Auth, Client};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

#[derive(Args, Debug)]
pub struct WalletArgs {
    /// The wallet file [default: ~/.tandem/wallet.json].
    #[arg(long, global = true, env = "TANDEM_WALLET", value_name = "FILE")]
    pub wallet: Option<PathBuf>,
    /// Read the passphrase from this file (else TANDEM_WALLET_PASSPHRASE, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Print the provider's reply as JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: WalletCmd,
}

#[derive(Subcommand, Debug)]
pub enum WalletCmd {
    /// Make a device key, enrol it with a provider (which opens an account) and write the
    /// wallet file, encrypted under a passphrase. Never overwrites a wallet.
    Init {
        /// The provider's API, e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        provider: String,
        /// The single-use code from the provider's operator (not needed by `tandem demo`).
        #[arg(long, value_name = "CODE")]
        enrolment_code: Option<String>,
        /// A name for this device, shown to the operator.
        #[arg(long, default_value = "wallet")]
        label: String,
    },
    /// The account's balances.
    Balance,
    /// Open orders; with --all every order, newest first.
    Orders {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        market: Option<String>,
        /// At most this many (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Place an order.
    Order(OrderArgs),
    /// Cancel an open order.
    Cancel { order_id: u64 },
    /// Withdraw: BTC to a bitcoin address, fiat to a payout reference.
    Withdraw {
        #[arg(long)]
        asset: String,
        #[arg(long)]
        amount: String,
        #[arg(long, value_name = "ADDRESS")]
        to: String,
    },
    /// A new deposit address of the wallet's vault. The first one makes the vault: 2-of-3 with
    /// the provider's co-signer when it has one, else 2-of-2; this wallet's safe primes are
    /// generated first (tens of seconds).
    Address {
        /// Use the public fixture primes instead of generating them: only against a demo
        /// provider (`tandem demo`), never for real funds.
        #[arg(long)]
        demo_primes: bool,
        /// The co-signer of a new vault (its identity key), instead of the provider's first.
        #[arg(long, value_name = "KEY", conflicts_with = "no_cosigner")]
        cosigner: Option<String>,
        /// Make a new vault 2-of-2 (wallet + provider), without a co-signer.
        #[arg(long)]
        no_cosigner: bool,
    },
    /// Run the wallet's signer: answer the provider's signing sessions for this wallet's
    /// vault, after checking each spend against the withdrawals asked for from this wallet.
    /// Runs until stopped.
    Cosign {
        /// The largest fee (satoshis) a spend from this vault may pay.
        #[arg(long, default_value_t = 100_000)]
        max_fee_sat: u64,
        /// Stop after answering this many sessions.
        #[arg(long)]
        sessions: Option<usize>,
        /// Presignatures to keep ready per address key (made with the provider while idle),
        /// so spends are signed in one round; 0 signs interactively.
        #[arg(long, default_value_t = 2)]
        presignatures: usize,
    },
    /// Leave without the provider: with the vault's co-signer alone, sweep the whole vault to
    /// an address you name (2-of-3 vaults; the co-signer agrees only once the provider has been
    /// silent for its configured time). Needs a Bitcoin node you trust.
    Recover {
        /// Where the funds go.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The co-signer's recovery relay (`tandem cosigner run --recovery-bind`).
        #[arg(long, value_name = "URL")]
        cosigner_url: String,
        /// A Bitcoin node's JSON-RPC, e.g. http://127.0.0.1:18443.
        #[arg(long, value_name = "URL")]
        bitcoind: String,
        #[arg(long, env = "TANDEM_RPC_USER")]
        rpc_user: String,
        #[arg(long, env = "TANDEM_RPC_PASSWORD", hide_env_values = true)]
        rpc_password: String,
        /// The vault's network, if the wallet did not record it (bitcoin, testnet, signet, regtest).
        #[arg(long)]
        network: Option<String>,
        /// Fee rate in sat/vB; else the node's estimate.
        #[arg(long)]
        fee_rate: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct OrderArgs {
    /// e.g. BTC-USD.
    #[arg(long)]
    pub market: String,
    #[arg(long)]
    pub side: SideArg,
    /// Limit price; for a market order the worst price accepted (its protection price).
    #[arg(long)]
    pub price: Option<String>,
    /// In base units, e.g. 0.01 (BTC).
    #[arg(long)]
    pub quantity: String,
    #[arg(long = "type", value_name = "TYPE", default_value = "limit")]
    pub order_type: TypeArg,
    /// Time in force (limit orders; market orders are always IOC).
    #[arg(long, ignore_case = true)]
    pub tif: Option<TifArg>,
    /// Refuse the order if it would trade at once.
    #[arg(long)]
    pub post_only: bool,
    /// Your id for the order; a retry with the same id can never place it twice.
    #[arg(long, value_name = "ID")]
    pub client_order_id: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SideArg {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    Limit,
    Market,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum TifArg {
    Gtc,
    Ioc,
    Fok,
}

impl SideArg {
    fn as_str(self) -> &'static str {
        match self {
            SideArg::Buy => "buy",
            SideArg::Sell => "sell",
        }
    }
}

impl TypeArg {
    fn as_str(self) -> &'static str {
        match self {
            TypeArg::Limit => "limit",
            TypeArg::Market => "market",
        }
    }
}

impl TifArg {
    fn as_str(self) -> &'static str {
        match self {
            TifArg::Gtc => "GTC",
            TifArg::Ioc => "IOC",
            TifArg::Fok => "FOK",
        }
    }
}

/// `~/.tandem/wallet.json` unless `--wallet` (or `TANDEM_WALLET`) says otherwise.
pub fn wallet_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("HOME is not set: give --wallet FILE")?;
    Ok(PathBuf::from(home).join(".tandem").join("wallet.json"))
}

pub async fn run(args: WalletArgs) -> anyhow::Result<()> {
    let path = wallet_path(args.wallet.as_deref())?;
    let pass_file = args.passphrase_file.as_deref();
    let out = Output { json: args.json };
    if let WalletCmd::Init { provider, enrolment_code, label } = &args.command {
        return init(&path, pass_file, provider, enrolment_code.as_deref(), label, out).await;
    }
    let mut session = Session::open(&path, pass_file)?;
    match args.command {
        WalletCmd::Address { demo_primes, cosigner, no_cosigner } => {
            let progress = |line: &str| eprintln!("{line}");
            let choice = match (cosigner, no_cosigner) {
                (Some(k), _) => super::vault::CosignerChoice::Given(k.trim().parse().context("--cosigner: not an identity key")?),
                (None, true) => super::vault::CosignerChoice::None,
                (None, false) => super::vault::CosignerChoice::ProvidersFirst,
            };
            let made = super::vault::new_address(&mut session, demo_primes, choice, &progress).await?;
            out.print(&super::vault::address_json(&made), || super::vault::address_text(&made))?;
        }
        WalletCmd::Init { .. } => unreachable!("handled above"),
        WalletCmd::Recover { to, cosigner_url, bitcoind, rpc_user, rpc_password, network, fee_rate } => {
            let network = network.as_deref().map(crate::parse_network).transpose()?;
            let opts = super::recover::RecoverOptions {
                to,
                cosigner_url,
                bitcoind_url: bitcoind,
                rpc_user,
                rpc_password,
                network,
                fee_rate: fee_rate.map(|f| bitcoin::FeeRate::from_sat_per_vb(f).context("--fee-rate is too large")).transpose()?,
            };
            let r = super::recover::recover(&session, &opts).await?;
            let reply = json!({"txid": r.txid.to_string(), "inputs": r.inputs, "amount_sat": r.amount.to_sat(), "fee_sat": r.fee.to_sat()});
            out.print(&reply, || {
                format!("Recovery broadcast: {} ({} inputs, {} to {}, fee {})", r.txid, r.inputs, r.amount, opts.to, r.fee)
            })?;
        }
        WalletCmd::Cosign { max_fee_sat, sessions, presignatures } => {
            let opts = super::cosign::CosignOptions { max_fee: bitcoin::Amount::from_sat(max_fee_sat), sessions, presignatures };
            super::cosign::run(&mut session, &opts, &super::cosign::Console).await?;
        }
        WalletCmd::Balance => {
            let reply = session.call("GET", "/v1/balances", None).await?;
            out.print(&reply, || balances_text(&reply))?;
        }
        WalletCmd::Orders { all, market, limit } => {
            let mut query = vec![format!("status={}", if all { "all" } else { "open" })];
            if let Some(m) = market {
                query.push(format!("market={}", escape(&m)));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            let reply = session.call("GET", &format!("/v1/orders?{}", query.join("&")), None).await?;
            out.print(&reply, || orders_text(&reply, all))?;
        }
        WalletCmd::Order(o) => {
            let body = order_body(&o)?;
            let reply = session.call("POST", "/v1/orders", Some(&body)).await?;
            out.print(&reply, || placed_text(&reply))?;
        }
        WalletCmd::Cancel { order_id } => {
            let reply = session.call("DELETE", &format!("/v1/orders/{order_id}"), None).await?;
            out.print(&reply, || order_line(&reply["order"]))?;
        }
        WalletCmd::Withdraw { asset, amount, to } => {
            if asset.eq_ignore_ascii_case("BTC") {
                // Noted before it is sent: `cosign` signs only withdrawals the user asked for.
                super::cosign::record_withdrawal_request(&mut session, &to, &amount)?;
            }
            let body = json!({"asset": asset, "amount": amount, "destination": to});
            let reply = session.call("POST", "/v1/withdrawals", Some(&body)).await?;
            out.print(&reply, || withdrawal_text(&reply["withdrawal"]))?;
        }
    }
    Ok(())
}

async fn init(
    path: &Path,
    pass_file: Option<&Path>,
    provider: &str,
    code: Option<&str>,
    label: &str,
    out: Output,
) -> anyhow::Result<()> {
    WalletFile::prepare(path)?;
    let passphrase = passphrase::read(pass_file, Purpose::Create)?;
    let provider = provider.trim().trim_end_matches('/').to_owned();
    let (reply, device) = create(path, &passphrase, &provider, code, label).await?;
    let account_id = reply["account_id"].as_u64().unwrap_or_default();
    out.print(&reply, || {
        format!(
            "Wallet created: {}\n  provider    {provider}\n  account     {account_id}\n  device key  {}\n\
             The passphrase is the only way to open this wallet: keep it safe.",
            path.display(),
            device.pubkey_hex()
        )
    })
}

/// Makes a device key, enrols it with the provider (which opens an account) and writes the
/// wallet file sealed under `passphrase`. Answers the provider's reply and the device key.
pub async fn create(
    path: &Path,
    passphrase: &Passphrase,
    provider: &str,
    code: Option<&str>,
    label: &str,
) -> anyhow::Result<(Value, Arc<DeviceKey>)> {
    WalletFile::prepare(path)?;
    crate::client::host_of(provider)?;
    let device = Arc::new(DeviceKey::generate());
    let body = json!({"device_pubkey": device.pubkey_hex(), "label": label, "enrolment_code": code});
    let reply = call(provider, &Auth::Device(device.clone()), "POST", "/v1/wallet/enrol", Some(&body)).await?;
    let account_id = reply["account_id"].as_u64().context("the provider's enrolment reply has no account_id")?;
    let mut file = WalletFile::new(provider, account_id, KdfCost::default());
    let key = file.unlock(passphrase)?;
    file.add_secret(&key, DEVICE_KEY_NAME, KIND_DEVICE_KEY, &device.secret_bytes()[..])?;
    file.create(path).with_context(|| {
        format!(
            "enrolled as account {account_id}, but the wallet could not be written: ask the operator for a new code"
        )
    })?;
    Ok((reply, device))
}

/// A file's size and modification time, if it can be read.
fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// An opened wallet: the file, the key derived from the passphrase, and the device key.
pub struct Session {
    pub path: PathBuf,
    pub file: WalletFile,
    key: WalletKey,
    auth: Auth,
    device: Arc<DeviceKey>,
    /// Size and modification time of the file as last read: a reload skips an unchanged file.
    seen: Option<(u64, std::time::SystemTime)>,
}

impl Session {
    pub fn open(path: &Path, pass_file: Option<&Path>) -> anyhow::Result<Session> {
        let file = WalletFile::load(path).map_err(|e| match e {
            super::keystore::KeystoreError::NotFound(p) => {
                anyhow::anyhow!("no wallet at {}: create one with `tandem wallet init --provider URL`", p.display())
            }
            e => anyhow::Error::new(e).context(format!("opening the wallet {}", path.display())),
        })?;
        let passphrase: Passphrase = passphrase::read(pass_file, Purpose::Unlock)?;
        let key = file.unlock(&passphrase).with_context(|| format!("opening the wallet {}", path.display()))?;
        let device = DeviceKey::from_secret_bytes(&file.secret(&key, DEVICE_KEY_NAME)?[..])?;
        let device = Arc::new(device);
        let seen = file_stamp(path);
        Ok(Session { path: path.to_owned(), file, key, auth: Auth::Device(device.clone()), device, seen })
    }

    /// The device key (the wallet's identity in MPC sessions too).
    pub fn device(&self) -> &DeviceKey {
        &self.device
    }

    /// How the wallet signs its requests.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Seals a new secret into the wallet file and saves the file.
    pub fn add_secret(&mut self, name: &str, kind: &str, plaintext: &[u8]) -> anyhow::Result<()> {
        self.append_secret(name, kind, plaintext)
    }

    /// Adds a secret under the wallet's lock file, to the file as it is on disk now: another
    /// process of the same wallet (a `cosign` running beside a `withdraw`) may have added
    /// secrets since this one opened it, and they must not be lost.
    pub fn append_secret(&mut self, name: &str, kind: &str, plaintext: &[u8]) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        self.reload()?;
        self.file.add_secret(&self.key, name, kind, plaintext)?;
        self.file.save(&self.path).with_context(|| format!("saving the wallet {}", self.path.display()))?;
        self.seen = file_stamp(&self.path);
        Ok(())
    }

    /// The wallet's presignatures (made with the provider for one-round signing): sealed files
    /// beside the wallet file, in `<wallet>.presignatures/`, under a key derived from the
    /// wallet's.
    pub fn presignature_store(&self) -> anyhow::Result<tandem_custody::FilePresignatureStore> {
        let mut dir = self.path.clone().into_os_string();
        dir.push(".presignatures");
        let key = tandem_custody::MasterKey::from_bytes(*self.key.derive("presignatures"));
        Ok(tandem_custody::FilePresignatureStore::open(PathBuf::from(dir), tandem_custody::Keyring::new(key))?)
    }

    /// Reads the wallet file again (what other processes of this wallet added), unless it is
    /// unchanged since it was last read.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        let stamp = file_stamp(&self.path);
        if stamp.is_some() && stamp == self.seen {
            return Ok(());
        }
        let file = WalletFile::load(&self.path).with_context(|| format!("reading the wallet {}", self.path.display()))?;
        if file.kdf != self.file.kdf || file.account_id != self.file.account_id {
            bail!("the wallet file {} was replaced by another wallet", self.path.display());
        }
        self.file = file;
        self.seen = stamp;
        Ok(())
    }

    /// An exclusive lock on `<wallet>.lock`, held while the file is read, changed and saved.
    fn lock(&self) -> anyhow::Result<std::fs::File> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", PathBuf::from(&lock_path).display()))?;
        f.lock().with_context(|| format!("locking {}", PathBuf::from(&lock_path).display()))?;
        Ok(f)
    }

    /// The plaintext of one of the wallet's secrets (vault key shares, later).
    pub fn secret(&self, name: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        Ok(self.file.secret(&self.key, name)?)
    }

    /// A signed request to the wallet's provider; a non-200 reply is an [`ApiFailure`].
    pub async fn call(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        call(&self.file.provider_url, &self.auth, method, path_and_query, body).await
    }
}

async fn call(
    provider: &str,
    auth: &Auth,
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut client =
        Client::connect(provider).await.with_context(|| format!("cannot reach the provider at {provider}"))?;
    let (status, reply) = client
        .send(method, path_and_query, body, auth)
        .await
        .with_context(|| format!("no reply from the provider at {provider}"))?;
    if status == 200 {
        Ok(reply)
    } else {
        Err(ApiFailure::from_reply(status, &reply).into())
    }
}

/// A refused request: the provider's status, stable code and message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// For a duplicate client order id: the order that already has it.
    pub existing_order: Option<u64>,
}

impl ApiFailure {
    fn from_reply(status: u16, reply: &Value) -> ApiFailure {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        ApiFailure {
            status,
            code: text(&reply["error"]["code"]).unwrap_or_else(|| format!("http_{status}")),
            message: text(&reply["error"]["message"]).unwrap_or_else(|| "the provider gave no error message".into()),
            existing_order: reply["order"]["order_id"].as_u64(),
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match explain(&self.code) {
            Some(why) => write!(f, "{why}")?,
            None => write!(f, "the provider refused the request")?,
        }
        if let Some(id) = self.existing_order {
            write!(f, " (order {id})")?;
        }
        write!(f, " [{} {}: {}]", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// What an error code means for the wallet's user. Every code of docs/API.md has an entry
/// (a test checks); unknown codes fall back to the provider's own message.
pub fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        // Authentication.
        "missing_credentials" => "the request was not signed (is --provider a Tandem API?)",
        "replayed_request" => "the provider already received this exact signed request: nothing was done twice; retry to send it anew",
        "stale_timestamp" => "this computer's clock is too far from the provider's: set the clock right and retry",
        "unknown_device" => {
            "the provider does not know this wallet's device key (enrolled with another provider, or the provider was reset)"
        }
        "bad_signature" => "the provider rejected this wallet's signature",
        "unknown_api_key" => "the provider does not know the API key",
        "bad_operator_token" => "this needs the provider's operator token",
        "bad_enrolment_code" => {
            "the provider wants a valid enrolment code: ask its operator for one and pass --enrolment-code (each code works once)"
        }
        "device_registered" => "this device key is already enrolled",
        // Requests.
        "bad_request" => "the provider did not accept the request's values",
        "malformed_json" => "the provider could not parse the request",
        "payload_too_large" => "the request is too large",
        "not_found" => "the provider has no such endpoint (is --provider a Tandem API?)",
        "method_not_allowed" => "the provider does not allow this request on that endpoint",
        "bad_precision" => "a number has more decimal places than the asset allows",
        "out_of_range" => "a number is negative or too large",
        "zero_amount" => "the amount must be more than zero",
        "supply_exceeded" => "the amount is larger than the asset's supply cap",
        // Orders.
        "price_off_tick" => "the price must be a multiple of the market's tick size",
        "quantity_off_lot" => "the quantity must be a multiple of the market's lot size",
        "below_min_notional" => "the order is smaller than the market's minimum notional (price x quantity)",
        "insufficient_balance" => {
            "not enough available balance (see `tandem wallet balance`; open orders and pending withdrawals lock funds)"
        }
        "would_take_liquidity" => "the post-only order would have traded at once, so it was refused",
        "no_liquidity" => "there is nothing on the other side of the book: give --price as the worst price you accept",
        "amend_no_change" => "the amendment changes nothing",
        "amend_below_filled" => "the new quantity is below what already filled",
        "duplicate_client_order_id" => "this client order id was used before; the order was not placed again",
        "duplicate_client_withdrawal_id" => "this withdrawal was already requested; it was not requested again",
        "market_halted" => "the market is halted: no orders are accepted now",
        "account_cannot_trade" => "this account cannot trade",
        "unknown_market" => "no such market",
        "unknown_asset" => "no such asset",
        "unknown_order" => "no open order with that id on this account",
        "unknown_account" => "the provider has no such account",
        "unknown_withdrawal" => "no such withdrawal",
        // Funds.
        "bad_address" => "not a bitcoin address of the provider's network",
        "bad_destination" => "the destination must be 1 to 128 printable characters",
        "unsupported_asset" => "the provider does not support this for that asset",
        "duplicate_deposit" => "that deposit was already credited",
        "account_frozen" => {
            "the account is frozen: a deposit it spent was lost from the chain, or an operator stopped it; contact the provider"
        }
        "unknown_deposit" => "no deposit with that reference",
        "deposit_already_reversed" => "that deposit was already taken back",
        "unknown_batch" => "no settlement batch with that id is being signed",
        "unbalanced_batch" => "the settlement batch does not balance: the ledger refused it",
        "vault_overdrawn" => "the settlement batch would take more than a vault holds: the ledger refused it",
        "batch_id_reused" => "that settlement batch id was used before",
        "withdrawal_in_batch" => "that withdrawal is already being paid by a settlement batch",
        "settlement_not_running" => "this provider settles nothing on chain (no chain configured)",
        "already_frozen" => "the account is already frozen",
        "not_frozen" => "the account is not frozen",
        "reserved_account_kind" => "that kind of account cannot be opened",
        // Operations.
        "already_halted" => "the market is already halted",
        "not_halted" => "the market is not halted",
        "already_configured" => "the exchange is already configured",
        // MPC sessions (the relay).
        "unknown_cosigner" => "the provider does not know this co-signer's identity key (ask its operator to register it)",
        "cosigner_registered" => "this co-signer identity key is already registered, or is a wallet's device key",
        "unregistered_identity" => "a party of the session is not registered with the provider for its role",
        "execution_id_reused" => "this session id was used before; every MPC session needs a fresh one",
        "unknown_session" => "the provider's relay has no such MPC session (not opened yet, or long gone)",
        "session_ended" => "the MPC session has ended (aborted by a party, or expired): start a new one",
        "not_a_party" => "this wallet is not a party of that MPC session",
        "wrong_sender" => "a message was sent in another party's name",
        "session_queue_full" => "the MPC session has too much undelivered data: the other parties are not keeping up",
        "relay_full" => "the provider's relay is busy: retry shortly",
        "overloaded" => "the provider is busy: retry shortly",
        "request_in_progress" => "the same request is still being answered: wait a moment, then retry",
        "idempotency_key_reused" => "this idempotency key was already used for a different request: use a new key",
        "rate_limited" => "this wallet sent more requests this minute than the provider allows: wait for the time it names, then retry",
        "unavailable" => "the provider is not accepting requests right now: retry later",
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// A closed pipe (`| head`) is not an error.
    fn print(self, reply: &Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        use std::io::Write;
        let text = if self.json { serde_json::to_string_pretty(reply)? } else { text() };
        match writeln!(std::io::stdout().lock(), "{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(anyhow::Error::new(e).context("writing to stdout"))
            }
            _ => Ok(()),
        }
    }
}

fn order_body(o: &OrderArgs) -> anyhow::Result<Value> {
    let mut body = json!({
        "market": o.market,
        "side": o.side.as_str(),
        "type": o.order_type.as_str(),
        "quantity": o.quantity,
    });
    match (o.order_type, &o.price) {
        (TypeArg::Limit, Some(p)) => body["price"] = json!(p),
        (TypeArg::Limit, None) => bail!("a limit order needs --price"),
        (TypeArg::Market, Some(p)) => body["protection_price"] = json!(p),
        (TypeArg::Market, None) => {}
    }
    if let Some(tif) = o.tif {
        body["time_in_force"] = json!(tif.as_str());
    }
    if o.post_only {
        body["post_only"] = json!(true);
    }
    if let Some(id) = &o.client_order_id {
        body["client_order_id"] = json!(id);
    }
    Ok(body)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Columns two spaces apart; `right` marks the right-aligned ones.
fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, w), r)| if *r { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        parts.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

fn balances_text(reply: &Value) -> String {
    let rows: Vec<Vec<String>> = reply["balances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| vec![s(&b["asset"]), s(&b["available"]), s(&b["locked"]), s(&b["total"])])
        .collect();
    table(&["ASSET", "AVAILABLE", "LOCKED", "TOTAL"], &[false, true, true, true], &rows)
}

fn orders_text(reply: &Value, all: bool) -> String {
    let orders = reply["orders"].as_array().cloned().unwrap_or_default();
    if orders.is_empty() {
        return if all { "No orders.".into() } else { "No open orders.".into() };
    }
    let rows: Vec<Vec<String>> = orders
        .iter()
        .map(|o| {
            vec![
                s(&o["order_id"]),
                s(&o["market"]),
                s(&o["side"]),
                s(&o["type"]),
                s(&o["price"]),
                s(&o["quantity"]),
                s(&o["filled"]),
                s(&o["status"]),
                s(&o["client_order_id"]),
            ]
        })
        .collect();
    table(
        &["ID", "MARKET", "SIDE", "TYPE", "PRICE", "QUANTITY", "FILLED", "STATUS", "CLIENT ID"],
        &[true, false, false, false, true, true, true, false, false],
        &rows,
    )
}

/// `Order 12 new: buy 0.01000000 BTC-USD limit at 60000.00 GTC; filled 0.00000000`
fn order_line(o: &Value) -> String {
    let terms = if o["type"] == "market" {
        format!("market (protection {}) {}", s(&o["price"]), s(&o["time_in_force"]))
    } else {
        format!("{} at {} {}", s(&o["type"]), s(&o["price"]), s(&o["time_in_force"]))
    };
    let mut line = format!(
        "Order {} {}: {} {} {} {}{}; filled {}",
        s(&o["order_id"]),
        s(&o["status"]),
        s(&o["side"]),
        s(&o["quantity"]),
        s(&o["market"]),
        terms,
        if o["post_only"] == true { " post-only" } else { "" },
        s(&o["filled"]),
    );
    if !o["average_price"].is_null() {
        line.push_str(&format!(" at {} on average", s(&o["average_price"])));
    }
    if let Some(id) = o["client_order_id"].as_str() {
        line.push_str(&format!(" (client id {id})"));
    }
    line
}

fn placed_text(reply: &Value) -> String {
    let mut lines = vec![order_line(&reply["order"])];
    for f in reply["fills"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  fill {}: {} at {} ({}), fee {} {}",
            s(&f["trade_id"]),
            s(&f["quantity"]),
            s(&f["price"]),
            s(&f["liquidity"]),
            s(&f["fee"]),
            s(&f["fee_asset"]),
        ));
    }
    lines.join("\n")
}

fn withdrawal_text(w: &Value) -> String {
    format!(
        "Withdrawal {}: {} {} to {}, {}",
        s(&w["withdrawal_id"]),
        s(&w["amount"]),
        s(&w["asset"]),
        s(&w["destination"]),
        s(&w["status"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error code in docs/API.md's table has an explanation.
    #[test]
    fn every_documented_error_code_is_explained() {
        let doc = include_str!("../../docs/API.md");
        let table = doc.split("## Errors").nth(1).expect("an Errors section").split("\n## ").next().unwrap();
        let mut codes = Vec::new();
        for line in table.lines().filter(|l| l.starts_with("| 4") || l.starts_with("| 5")) {
            // Remarks in parentheses name fields, not codes.
            let mut depth = 0;
            let line: String = line
                .chars()
                .filter(|c| {
                    depth += (*c == '(') as i32;
                    let keep = depth == 0;
                    depth -= (*c == ')') as i32;
                    keep
                })
                .collect();
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    codes.push(part.to_owned());
                }
            }
        }
        assert!(codes.len() > 40, "{codes:?}");
        for code in ["unknown_device", "bad_enrolment_code", "device_registered"] {
            assert!(codes.iter().any(|c| c == code), "{code} missing from docs/API.md");
        }
        let missing: Vec<_> = codes.iter().filter(|c| explain(c).is_none()).collect();
        assert!(missing.is_empty(), "no explanation for {missing:?}");
    }

    #[test]
    fn failures_read_well() {
        let reply = json!({"error": {"code": "insufficient_balance", "message": "insufficient balance"}});
        let e = ApiFailure::from_reply(400, &reply).to_string();
        assert!(e.starts_with("not enough available balance"), "{e}");
        assert!(e.ends_with("[400 insufficient_balance: insufficient balance]"), "{e}");
        let dup = json!({"error": {"code": "duplicate_client_order_id", "message": "m"}, "order": {"order_id": 9}});
        assert!(ApiFailure::from_reply(409, &dup).to_string().contains("(order 9)"));
        let odd = ApiFailure::from_reply(502, &Value::Null).to_string();
        assert!(odd.contains("http_502"), "{odd}");
    }

    #[test]
    fn order_bodies() {
        let base = OrderArgs {
            market: "BTC-USD".into(),
            side: SideArg::Buy,
            price: Some("60000".into()),
            quantity: "0.01".into(),
            order_type: TypeArg::Limit,
            tif: None,
            post_only: false,
            client_order_id: None,
        };
        assert_eq!(
            order_body(&base).unwrap(),
            json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "60000", "quantity": "0.01"})
        );
        let market = OrderArgs { order_type: TypeArg::Market, side: SideArg::Sell, tif: Some(TifArg::Ioc), ..base };
        assert_eq!(
            order_body(&market).unwrap(),
            json!({"market": "BTC-USD", "side": "sell", "type": "market", "protection_price": "60000",
                   "quantity": "0.01", "time_in_force": "IOC"})
        );
        let no_price = OrderArgs { order_type: TypeArg::Limit, price: None, post_only: true, ..market };
        assert!(order_body(&no_price).unwrap_err().to_string().contains("--price"));
    }

    #[test]
    fn order_summaries() {
        let o = json!({"order_id": 12, "client_order_id": "c1", "market": "BTC-USD", "side": "buy", "type": "limit",
            "price": "60000.00", "quantity": "0.01000000", "filled": "0.00500000", "average_price": "59990.00",
            "status": "partially_filled", "time_in_force": "GTC", "post_only": true});
        assert_eq!(
            order_line(&o),
            "Order 12 partially_filled: buy 0.01000000 BTC-USD limit at 60000.00 GTC post-only; filled 0.00500000 \
             at 59990.00 on average (client id c1)"
        );
        let m = json!({"order_id": 13, "client_order_id": null, "market": "BTC-USD", "side": "sell", "type": "market",
            "price": "57000.00", "quantity": "0.00100000", "filled": "0.00000000", "average_price": null,
            "status": "expired", "time_in_force": "IOC", "post_only": false});
        assert_eq!(
            order_line(&m),
            "Order 13 expired: sell 0.00100000 BTC-USD market (protection 57000.00) IOC; filled 0.00000000"
        );
    }

    #[test]
    fn tables_and_escapes() {
        let t = table(
            &["A", "NUM"],
            &[false, true],
            &[vec!["x".into(), "1.5".into()], vec!["long".into(), "10.25".into()]],
        );
        assert_eq!(t, "A       NUM\nx       1.5\nlong  10.25");
        assert_eq!(escape("BTC-USD"), "BTC-USD");
        assert_eq!(escape("a b&c"), "a%20b%26c");
    }
}
