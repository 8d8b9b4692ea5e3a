//! Newtypes for the engine's identifiers and quantities.
//!
//! Everything inside the engine is an unsigned integer in the asset's minimal unit
//! (satoshis, cents). Decimals exist only at the edges (see [`crate::config`]).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An account in the ledger; assigned by the engine, starting at 1.
    AccountId(u64)
);
id_type!(
    /// An order; assigned by the engine in placement order, starting at 1.
    OrderId(u64)
);
id_type!(
    /// A fill between a maker and a taker order.
    TradeId(u64)
);
id_type!(
    /// A withdrawal request, pending until settlement completes or fails it.
    WithdrawalId(u64)
);
id_type!(
    /// A settlement batch; chosen by the settlement service, increasing, never reused.
    BatchId(u64)
);
id_type!(
    /// Index of an asset in the engine configuration.
    AssetId(u16)
);
id_type!(
    /// Index of a market in the engine configuration.
    MarketId(u16)
);
id_type!(
    /// Position of a command in the journal; the engine's logical clock.
    Seq(u64)
);
id_type!(
    /// Milliseconds since the Unix epoch, stamped by the sequencer when the command is journaled
    /// (never read from a clock inside the engine, so replay is deterministic).
    Timestamp(u64)
);

/// An amount of one asset in its minimal unit (satoshis for BTC, cents for USD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Amount(pub u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A limit price: minimal units of the quote asset per one whole unit of the base asset
/// (cents per bitcoin for BTC-USD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Price(pub u64);

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order quantity in minimal units of the base asset (satoshis for BTC-USD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Quantity(pub u64);

impl Quantity {
    pub const ZERO: Quantity = Quantity(0);

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Who an account belongs to; only users and partners trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    User,
    Partner,
    /// The provider's fee account: every maker and taker fee is credited here.
    Fee,
    /// The provider's settlement pool: covers late sellers in a settlement batch.
    SettlementPool,
}

impl AccountKind {
    pub fn can_trade(self) -> bool {
        matches!(self, AccountKind::User | AccountKind::Partner)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Partner => "partner",
            AccountKind::Fee => "fee",
            AccountKind::SettlementPool => "settlement_pool",
        }
    }
}

/// A client-chosen order id, unique per account for the life of the exchange, so a retried
/// request never makes a second order. Up to 36 bytes of `[A-Za-z0-9._:-]` (a UUID fits).
/// Stored inline so orders stay `Copy`-cheap and hashing never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; ClientOrderId::MAX_LEN],
}

impl ClientOrderId {
    pub const MAX_LEN: usize = 36;

    pub fn new(s: &str) -> Result<ClientOrderId, ClientOrderIdError> {
        if s.is_empty() {
            return Err(ClientOrderIdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(ClientOrderIdError::TooLong(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(ClientOrderIdError::BadChar(c));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(ClientOrderId { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new` and on deserialisation).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

/// A client-chosen withdrawal id, unique per account for the life of the exchange: a withdrawal
/// retried after an unknown outcome (a timeout, a `503`) is refused rather than paid twice.
/// Same rules as a [`ClientOrderId`].
pub type ClientWithdrawalId = ClientOrderId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientOrderIdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes long, at most 36 are allowed")]
    TooLong(usize),
    #[error("contains {0:?}; allowed are letters, digits and . _ : -")]
    BadChar(char),
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientOrderId({:?})", self.as_str())
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ClientOrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ClientOrderId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_id_validates() {
        assert_eq!(ClientOrderId::new("abc-1").unwrap().as_str(), "abc-1");
        assert!(ClientOrderId::new("").is_err());
        assert!(ClientOrderId::new(&"x".repeat(37)).is_err());
        assert!(ClientOrderId::new("héllo").is_err());
        assert!(ClientOrderId::new("a b").is_err());
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(ClientOrderId::new(uuid).unwrap().as_str(), uuid);
    }

    #[test]
    fn client_order_id_round_trips_through_postcard() {
        let id = ClientOrderId::new("retry-safe.7").unwrap();
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<ClientOrderId>(&bytes).unwrap(), id);
    }
}
