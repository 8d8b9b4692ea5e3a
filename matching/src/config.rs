//! Assets and markets, and the conversion between decimals at the edges and integer units inside.
//!
//! [`ExchangeConfig`] is what an operator writes (decimals, symbols); [`EngineConfig`] is what the
//! engine runs on (integers, indices). The engine config is the journal's genesis record, so a
//! replay always runs under the rules the commands were accepted under.

use crate::types::{Amount, AssetId, MarketId, Price, Quantity};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Largest price or quantity the engine accepts, in minimal units. Keeps every product of a
/// price and a quantity far inside `u128` and every notional inside `u64`.
pub const MAX_UNITS: u64 = 1 << 53;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSpec {
    pub symbol: String,
    /// Decimal places of the minimal unit (8 for BTC: satoshis; 2 for USD: cents).
    pub decimals: u8,
    /// Cap on the total ever held on the exchange, in minimal units; it bounds every balance so
    /// ledger arithmetic cannot overflow.
    pub max_supply: Amount,
}

impl AssetSpec {
    pub fn scale(&self) -> u64 {
        10u64.pow(self.decimals as u32)
    }

    /// Converts a decimal amount to minimal units; refuses fractions of a unit and negatives.
    pub fn to_units(&self, value: Decimal) -> Result<Amount, UnitError> {
        to_units(value, self.decimals).map(Amount)
    }

    pub fn to_decimal(&self, amount: Amount) -> Decimal {
        to_decimal(amount.0, self.decimals)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketSpec {
    pub symbol: String,
    pub base: AssetId,
    pub quote: AssetId,
    /// Price increment, in quote minimal units per whole base unit.
    pub tick: Price,
    /// Quantity increment, in base minimal units.
    pub lot: Quantity,
    /// Smallest order value, in quote minimal units.
    pub min_notional: Amount,
    pub maker_fee_bps: u16,
    pub taker_fee_bps: u16,
}

/// Everything the engine needs to know about assets and markets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub assets: Vec<AssetSpec>,
    pub markets: Vec<MarketSpec>,
}

impl EngineConfig {
    pub fn asset(&self, id: AssetId) -> Option<&AssetSpec> {
        self.assets.get(id.0 as usize)
    }

    pub fn market(&self, id: MarketId) -> Option<&MarketSpec> {
        self.markets.get(id.0 as usize)
    }

    pub fn asset_by_symbol(&self, symbol: &str) -> Option<AssetId> {
        self.assets
            .iter()
            .position(|a| a.symbol.eq_ignore_ascii_case(symbol))
            .map(|i| AssetId(i as u16))
    }

    /// Accepts `BTC-USD`, `BTCUSD` and `btc_usd`.
    pub fn market_by_symbol(&self, symbol: &str) -> Option<MarketId> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect::<String>()
        };
        let wanted = norm(symbol);
        self.markets
            .iter()
            .position(|m| norm(&m.symbol) == wanted)
            .map(|i| MarketId(i as u16))
    }

    /// Base-unit scale of a market: notional = price * quantity / scale.
    pub fn base_scale(&self, market: &MarketSpec) -> u64 {
        self.assets[market.base.0 as usize].scale()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.assets.is_empty() || self.assets.len() > u16::MAX as usize {
            return Err(ConfigError::Invalid("between 1 and 65535 assets are needed".into()));
        }
        for (i, a) in self.assets.iter().enumerate() {
            if a.decimals > 18 {
                return Err(ConfigError::Invalid(format!("asset {}: at most 18 decimals", a.symbol)));
            }
            if a.max_supply.0 == 0 || a.max_supply.0 > (1 << 62) {
                return Err(ConfigError::Invalid(format!(
                    "asset {}: max_supply must be between 1 and 2^62 units",
                    a.symbol
                )));
            }
            if self.assets[..i].iter().any(|b| b.symbol.eq_ignore_ascii_case(&a.symbol)) {
                return Err(ConfigError::Invalid(format!("asset {} listed twice", a.symbol)));
            }
        }
        for (i, m) in self.markets.iter().enumerate() {
            let bad = |why: &str| ConfigError::Invalid(format!("market {}: {why}", m.symbol));
            if self.asset(m.base).is_none() || self.asset(m.quote).is_none() {
                return Err(bad("unknown base or quote asset"));
            }
            if m.base == m.quote {
                return Err(bad("base and quote must differ"));
            }
            if m.tick.0 == 0 || m.tick.0 > MAX_UNITS || m.lot.0 == 0 || m.lot.0 > MAX_UNITS {
                return Err(bad("tick and lot must be positive"));
            }
            if m.maker_fee_bps > 10_000 || m.taker_fee_bps > 10_000 {
                return Err(bad("fees are at most 10000 bps"));
            }
            if self.markets[..i].iter().any(|o| o.symbol.eq_ignore_ascii_case(&m.symbol)) {
                return Err(bad("listed twice"));
            }
        }
        Ok(())
    }
}

/// The operator-facing configuration: symbols and decimals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeConfig {
    pub assets: Vec<AssetConfig>,
    pub markets: Vec<MarketConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssetConfig {
    pub symbol: String,
    pub decimals: u8,
    pub max_supply: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarketConfig {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick_size: Decimal,
    pub lot_size: Decimal,
    pub min_notional: Decimal,
    pub maker_fee_bps: u16,
    pub taker_fee_bps: u16,
}

impl Default for ExchangeConfig {
    /// BTC in satoshis, USD in cents, one BTC-USD market.
    fn default() -> Self {
        ExchangeConfig {
            assets: vec![
                AssetConfig { symbol: "BTC".into(), decimals: 8, max_supply: Decimal::from(21_000_000) },
                AssetConfig {
                    symbol: "USD".into(),
                    decimals: 2,
                    max_supply: Decimal::from(1_000_000_000_000u64),
                },
            ],
            markets: vec![MarketConfig {
                symbol: "BTC-USD".into(),
                base: "BTC".into(),
                quote: "USD".into(),
                tick_size: Decimal::new(1, 2),
                lot_size: Decimal::new(1, 5),
                min_notional: Decimal::from(1),
                maker_fee_bps: 10,
                taker_fee_bps: 20,
            }],
        }
    }
}

impl ExchangeConfig {
    /// Resolves symbols and decimals into the engine's integer configuration.
    pub fn to_engine(&self) -> Result<EngineConfig, ConfigError> {
        let mut assets = Vec::with_capacity(self.assets.len());
        for a in &self.assets {
            let max_supply = to_units(a.max_supply, a.decimals)
                .map_err(|e| ConfigError::Invalid(format!("asset {} max_supply: {e}", a.symbol)))?;
            assets.push(AssetSpec { symbol: a.symbol.clone(), decimals: a.decimals, max_supply: Amount(max_supply) });
        }
        let partial = EngineConfig { assets, markets: vec![] };
        let mut markets = Vec::with_capacity(self.markets.len());
        for m in &self.markets {
            let bad = |why: String| ConfigError::Invalid(format!("market {}: {why}", m.symbol));
            let base = partial
                .asset_by_symbol(&m.base)
                .ok_or_else(|| bad(format!("unknown base asset {}", m.base)))?;
            let quote = partial
                .asset_by_symbol(&m.quote)
                .ok_or_else(|| bad(format!("unknown quote asset {}", m.quote)))?;
            let qd = partial.assets[quote.0 as usize].decimals;
            let bd = partial.assets[base.0 as usize].decimals;
            markets.push(MarketSpec {
                symbol: m.symbol.clone(),
                base,
                quote,
                tick: Price(to_units(m.tick_size, qd).map_err(|e| bad(format!("tick_size: {e}")))?),
                lot: Quantity(to_units(m.lot_size, bd).map_err(|e| bad(format!("lot_size: {e}")))?),
                min_notional: Amount(to_units(m.min_notional, qd).map_err(|e| bad(format!("min_notional: {e}")))?),
                maker_fee_bps: m.maker_fee_bps,
                taker_fee_bps: m.taker_fee_bps,
            });
        }
        let config = EngineConfig { assets: partial.assets, markets };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid exchange configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("must not be negative")]
    Negative,
    #[error("has more than {0} decimal places")]
    TooPrecise(u8),
    #[error("is too large")]
    TooLarge,
}

/// Decimal to minimal units, exactly: a value with more decimals than the unit is refused rather
/// than rounded, so nothing is ever created or lost in conversion.
pub fn to_units(value: Decimal, decimals: u8) -> Result<u64, UnitError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(UnitError::Negative);
    }
    let normalized = value.normalize();
    if normalized.scale() > decimals as u32 {
        return Err(UnitError::TooPrecise(decimals));
    }
    let factor = Decimal::from(10u64.pow(decimals as u32));
    let scaled = normalized.checked_mul(factor).ok_or(UnitError::TooLarge)?;
    let mantissa = scaled.normalize();
    // After normalising, an integer has scale 0.
    if mantissa.scale() != 0 {
        return Err(UnitError::TooPrecise(decimals));
    }
    u64::try_from(mantissa.mantissa()).map_err(|_| UnitError::TooLarge)
}

pub fn to_decimal(units: u64, decimals: u8) -> Decimal {
    Decimal::from_i128_with_scale(units as i128, decimals as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn converts_exactly_or_refuses() {
        assert_eq!(to_units(dec!(1.5), 8), Ok(150_000_000));
        assert_eq!(to_units(dec!(0.00000001), 8), Ok(1));
        assert_eq!(to_units(dec!(65000.10), 2), Ok(6_500_010));
        assert_eq!(to_units(dec!(0.000000001), 8), Err(UnitError::TooPrecise(8)));
        assert_eq!(to_units(dec!(-1), 8), Err(UnitError::Negative));
        assert_eq!(to_units(dec!(1e20), 8), Err(UnitError::TooLarge));
        assert_eq!(to_units(dec!(0), 2), Ok(0));
        assert_eq!(to_decimal(150_000_000, 8), dec!(1.5));
    }

    #[test]
    fn default_config_resolves() {
        let c = ExchangeConfig::default().to_engine().unwrap();
        let m = &c.markets[0];
        assert_eq!(m.tick, Price(1));
        assert_eq!(m.lot, Quantity(1000));
        assert_eq!(m.min_notional, Amount(100));
        assert_eq!(c.market_by_symbol("btcusd"), Some(MarketId(0)));
        assert_eq!(c.asset_by_symbol("usd"), Some(AssetId(1)));
        assert_eq!(c.assets[0].max_supply, Amount(21_000_000 * 100_000_000));
    }
}
