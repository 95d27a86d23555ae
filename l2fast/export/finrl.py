"""FinRL's ``StockTradingEnv`` as a manifest: observation layout, cadence and action semantics.

An agent trained in FinRL's ``StockTradingEnv`` (``finrl/meta/env_stock_trading/env_stocktrading.py``)
observes, raw, ``[cash, close_1..N, shares_1..N, ind1_1..ind1_N, ind2_1..ind2_N, ...]``:
the cash, then the closes and the holdings of its N tickers, then each indicator for every
ticker (indicator-major), tickers in FinRL's order: sorted by name, as
``FeatureEngineer``'s ``sort_values(["date", "tic"])`` leaves them. Its action is
``Box(-1, 1, (N,))``, one per ticker. :class:`FinRLEnv` describes such an env and
:func:`resolve_finrl` turns it (with a bundle's ``training_config["finrl"]``) into what the
exporter writes into the manifest (:mod:`l2fast.models.manifest`):

- ``feature_names``: the layout in the stockstats name space (``feature_namespace =
  "stockstats"``, ``feature_timeframe`` = the env's bar interval), :func:`finrl_stocktrading_layout`.
  One ticker: ``["cash", "close", "holdings", "macd", "boll_ub", ...]``; N > 1 tickers:
  ``["cash", "close@BTC/USDT", "close@ETH/USDT", "holdings@BTC/USDT", "holdings@ETH/USDT",
  "macd@BTC/USDT", "macd@ETH/USDT", ...]``.
- ``decision_timeframe``: the same interval (the agent decided once per row of its data).
- ``finrl``: ``{"env": "stocktrading", "tickers", "hmax", "buy_cost_pct", "sell_cost_pct"
  (one per ticker), "initial_amount", "indicators", "state_space"}``, plus
  ``reward_scaling`` and ``turbulence_threshold`` when given.

Defaults are FinRL 0.3.7's: :data:`FINRL_INDICATORS`, ``hmax`` 100, ``initial_amount`` 1e6,
costs 0.001. The tickers and the timeframe have none. Precedence, per parameter: what the
caller gives (``FinRLEnv`` fields, the command line's flags), else the bundle's
``training_config["finrl"]``, else FinRL's default.

A bundle's ``training_config["finrl"]`` may spell the parameters as this module does
(``tickers``, ``timeframe``, ``indicators``, ``hmax``, ``initial_amount``,
``buy_cost_pct``, ``sell_cost_pct``, ``reward_scaling``, ``turbulence_threshold``) or as
FinRL's env keyword arguments (``tech_indicator_list``; ``stock_dim``, ``state_space`` and
``action_space`` are checked against the tickers and indicators); other keys are left in
the manifest's ``training_config`` only.

It imports none of the export extra (torch, SB3, gymnasium): the command line's ``--help``
stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l2fast.config import is_symbol
from l2fast.errors import ExportError, InvalidInputError
from l2fast.models.manifest import FINRL_ENVS
from l2fast.models.observation import SYMBOL_MARK
from l2fast.technical.bars import parse_timeframe
from l2fast.technical.names import parse_stockstats

__all__ = ["FINRL_DEFAULTS", "FINRL_ENVS", "FINRL_INDICATORS", "FinRLEnv", "finrl_stocktrading_layout",
           "resolve_finrl"]

#: The FinRL environments the exporter lays out (``--finrl``).
#: FinRL 0.3.7's ``finrl.config.INDICATORS``, its default ``tech_indicator_list``.
FINRL_INDICATORS = ("macd", "boll_ub", "boll_lb", "rsi_30", "cci_30", "dx_30", "close_30_sma", "close_60_sma")
#: FinRL's tutorial values of the other env parameters.
FINRL_DEFAULTS: Mapping[str, Any] = {"hmax": 100, "initial_amount": 1_000_000.0, "buy_cost_pct": 0.001,
                                     "sell_cost_pct": 0.001}

# Account columns of the layout (l2fast's account-state features, :mod:`l2fast.models.observation`).
_CASH, _HOLDINGS, _CLOSE = "cash", "holdings", "close"
_FIELDS = ("tickers", "timeframe", "indicators", "hmax", "initial_amount", "buy_cost_pct", "sell_cost_pct",
           "reward_scaling", "turbulence_threshold")


def finrl_stocktrading_layout(tickers: Sequence[str], indicators: Sequence[str]) -> list[str]:
    """``StockTradingEnv``'s state as l2fast feature names (stockstats name space).

    Args:
        tickers: The tickers in FinRL's order (sorted; :func:`resolve_finrl` sorts them).
        indicators: FinRL's ``tech_indicator_list``, in order.

    Returns:
        ``["cash", close per ticker, holdings per ticker, each indicator per ticker]``; with
        one ticker the names are plain (``"close"``), with more each is
        ``<name>@<ticker>`` (``"close@ETH/USDT"``).
    """
    def per_ticker(name: str) -> list[str]:
        return [name] if len(tickers) == 1 else [f"{name}{SYMBOL_MARK}{t}" for t in tickers]

    names = [_CASH, *per_ticker(_CLOSE), *per_ticker(_HOLDINGS)]
    for indicator in indicators:
        names.extend(per_ticker(indicator))
    return names


@dataclass(frozen=True)
class FinRLEnv:
    """A FinRL environment's parameters, as far as the caller gives them.

    Every field left ``None`` is taken from the bundle's ``training_config["finrl"]``, else
    FinRL's default (:data:`FINRL_INDICATORS`, :data:`FINRL_DEFAULTS`); ``tickers`` and
    ``timeframe`` have no default.

    Attributes:
        env: The FinRL environment (:data:`FINRL_ENVS`).
        tickers: Trading pairs (``BTC/USDT``); sorted as FinRL orders them.
        timeframe: The bar interval the agent was trained on (``"1h"``): the timeframe of
            its features and of its decisions.
        indicators: FinRL's ``tech_indicator_list`` (stockstats names, ``rsi_30``...).
        hmax: Largest number of shares one action trades.
        initial_amount: The env's starting cash.
        buy_cost_pct: Buy cost fraction, one for every ticker or one per ticker (in the
            order of ``tickers`` as given).
        sell_cost_pct: Sell cost fraction, likewise.
        reward_scaling: The env's reward scaling (recorded only).
        turbulence_threshold: The env's turbulence gate threshold (recorded only).
    """

    env: str = "stocktrading"
    tickers: Sequence[str] | None = None
    timeframe: str | None = None
    indicators: Sequence[str] | None = None
    hmax: int | None = None
    initial_amount: float | None = None
    buy_cost_pct: float | Sequence[float] | None = None
    sell_cost_pct: float | Sequence[float] | None = None
    reward_scaling: float | None = None
    turbulence_threshold: float | None = None

    @property
    def state_space(self) -> int:
        """``1 + 2N + len(indicators) * N`` (the env must be complete: :func:`resolve_finrl`)."""
        n = len(self.tickers or ())
        return 1 + 2 * n + len(self.indicators or ()) * n

    @property
    def feature_names(self) -> list[str]:
        """The observation layout (:func:`finrl_stocktrading_layout`)."""
        return finrl_stocktrading_layout(self.tickers or (), self.indicators or ())

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``finrl`` object of a complete env."""
        block: dict[str, Any] = {"env": self.env, "tickers": list(self.tickers or ()), "hmax": self.hmax,
                                 "buy_cost_pct": _listed(self.buy_cost_pct),
                                 "sell_cost_pct": _listed(self.sell_cost_pct),
                                 "initial_amount": self.initial_amount,
                                 "indicators": list(self.indicators or ()), "state_space": self.state_space}
        for key in ("reward_scaling", "turbulence_threshold"):
            if getattr(self, key) is not None:
                block[key] = getattr(self, key)
        return block


def _listed(value: float | Sequence[float] | None) -> list[float]:
    """A resolved env's per-ticker costs as a list (a single value stands for every ticker)."""
    if value is None:
        return []
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


def _bundle_params(params: object, source: str) -> dict[str, Any]:
    """A bundle's ``training_config["finrl"]`` in :class:`FinRLEnv`'s spelling."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ExportError(f"{source}: training_config['finrl'] must be a dict of FinRL env parameters, "
                          f"got {type(params).__name__}")
    out = {k: params[k] for k in ("env", *_FIELDS) if params.get(k) is not None}
    given = params.get("tech_indicator_list")
    if given is not None:
        if "indicators" in out and list(out["indicators"]) != list(given):
            raise ExportError(f"{source}: training_config['finrl'] gives indicators {out['indicators']!r} and "
                              f"tech_indicator_list {given!r}")
        out["indicators"] = given
    return out


def _number(value: object, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExportError(f"{source}: FinRL {what} must be a finite number, got {value!r}")
    return float(value)


def _costs(value: object, given_order: Sequence[str], sorted_tickers: Sequence[str], what: str,
           source: str) -> list[float]:
    """One cost per ticker in FinRL's order, from a single value or one per ticker as given."""
    values = [value] * len(given_order) if not isinstance(value, (list, tuple)) else list(value)
    if len(values) != len(given_order):
        raise ExportError(f"{source}: FinRL {what} gives {len(values)} values for {len(given_order)} tickers "
                          f"({', '.join(given_order)})")
    costs = [_number(v, what, source) for v in values]
    if not all(0.0 <= c < 1.0 for c in costs):
        raise ExportError(f"{source}: FinRL {what} must be fractions in [0, 1), got {costs!r}")
    by_ticker = dict(zip(given_order, costs))
    return [by_ticker[t] for t in sorted_tickers]


def resolve_finrl(given: FinRLEnv | None, bundle_params: object = None, *, source: str = "FinRL") -> FinRLEnv:
    """The complete, checked env: ``given`` over the bundle's parameters over FinRL's defaults.

    Args:
        given: What the caller says (``None`` fields are filled in), or ``None``.
        bundle_params: The bundle's ``training_config["finrl"]``, or ``None``.
        source: Names the source in messages.

    Returns:
        A :class:`FinRLEnv` with every parameter set: tickers sorted as FinRL orders them,
        costs one per ticker in that order, ``hmax`` an int, amounts floats.

    Raises:
        ExportError: An unknown env, no or malformed tickers, no or a bad timeframe, an
            indicator l2fast does not compute (the name resolver's message), repeated
            tickers or indicators, a bad number, or bundle parameters (``stock_dim``,
            ``state_space``, ``action_space``) that contradict the layout.
    """
    bundle = _bundle_params(bundle_params, source)
    mine = {k: getattr(given, k) for k in ("env", *_FIELDS)} if given is not None else {}
    merged = {k: mine.get(k) if mine.get(k) is not None else bundle.get(k) for k in ("env", *_FIELDS)}
    env = merged["env"] or "stocktrading"
    if env not in FINRL_ENVS:
        raise ExportError(f"{source}: unknown FinRL env {env!r}: l2fast lays out {', '.join(FINRL_ENVS)}")

    tickers = merged["tickers"]
    if isinstance(tickers, str):
        tickers = [t.strip() for t in tickers.split(",") if t.strip()]
    if not tickers:
        raise ExportError(f"{source}: FinRL needs the tickers the agent trades (--tickers BTC/USDT,ETH/USDT)")
    given_order = [str(t) for t in tickers]
    bad = [t for t in given_order if not is_symbol(t)]
    if bad:
        raise ExportError(f"{source}: FinRL tickers {bad!r} are not trading pairs BASE/QUOTE in upper-case "
                          "letters and digits (BTC/USDT)")
    if len(set(given_order)) != len(given_order):
        raise ExportError(f"{source}: FinRL tickers repeat: {given_order!r}")
    ordered = sorted(given_order)

    timeframe = merged["timeframe"]
    if not isinstance(timeframe, str):
        raise ExportError(f"{source}: FinRL needs the agent's bar interval (--timeframe 1h)")
    try:
        parse_timeframe(timeframe)
    except (ValueError, InvalidInputError) as exc:
        raise ExportError(f"{source}: FinRL timeframe {timeframe!r}: {exc}") from None

    indicators = merged["indicators"]
    if indicators is None:
        indicators = FINRL_INDICATORS
    if isinstance(indicators, str):
        indicators = [i.strip() for i in indicators.split(",") if i.strip()]
    indicators = [str(i) for i in indicators]
    if len(set(indicators)) != len(indicators) or _CLOSE in indicators:
        raise ExportError(f"{source}: FinRL indicators repeat a name (or 'close', already in the state): "
                          f"{indicators!r}")
    for name in indicators:
        try:
            parse_stockstats(name, timeframe)
        except InvalidInputError as exc:
            raise ExportError(f"{source}: FinRL indicator {name!r}: {exc}") from None

    hmax = merged["hmax"] if merged["hmax"] is not None else FINRL_DEFAULTS["hmax"]
    if isinstance(hmax, float) and hmax.is_integer():
        hmax = int(hmax)
    if isinstance(hmax, bool) or not isinstance(hmax, int) or hmax < 1:
        raise ExportError(f"{source}: FinRL hmax must be an integer >= 1, got {hmax!r}")
    amount = _number(merged["initial_amount"] if merged["initial_amount"] is not None
                     else FINRL_DEFAULTS["initial_amount"], "initial_amount", source)
    if amount <= 0:
        raise ExportError(f"{source}: FinRL initial_amount must be > 0, got {amount!r}")
    buy, sell = (_costs(merged[key] if merged[key] is not None else FINRL_DEFAULTS[key], given_order, ordered,
                        key, source) for key in ("buy_cost_pct", "sell_cost_pct"))
    scaling, threshold = (_number(merged[key], key, source) if merged[key] is not None else None
                          for key in ("reward_scaling", "turbulence_threshold"))
    resolved = FinRLEnv(env=env, tickers=tuple(ordered), timeframe=timeframe, indicators=tuple(indicators),
                        hmax=hmax, initial_amount=amount, buy_cost_pct=buy, sell_cost_pct=sell,
                        reward_scaling=scaling, turbulence_threshold=threshold)
    _check_bundle_sizes(bundle_params, resolved, source)
    return resolved


def _check_bundle_sizes(params: object, env: FinRLEnv, source: str) -> None:
    """FinRL's own size parameters in the bundle, where given, must agree with the layout."""
    if not isinstance(params, Mapping):
        return
    n = len(env.tickers or ())
    for key, want in (("stock_dim", n), ("action_space", n), ("state_space", env.state_space)):
        value = params.get(key)
        if value is not None and value != want:
            raise ExportError(f"{source}: training_config['finrl'][{key!r}] is {value!r} but {n} ticker(s) and "
                              f"{len(env.indicators or ())} indicators give {want}")
