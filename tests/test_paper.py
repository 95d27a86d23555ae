"""The paper L1's fill rules, each against a hand-computed case (fee 10 bps, slippage 2 bps)."""

from __future__ import annotations

import pytest

from l2fast.evaluation.paper import PaperBroker
from l2fast.signals import TacticalSignal

BTC, ETH = "BTC/USDT", "ETH/USDT"
MIN = 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
FEE, SLIP = 0.001, 0.0002  # 10 and 2 basis points


def order(side: str, qty: float, stop: float | None = None, tp: float | None = None, ts: int = T0,
          symbol: str = BTC) -> TacticalSignal:
    return TacticalSignal(symbol, side, qty, 0.8, 0.8, stop, tp, {"code": "ENTRY"}, ts)


def hold(ts: int, stop: float | None = None, tp: float | None = None, symbol: str = BTC) -> TacticalSignal:
    return TacticalSignal.hold(symbol, ts, {"code": "LOW_CONSENSUS"}, stop_loss=stop, take_profit=tp)


def broker_with(side: str, qty: float = 2.0, stop: float | None = 95.0, tp: float | None = 110.0) -> PaperBroker:
    """A broker holding ``qty`` entered at the T0+1m open of 100 (levels ``stop``/``tp``)."""
    b = PaperBroker(10_000.0, fee_bps=10, slippage_bps=2)
    b.on_bar(BTC, T0, 100.0, 100.0, 100.0, 100.0)
    b.on_signal(order(side, qty, stop, tp))
    [fill] = b.on_bar(BTC, T0 + MIN, 100.0, 100.0, 100.0, 100.0)
    assert fill.reason == "entry"
    return b


def test_entry_fills_at_the_next_bars_open_worsened_by_slippage_and_charged_a_fee():
    b = PaperBroker(10_000.0, fee_bps=10, slippage_bps=2)
    assert b.on_bar(BTC, T0, 99.0, 101.0, 98.0, 100.0) == []
    b.on_signal(order("buy", 2.0, 95.0, 110.0))
    assert b.fills == []  # nothing executes before the next bar
    [fill] = b.on_bar(BTC, T0 + MIN, 100.0, 101.0, 99.5, 100.5)
    price = 100.0 * (1 + SLIP)
    fee = 2.0 * price * FEE
    assert (fill.symbol, fill.side, fill.qty, fill.ts_ms, fill.reason) == (BTC, "buy", 2.0, T0 + MIN, "entry")
    assert fill.price == pytest.approx(price, rel=1e-15)
    assert fill.fee == pytest.approx(fee, rel=1e-15)
    assert b.cash == pytest.approx(10_000.0 - 2.0 * price - fee, rel=1e-15)
    assert b.equity == pytest.approx(10_000.0 - 2.0 * price - fee + 2.0 * 100.5, rel=1e-15)
    pos = b.positions[BTC]
    assert (pos.side, pos.qty, pos.stop_loss, pos.take_profit) == (1, 2.0, 95.0, 110.0)


def test_sell_entry_opens_a_short_filled_below_the_open():
    b = broker_with("sell", stop=105.0, tp=90.0)
    [fill] = b.fills
    assert fill.side == "sell"
    assert fill.price == pytest.approx(100.0 * (1 - SLIP), rel=1e-15)
    assert b.positions[BTC].side == -1


def test_long_stop_fills_at_the_stop_when_the_low_touches_it():
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 98.0, 99.0, 94.0, 96.0)
    assert (fill.side, fill.reason, fill.ts_ms) == ("sell", "stop_loss", T0 + 2 * MIN)
    assert fill.price == pytest.approx(95.0 * (1 - SLIP), rel=1e-15)
    entry = 100.0 * (1 + SLIP)
    [trade] = b.trades
    fees = 2.0 * entry * FEE + 2.0 * fill.price * FEE
    assert trade.pnl == pytest.approx(2.0 * (fill.price - entry) - fees, rel=1e-12)
    assert (trade.side, trade.exit_reason) == ("long", "stop_loss")
    assert BTC not in b.positions
    assert b.equity == pytest.approx(10_000.0 + trade.pnl, rel=1e-15)


def test_long_stop_is_not_hit_by_a_low_above_it():
    b = broker_with("buy")
    assert b.on_bar(BTC, T0 + 2 * MIN, 98.0, 99.0, 95.01, 96.0) == []


def test_a_bar_opening_through_the_stop_fills_at_the_open():
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 93.0, 94.0, 92.0, 93.5)
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(93.0 * (1 - SLIP), rel=1e-15)


def test_long_take_profit_fills_at_the_level_when_the_high_reaches_it():
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 105.0, 111.0, 104.0, 109.0)
    assert (fill.side, fill.reason) == ("sell", "take_profit")
    assert fill.price == pytest.approx(110.0 * (1 - SLIP), rel=1e-15)


def test_a_bar_opening_beyond_the_take_profit_fills_it_at_the_open():
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 112.0, 113.0, 111.0, 112.5)
    assert fill.reason == "take_profit"
    assert fill.price == pytest.approx(112.0 * (1 - SLIP), rel=1e-15)


def test_when_the_range_touches_both_levels_the_stop_is_assumed_first():
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 100.0, 111.0, 94.0, 105.0)
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(95.0 * (1 - SLIP), rel=1e-15)


def test_the_open_decides_when_it_is_already_beyond_the_take_profit():
    # The open is the bar's first price: the take-profit filled there before any later low.
    b = broker_with("buy")
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, 112.0, 113.0, 94.0, 96.0)
    assert fill.reason == "take_profit"
    assert fill.price == pytest.approx(112.0 * (1 - SLIP), rel=1e-15)


@pytest.mark.parametrize(("bar", "reason", "reference"), [
    ((102.0, 106.0, 101.0, 104.0), "stop_loss", 105.0),     # high touches the stop
    ((107.0, 108.0, 106.0, 107.5), "stop_loss", 107.0),     # gap above the stop: the open
    ((95.0, 96.0, 89.0, 91.0), "take_profit", 90.0),        # low reaches the take-profit
    ((88.0, 89.0, 87.0, 88.5), "take_profit", 88.0),        # gap below it: the open
    ((100.0, 106.0, 89.0, 95.0), "stop_loss", 105.0),       # both touched: the stop
])
def test_short_levels_mirror_the_long_ones(bar, reason, reference):
    b = broker_with("sell", stop=105.0, tp=90.0)
    [fill] = b.on_bar(BTC, T0 + 2 * MIN, *bar)
    assert (fill.side, fill.reason) == ("buy", reason)
    assert fill.price == pytest.approx(reference * (1 + SLIP), rel=1e-15)
    entry = 100.0 * (1 - SLIP)
    [trade] = b.trades
    assert trade.pnl == pytest.approx(-2.0 * (fill.price - entry) - 2.0 * FEE * (entry + fill.price), rel=1e-12)


def test_levels_are_checked_on_the_entry_bar_itself():
    b = PaperBroker(10_000.0, fee_bps=10, slippage_bps=2)
    b.on_bar(BTC, T0, 100.0, 100.0, 100.0, 100.0)
    b.on_signal(order("buy", 1.0, 97.0, 106.0))
    entry, stop = b.on_bar(BTC, T0 + MIN, 100.0, 100.5, 96.0, 97.5)
    assert (entry.reason, stop.reason) == ("entry", "stop_loss")
    assert stop.price == pytest.approx(97.0 * (1 - SLIP), rel=1e-15)


def test_a_hold_with_a_position_moves_its_levels_from_the_next_bar_on():
    b = broker_with("buy")
    b.on_signal(hold(T0 + MIN, stop=99.0, tp=112.0))  # e.g. breakeven then trailing
    assert b.on_bar(BTC, T0 + 2 * MIN, 100.0, 111.0, 99.5, 100.0) == []  # 110 no longer a target
    [fill] = b.on_bar(BTC, T0 + 3 * MIN, 100.0, 100.0, 98.5, 99.0)
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(99.0 * (1 - SLIP), rel=1e-15)


def test_a_hold_without_levels_keeps_the_position_levels():
    b = broker_with("buy")
    b.on_signal(hold(T0 + MIN))
    assert (b.positions[BTC].stop_loss, b.positions[BTC].take_profit) == (95.0, 110.0)


def test_an_opposite_signal_exits_the_whole_position_at_the_next_open():
    b = broker_with("buy", qty=2.0)
    b.on_bar(BTC, T0 + 2 * MIN, 101.0, 102.0, 100.0, 101.5)
    b.on_signal(order("sell", 0.5, ts=T0 + 2 * MIN))  # an exit: the position's qty counts
    assert b.on_bar(ETH, T0 + 3 * MIN, 10.0, 10.0, 10.0, 10.0) == []  # only BTC's next bar fills it
    [fill] = b.on_bar(BTC, T0 + 3 * MIN, 102.0, 103.0, 101.0, 102.5)
    assert (fill.side, fill.qty, fill.reason) == ("sell", 2.0, "exit")
    assert fill.price == pytest.approx(102.0 * (1 - SLIP), rel=1e-15)
    assert b.trades[0].exit_reason == "exit"
    assert BTC not in b.positions


def test_a_same_side_signal_while_open_is_ignored_and_counted():
    b = broker_with("buy")
    b.on_signal(order("buy", 1.0, 90.0, 120.0, ts=T0 + MIN))
    assert b.pending == {}
    assert b.ignored_signals == 1


def test_equity_is_cash_plus_every_position_at_its_own_last_close():
    b = PaperBroker(10_000.0, fee_bps=0, slippage_bps=0)
    for symbol, price in ((BTC, 100.0), (ETH, 10.0)):
        b.on_bar(symbol, T0, price, price, price, price)
        b.on_signal(order("buy" if symbol == BTC else "sell", 3.0, ts=T0, symbol=symbol))
    b.on_bar(BTC, T0 + MIN, 100.0, 104.0, 99.0, 103.0)
    b.on_bar(ETH, T0 + MIN, 10.0, 10.0, 9.0, 9.5)
    # cash: 10000 - 300 (long BTC) + 30 (short ETH); marks 103 and 9.5.
    assert b.equity == pytest.approx(10_000.0 - 300.0 + 30.0 + 3.0 * 103.0 - 3.0 * 9.5, rel=1e-15)
    assert b.equity_curve == pytest.approx([10_000.0, 10_000.0, 10_000.0 + 9.0, 10_000.0 + 9.0 + 1.5])


def test_zero_costs_make_a_round_trip_at_the_same_price_flat():
    b = PaperBroker(10_000.0, fee_bps=0, slippage_bps=0)
    b.on_bar(BTC, T0, 100.0, 100.0, 100.0, 100.0)
    b.on_signal(order("buy", 1.5))
    b.on_bar(BTC, T0 + MIN, 100.0, 100.0, 100.0, 100.0)
    b.on_signal(order("sell", 1.5, ts=T0 + MIN))
    b.on_bar(BTC, T0 + 2 * MIN, 100.0, 100.0, 100.0, 100.0)
    assert (b.equity, b.fees, b.trades[0].pnl) == (10_000.0, 0.0, 0.0)


@pytest.mark.parametrize("kwargs", [{"initial_equity": 0.0}, {"fee_bps": -1.0}, {"slippage_bps": float("nan")},
                                    {"slippage_bps": 10_000.0}])
def test_out_of_range_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PaperBroker(**kwargs)
