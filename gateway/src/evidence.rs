//! The evidence of what a holder owes for one settlement window: every fill and every withdrawal
//! of its account between the end of its last settled window and this window's cut, with the
//! requests its wallet signed for them (kept byte for byte, see `signed_requests`). Whoever has
//! the wallet's public key can check it without trusting the provider: the wallet itself before
//! it co-signs its leg of a batch, the vault's co-signer before it force-settles a late seller.
//!
//! Amounts are decimals in the asset's units, as everywhere in the API.

use serde::{Deserialize, Serialize};
use tandem_matching::{AccountId, Seq};
use tandem_store::{SignedRequestKind, SignedRequestRecord, WithdrawalStatus};

use crate::dto::{Fmt, TradeFacts};
use crate::error::ApiError;
use crate::Gateway;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evidence {
    pub account: u64,
    /// The window: engine sequence numbers in `(after_seq, through_seq]`.
    pub after_seq: u64,
    pub through_seq: u64,
    pub fills: Vec<EvidenceFill>,
    pub withdrawals: Vec<EvidenceWithdrawal>,
    /// The signed requests behind the fills' orders and the withdrawals.
    pub requests: Vec<SignedRequest>,
}

/// A fill as the account saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceFill {
    pub trade_id: u64,
    pub order_id: u64,
    pub seq: u64,
    /// `BASE-QUOTE`.
    pub market: String,
    pub side: String,
    #[schema(value_type = crate::openapi::schemas::Decimal)]
    pub price: String,
    #[schema(value_type = crate::openapi::schemas::Decimal)]
    pub quantity: String,
    #[schema(value_type = crate::openapi::schemas::Decimal)]
    pub notional: String,
    /// Charged in what this side receives.
    #[schema(value_type = crate::openapi::schemas::Decimal)]
    pub fee: String,
    pub fee_asset: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceWithdrawal {
    pub withdrawal_id: u64,
    /// `pending`, `completed` or `failed` (a failed one was refunded: it owes nothing).
    pub status: String,
}

/// A request exactly as the wallet signed it (`body` as UTF-8 text: JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedRequest {
    /// `order` or `withdrawal`.
    pub kind: String,
    /// The order id or withdrawal id it became.
    pub ref_id: u64,
    pub device: String,
    pub timestamp_ms: u64,
    pub method: String,
    pub path: String,
    pub body: String,
    pub signature: String,
}

impl SignedRequest {
    fn of(r: &SignedRequestRecord) -> SignedRequest {
        SignedRequest {
            kind: r.kind.as_str().to_owned(),
            ref_id: r.ref_id,
            device: r.device_pubkey.clone(),
            timestamp_ms: r.timestamp_ms,
            method: r.method.clone(),
            path: r.path.clone(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
            signature: r.signature.clone(),
        }
    }
}

/// The evidence of `account`'s window ending at `through` (the batch's cut); it starts where
/// the account's last confirmed batch leg was cut.
pub async fn evidence(gw: &Gateway, account: AccountId, through: Seq) -> Result<Evidence, ApiError> {
    if !gw.catch_up(through).await {
        return Err(ApiError::unavailable("the fills of this window are not projected yet; ask again shortly"));
    }
    let after = gw.store.settled_through(account).await?;
    let f: Fmt = gw.fmt();
    let trades = gw.store.account_trades_between(account, after, through).await?;
    let mut fills = Vec::with_capacity(trades.len());
    for t in &trades {
        let Some(fill) = TradeFacts::from_record(t).fill_for(f, account) else { continue };
        fills.push(EvidenceFill {
            trade_id: fill.trade_id,
            order_id: fill.order_id,
            seq: t.seq.0,
            market: fill.market,
            side: fill.side.to_owned(),
            price: fill.price,
            quantity: fill.quantity,
            notional: fill.notional,
            fee: fill.fee,
            fee_asset: fill.fee_asset,
        });
    }
    let mut orders: Vec<u64> = fills.iter().map(|f| f.order_id).collect();
    orders.sort_unstable();
    orders.dedup();
    let mut requests: Vec<SignedRequest> = gw.store.signed_orders(&orders).await?.iter().map(SignedRequest::of).collect();
    let mut withdrawals = Vec::new();
    for r in gw.store.signed_withdrawals(account, after, through).await? {
        let status = match gw.store.withdrawal(tandem_matching::WithdrawalId(r.ref_id)).await? {
            Some(w) => match w.status {
                WithdrawalStatus::Pending => "pending",
                WithdrawalStatus::Completed => "completed",
                WithdrawalStatus::Failed => "failed",
            },
            None => "pending",
        };
        withdrawals.push(EvidenceWithdrawal { withdrawal_id: r.ref_id, status: status.to_owned() });
        debug_assert_eq!(r.kind, SignedRequestKind::Withdrawal);
        requests.push(SignedRequest::of(&r));
    }
    Ok(Evidence { account: account.0, after_seq: after.0, through_seq: through.0, fills, withdrawals, requests })
}
