//! Binance stream names (`btcusd@depth@100ms`, `btcusd@kline_1m`, ...): what each names.

use tandem_matching::{EngineConfig, MarketId};

use super::super::interval::Interval;
use super::super::market_of;

/// How often a book stream is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Speed {
    Ms100,
    Ms1000,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Trade,
    AggTrade,
    BookTicker,
    /// Book changes (`U` to `u`), gathered over the period.
    Depth(Speed),
    /// The top `levels` of the book, whole, each period.
    PartialDepth(usize, Speed),
    /// Candles of the interval named (`1m`).
    Kline(&'static str),
}

/// A market stream: a market and what of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarketStream {
    pub market: MarketId,
    pub kind: Kind,
}

const KLINE_INTERVALS: [&str; 16] =
    ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"];

impl MarketStream {
    /// Parses `<symbol>@<kind>`; the symbol in any case (Binance's are lower case).
    pub fn parse(cfg: &EngineConfig, name: &str) -> Option<MarketStream> {
        let (symbol, kind) = name.split_once('@')?;
        let (market, _) = market_of(cfg, &symbol.to_ascii_uppercase()).ok()?;
        let speed = |rest: &str| match rest {
            "" => Some(Speed::Ms1000),
            "@1000ms" => Some(Speed::Ms1000),
            "@100ms" => Some(Speed::Ms100),
            _ => None,
        };
        let kind = match kind {
            "trade" => Kind::Trade,
            "aggTrade" => Kind::AggTrade,
            "bookTicker" => Kind::BookTicker,
            _ => {
                if let Some(interval) = kind.strip_prefix("kline_") {
                    Interval::parse(interval).ok()?;
                    Kind::Kline(KLINE_INTERVALS.into_iter().find(|i| *i == interval)?)
                } else if let Some(rest) = kind.strip_prefix("depth") {
                    let digits = rest.find('@').unwrap_or(rest.len());
                    match &rest[..digits] {
                        "" => Kind::Depth(speed(&rest[digits..])?),
                        levels @ ("5" | "10" | "20") => Kind::PartialDepth(levels.parse().ok()?, speed(&rest[digits..])?),
                        _ => return None,
                    }
                } else {
                    return None;
                }
            }
        };
        Some(MarketStream { market, kind })
    }

    pub fn speed(&self) -> Option<Speed> {
        match self.kind {
            Kind::Depth(s) | Kind::PartialDepth(_, s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_binance_spells_them() {
        let cfg = tandem_matching::ExchangeConfig::default().to_engine().unwrap();
        let p = |n| MarketStream::parse(&cfg, n).map(|s| s.kind);
        assert_eq!(p("btcusd@trade"), Some(Kind::Trade));
        assert_eq!(p("BTCUSD@aggTrade"), Some(Kind::AggTrade));
        assert_eq!(p("btcusd@bookTicker"), Some(Kind::BookTicker));
        assert_eq!(p("btcusd@depth"), Some(Kind::Depth(Speed::Ms1000)));
        assert_eq!(p("btcusd@depth@100ms"), Some(Kind::Depth(Speed::Ms100)));
        assert_eq!(p("btcusd@depth@1000ms"), Some(Kind::Depth(Speed::Ms1000)));
        assert_eq!(p("btcusd@depth20@100ms"), Some(Kind::PartialDepth(20, Speed::Ms100)));
        assert_eq!(p("btcusd@depth5"), Some(Kind::PartialDepth(5, Speed::Ms1000)));
        assert_eq!(p("btcusd@kline_1m"), Some(Kind::Kline("1m")));
        assert_eq!(p("btcusd@kline_1M"), Some(Kind::Kline("1M")));
        for bad in ["btcusd@kline_2m", "btcusd@depth7", "btcusd@depth@10ms", "ethusd@trade", "btcusd", "@trade", "btcusd@aggtrade"] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
