"""ccxt's unchanged `binance` class against Tandem: only its URLs and options are set.

Run by tests/binance_ccxt.rs with TANDEM_URL and two accounts' API keys (TAKER_*, MAKER_*):
load markets, order book, ticker, balance, limit and market orders, fetch order, open orders,
cancel, my trades, trades and candles, then watch_order_book and watch_trades over WebSocket.
Prints one line per step; any failed check raises, so the process exits non-zero.
"""
import asyncio
import os
import sys

import ccxt.pro as ccxtpro

BASE = os.environ["TANDEM_URL"]
WS = BASE.replace("http://", "ws://", 1)
SYMBOL = "BTC/USD"


def client(key, secret):
    ex = ccxtpro.binance({
        "apiKey": key,
        "secret": secret,
        "options": {
            # Spot only: Tandem has no futures, and no Binance wallet (sapi) endpoints.
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
        },
    })
    ex.urls["api"]["public"] = BASE + "/api/v3"
    ex.urls["api"]["private"] = BASE + "/api/v3"
    ex.urls["api"]["ws"]["spot"] = WS + "/ws"
    return ex


def check(ok, what):
    if not ok:
        raise AssertionError(what)


async def book_with(watcher, maker, price, amount):
    """Watches the book while the maker offers `amount` at `price`; the book once it shows it."""
    watching = asyncio.create_task(watcher.watch_order_book(SYMBOL))
    await asyncio.sleep(1)
    await maker.create_limit_sell_order(SYMBOL, amount, price)
    ob = await asyncio.wait_for(watching, 20)
    for _ in range(20):
        if [price, amount] in ob["asks"]:
            break
        ob = await asyncio.wait_for(watcher.watch_order_book(SYMBOL), 20)
    return ob


def step(name, detail=""):
    print(f"ok {name} {detail}", flush=True)


async def main():
    taker = client(os.environ["TAKER_KEY"], os.environ["TAKER_SECRET"])
    maker = client(os.environ["MAKER_KEY"], os.environ["MAKER_SECRET"])
    try:
        markets = await taker.load_markets()
        await maker.load_markets()
        m = markets[SYMBOL]
        check(m["id"] == "BTCUSD" and m["spot"] and m["base"] == "BTC" and m["quote"] == "USD", m)
        check(m["precision"]["price"] is not None and m["limits"]["amount"]["min"] is not None, m)
        step("load_markets", m["precision"])

        balance = await taker.fetch_balance()
        btc_before, usd_before = balance["BTC"]["free"], balance["USD"]["free"]
        check(btc_before > 0 and usd_before > 0, balance["total"])
        step("fetch_balance", balance["total"])

        # A resting order: fetched, listed, cancelled.
        bid = await taker.create_limit_buy_order(SYMBOL, 0.01, 50000)
        check(bid["status"] == "open" and bid["id"], bid)
        got = await taker.fetch_order(bid["id"], SYMBOL)
        check(got["price"] == 50000 and got["amount"] == 0.01 and got["clientOrderId"] == bid["clientOrderId"], got)
        open_orders = await taker.fetch_open_orders(SYMBOL)
        check([o["id"] for o in open_orders] == [bid["id"]], open_orders)
        book = await taker.fetch_order_book(SYMBOL)
        check(book["bids"][0] == [50000, 0.01] and book["nonce"] > 0, book)
        step("limit order, fetch_order, fetch_open_orders, fetch_order_book", book["bids"][:1])
        cancelled = await taker.cancel_order(bid["id"], SYMBOL)
        check(cancelled["status"] == "canceled", cancelled)
        check(await taker.fetch_open_orders(SYMBOL) == [], "no open orders after the cancel")
        step("cancel_order")

        # A trade: the maker's offer, the taker's market buy.
        await maker.create_limit_sell_order(SYMBOL, 0.003, 60000)
        bought = await taker.create_market_buy_order(SYMBOL, 0.001)
        check(bought["status"] == "closed" and bought["filled"] == 0.001 and bought["average"] == 60000, bought)
        filled = await taker.fetch_order(bought["id"], SYMBOL)
        check(filled["status"] == "closed" and filled["cost"] == 60, filled)
        mine = await taker.fetch_my_trades(SYMBOL)
        check(len(mine) == 1 and mine[0]["order"] == bought["id"] and mine[0]["price"] == 60000 and mine[0]["side"] == "buy", mine)
        check(mine[0]["takerOrMaker"] == "taker" and mine[0]["fee"]["currency"] == "BTC", mine[0]["fee"])
        step("market order, fetch_my_trades", mine[0]["fee"])

        ticker = await taker.fetch_ticker(SYMBOL)
        check(ticker["last"] == 60000 and ticker["baseVolume"] == 0.001 and ticker["ask"] == 60000, ticker)
        trades = await taker.fetch_trades(SYMBOL)
        check(trades[-1]["price"] == 60000 and trades[-1]["amount"] == 0.001, trades)
        candles = await taker.fetch_ohlcv(SYMBOL, "1m", limit=5)
        check(candles[-1][4] == 60000 and sum(c[5] for c in candles) == 0.001, candles)
        balance = await taker.fetch_balance()
        check(balance["BTC"]["free"] > btc_before and balance["USD"]["free"] < usd_before, balance["total"])
        step("fetch_ticker, fetch_trades, fetch_ohlcv, fetch_balance after the trade")

        # WebSocket: the book follows a new offer; trades arrive as they happen.
        ob = await book_with(taker, maker, 61000, 0.002)
        check([61000, 0.002] in ob["asks"] and [60000, 0.002] in ob["asks"], ob["asks"])
        step("watch_order_book", ob["asks"][:2])

        watching = asyncio.create_task(taker.watch_trades(SYMBOL))
        await asyncio.sleep(1)
        await taker.create_market_buy_order(SYMBOL, 0.002)
        seen = await asyncio.wait_for(watching, 20)
        check(seen[-1]["price"] == 60000 and seen[-1]["amount"] == 0.002 and seen[-1]["side"] == "buy", seen)
        step("watch_trades", seen[-1]["id"])

        # The book the stream kept is the exchange's.
        ob = await book_with(taker, maker, 62000, 0.001)
        rest = await taker.fetch_order_book(SYMBOL)
        check(ob["asks"][:5] == rest["asks"][:5] and ob["bids"][:5] == rest["bids"][:5], (ob["asks"][:5], rest["asks"][:5]))
        step("order book in sync", rest["asks"][:2])
    finally:
        await taker.close()
        await maker.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # the Rust test prints this and fails
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
