"""FinRL's action semantics (l2fast.decision._sizing.finrl_shares): the shares FinRL's
StockTradingEnv trades for an action, against its pure-Python twin and against every trade
FinRL itself made in the recordings (tests/finrl/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2fast.decision._sizing import finrl_shares
from l2fast.errors import InvalidInputError

from reference.sizing import finrl_shares_ref


@settings(max_examples=2_000, deadline=None)
@given(action=st.one_of(st.floats(-1.0, 1.0), st.sampled_from([0.29, -0.29, 0.57, 0.0099, -0.01, 1.0, -1.0])),
       hmax=st.sampled_from([1, 7, 100, 1000]), price=st.floats(0.01, 1e5),
       cash=st.one_of(st.floats(0.0, 1e7), st.just(0.0)), held=st.floats(0.0, 500.0),
       buy_cost=st.sampled_from([0.0, 0.001, 0.0025]))
def test_shares_equal_the_twin(action, hmax, price, cash, held, buy_cost) -> None:
    assert finrl_shares(action, hmax, price, cash, held, buy_cost) == finrl_shares_ref(
        action, hmax, price, cash, held, buy_cost)


def test_the_product_is_float32_as_numpy_makes_it() -> None:
    # float32(0.29) * 100 = 29.000000953..., float64 0.29 * 100 = 28.999999999999996
    assert finrl_shares(0.29, 100, 10.0, 1e9, 0.0, 0.001) == 29.0
    assert finrl_shares(-0.0099, 100, 10.0, 1e9, 5.0, 0.001) == 0.0
    assert finrl_shares(-0.5, 100, 10.0, 1e9, 20.0, 0.001) == -20.0  # capped by the holdings
    assert finrl_shares(1.0, 100, 100.0, 1_000.0, 0.0, 0.001) == 9.0  # 1000 // 100.1


@pytest.mark.parametrize("scenario", ["btc_plain", "btc_eth_plain"])
def test_every_trade_finrl_made_is_reproduced(finrl_reference, scenario) -> None:
    rec = finrl_reference.scenario(scenario)
    env = finrl_reference.params(scenario)["env_kwargs"]
    n = env["stock_dim"]
    for t in range(len(rec["executed_shares"])):
        cash, held, closes = float(rec["cash"][t]), rec["holdings"][t], rec["closes"][t]
        actions = rec["actions"][t]
        got = np.zeros(n)
        # FinRL's order: it argsorts the whole shares (ties by numpy's argsort), sells from the
        # most negative, buys from the largest, each buy capped by the cash left.
        shares = (actions * env["hmax"]).astype(int)
        order = np.argsort(shares)
        for k in order[:int((shares < 0).sum())]:
            got[k] = finrl_shares(float(actions[k]), env["hmax"], float(closes[k]), cash, float(held[k]),
                                  env["buy_cost_pct"][k])
            cash += closes[k] * -got[k] * (1 - env["sell_cost_pct"][k])
        for k in order[::-1][:int((shares > 0).sum())]:
            got[k] = finrl_shares(float(actions[k]), env["hmax"], float(closes[k]), cash, float(held[k]),
                                  env["buy_cost_pct"][k])
            cash -= closes[k] * got[k] * (1 + env["buy_cost_pct"][k])
        np.testing.assert_array_equal(got, rec["executed_shares"][t], err_msg=f"step {t}")


@pytest.mark.parametrize("kwargs, field", [
    ({"hmax": 0}, "hmax"), ({"hmax": 1.5}, "hmax"), ({"price": 0.0}, "price"), ({"cash": float("nan")}, "cash"),
    ({"action": float("inf")}, "action"), ({"buy_cost": 1.0}, "buy_cost"),
])
def test_bad_inputs_are_named(kwargs, field) -> None:
    args = {"action": 0.5, "hmax": 100, "price": 10.0, "cash": 1e6, "held": 0.0, "buy_cost": 0.001, **kwargs}
    with pytest.raises(InvalidInputError, match=field):
        finrl_shares(**args)
