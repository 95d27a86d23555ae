"""The Python code lists and the C constants they name agree.

The code lists of the compiled core (risk, sizing and gate codes, member kinds and
statuses, latency stages) are derived from their named C enums when the module loads.
The enums whose constants index C arrays (technical components, feature slots,
candlestick patterns) must stay anonymous, so their names are written beside them and
checked here. These tests pin both ends: the public strings (reasoning dicts, metrics and
models use them) keep their values and order, and name i is the constant whose value is i.
"""

from __future__ import annotations

import enum
import typing

import pytest

from l2fast.config import TechnicalConfig
from l2fast.decision import _risk, _sizing, _voting, voting
from l2fast.engine import _engine, _telemetry
from l2fast.technical import _candles, _features

# (module, list name, the enum's Python class or None for an anonymous enum, constant prefix,
# whether the names are lower-cased, the public names)
CODE_LISTS = [
    (_risk, "RISK_CODES", "RiskCode", "RISK_", False,
     ("OK", "EQUITY_DEPLETED", "SHORT_NOT_ALLOWED", "POSITION_OPEN", "DAILY_LOSS_LIMIT",
      "MAX_DAILY_TRADES", "MAX_CONCURRENT_POSITIONS", "INVALID_STOP", "MAX_POSITION_SIZE",
      "MAX_LOSS_PER_TRADE", "EXPOSURE_LIMIT", "BELOW_MIN_NOTIONAL", "TURBULENCE")),
    (_risk, "ACTIONS", "RiskAction", "ACTION_", True, ("hold", "entry", "exit")),
    (_risk, "STOP_MOVES", "StopMove", "STOP_", True, ("none", "breakeven", "trailing")),
    (_sizing, "SIZING_CODES", "SizingCode", "SIZE_", False,
     ("OK", "VOL_UNKNOWN", "NO_EDGE", "ZERO_SCALE", "BELOW_MIN_NOTIONAL")),
    (_sizing, "KELLY_SOURCES", "KellySource", "KELLY_", True, ("manifest", "live")),
    (_voting, "MEMBER_KINDS", "MemberKindCode", "MEMBER_", True, ("probs", "q_values", "continuous")),
    (_voting, "MEMBER_STATUSES", "MemberStatus", "MEMBER_", True, ("ok", "run_failed", "non_finite", "bad_action")),
    (_voting, "COMPONENTS", None, "TC_", True,
     ("rsi_level", "rsi_divergence", "macd_cross", "macd_histogram", "bb_pctb", "bb_squeeze", "patterns",
      "sr_breakout")),
    (_telemetry, "STAGE_NAMES", "LatencyStage", "MET_STAGE_", True,
     ("technical", "inference", "vote", "decide", "total")),
    (_candles, "CANDLESTICK_PATTERNS", None, "CDL_", False,
     ("CDLDOJI", "CDLDOJISTAR", "CDLDRAGONFLYDOJI", "CDLGRAVESTONEDOJI", "CDLLONGLEGGEDDOJI", "CDLHAMMER",
      "CDLHANGINGMAN", "CDLINVERTEDHAMMER", "CDLSHOOTINGSTAR", "CDLENGULFING", "CDLHARAMI", "CDLHARAMICROSS",
      "CDLPIERCING", "CDLDARKCLOUDCOVER", "CDLMORNINGSTAR", "CDLEVENINGSTAR", "CDL3WHITESOLDIERS",
      "CDL3BLACKCROWS", "CDLMARUBOZU", "CDLSPINNINGTOP")),
]


def _constant(name: str, prefix: str, lower: bool) -> str:
    # The C constant a public name comes from ("CDLHAMMER" from CDL_HAMMER).
    if prefix == "CDL_":
        name = name.removeprefix("CDL")
    return prefix + (name.upper() if lower else name)


@pytest.mark.parametrize(("module", "attr", "enum_name", "prefix", "lower", "expected"), CODE_LISTS,
                         ids=[row[1] for row in CODE_LISTS])
def test_each_name_list_is_its_enum_in_value_order(module, attr, enum_name, prefix, lower, expected) -> None:
    names = getattr(module, attr)
    assert names == expected
    if enum_name is None:
        constants = {k: v for k, v in vars(module).items() if k.startswith(prefix) and type(v) is int}
    else:
        cls = getattr(module, enum_name)
        assert issubclass(cls, enum.IntEnum)
        constants = {k: int(v) for k, v in cls.__members__.items()}
    assert len(names) == len(constants)
    for i, name in enumerate(names):
        assert constants[_constant(name, prefix, lower)] == i


def test_gate_codes_are_the_nonzero_gate_bits_in_order() -> None:
    assert _voting.GATE_CODES == ((1, "NO_MODEL_VOTE"), (2, "NO_DIRECTION"), (4, "LOW_CONSENSUS"),
                                  (8, "LOW_CONFIDENCE"), (16, "LOW_ALIGNMENT"))
    members = {k: int(v) for k, v in _voting.VoteGate.__members__.items()}
    assert members.pop("GATE_PASS") == 0
    assert [("GATE_" + name, bit) for bit, name in _voting.GATE_CODES] == list(members.items())
    assert all(type(bit) is int for bit, _ in _voting.GATE_CODES)


def test_the_member_kind_type_lists_the_kernel_kinds() -> None:
    # A type checker needs the kinds written out; they must be the kernel's.
    assert typing.get_args(voting.MemberKind) == _voting.MEMBER_KINDS


def test_every_risk_code_names_its_note_fields() -> None:
    assert tuple(_risk.RISK_CODE_FIELDS) == _risk.RISK_CODES
    assert _risk.RISK_CODE_FIELDS["DAILY_LOSS_LIMIT"] == ("loss", "limit")
    assert _risk.RISK_CODE_FIELDS["BELOW_MIN_NOTIONAL"] == ("notional", "min_notional")


def test_reason_codes_cover_every_code_once_within_the_metrics_capacity() -> None:
    codes = _engine.REASON_CODES
    assert len(set(codes)) == len(codes) <= _telemetry.MAX_CODES
    gates = tuple(name for _, name in _voting.GATE_CODES)
    assert set(codes) == set(codes[:8]) | set(gates) | set(_sizing.SIZING_CODES[1:]) | set(_risk.RISK_CODES[1:])
    assert _engine.DENIAL_CODES == frozenset(_risk.RISK_CODES[1:])


SLOT_NAMES = (
    "close", "ret_1", "ret_5",
    "macd", "macd_signal", "macd_hist", "macd_hist_pct",
    "bb_upper", "bb_middle", "bb_lower", "bb_pctb", "bb_width",
    "atr_{atr}", "atr_pct",
    "stoch_k", "stoch_d",
    "adx_{adx}", "plus_di_{adx}", "minus_di_{adx}",
    "obv", "vol_z_{vol_z}", "rvol_{rvol}",
    "donchian_upper_{donchian}", "donchian_lower_{donchian}", "donchian_pos_{donchian}",
    "sr_support", "sr_resistance", "sr_dist_support", "sr_dist_resistance",
    "sr_support_strength", "sr_resistance_strength", "sr_breakout",
    "sr_double_top", "sr_double_bottom", "sr_in_range",
)


def test_the_slot_table_names_every_slot_constant_in_order() -> None:
    assert _features.SLOT_NAMES == SLOT_NAMES
    slots = {k: v for k, v in vars(_features).items() if k.startswith("S_") and type(v) is int}
    assert _features.FIRST_RSI_SLOT == slots.pop("S_RSI") == len(SLOT_NAMES)
    assert len(slots) == len(SLOT_NAMES)
    for i, name in enumerate(SLOT_NAMES):
        assert slots["S_" + name.split("_{")[0].upper()] == i


def test_the_extra_kinds_and_their_outputs_keep_their_codes() -> None:
    # Output codes index the kernels' output pointers (0, 1, 2 in step order): pinned.
    assert _features.EXTRA_KINDS == {
        "sma": ("value",), "ema": ("value",), "boll": ("mid", "ub", "lb"), "macd": ("macd", "macds", "macdh"),
        "rsi": ("value",), "atr": ("value",), "dx": ("dx", "pdi", "ndi"), "cci": ("value",),
    }


def test_every_slot_has_a_warm_up() -> None:
    warmups = _features._slot_warmups(TechnicalConfig())
    assert sorted(warmups) == list(range(len(SLOT_NAMES)))
    assert all(type(k) is int for k in warmups)


def test_feature_names_keep_the_layout() -> None:
    # Models reference features by name: the first timeframe's block, in vector order.
    config = TechnicalConfig()
    names = _features.feature_names(config)
    tf = config.timeframes[0]
    block = len(SLOT_NAMES) + len(config.rsi_periods) + len(_candles.CANDLESTICK_PATTERNS)
    assert len(names) == block * len(config.timeframes)
    assert names[:3] == (f"close_{tf}", f"ret_1_{tf}", f"ret_5_{tf}")
    assert names[12] == f"atr_{config.atr_period}_{tf}"
    assert names[len(SLOT_NAMES)] == f"rsi_{config.rsi_periods[0]}_{tf}"
    assert names[block - 1] == f"cdl_spinningtop_{tf}"
