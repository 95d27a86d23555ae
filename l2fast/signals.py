"""The messages L2 exchanges with its neighbours: L3's decisions in, L1's signals out.

- :class:`StrategicDecision`: what L3 decides (regime, target exposure, risk appetite,
  universe). Built directly or with :meth:`StrategicDecision.from_dict` from L3's dict;
  every field is validated and unknown keys are rejected with
  :class:`~l2fast.errors.InvalidDecisionError` naming the field and value.
- :class:`TacticalSignal`: what L2 tells L1 on every bar (``side="hold", qty=0`` when
  nothing should be done, the ``reasoning`` saying why). :meth:`TacticalSignal.to_dict`
  is JSON-safe: no NaN or infinity ever appears (``json.dumps(..., allow_nan=False)``
  succeeds).
- :func:`make_signal_id`: the deterministic id of a signal, so that L1 can drop duplicates.

Signal id: the 16 hex digits of an 8-byte BLAKE2b digest of the UTF-8 text
``"l2fast-signal-v1|<symbol>|<side>|"`` followed by ``struct.pack("<qddd", ts_ms, qty,
stop_loss, take_profit)`` (little-endian int64 and IEEE-754 doubles; a missing stop or
take-profit packs as ``float("nan")``; ``-0.0`` as ``0.0``). It depends on nothing else (no
process hash seed, no clock), so the same signal delivered twice has the same id, and
signals differing in any of these fields differ.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from l2fast.config import REGIMES, RISK_APPETITES, SYMBOL_PATTERN, is_symbol
from l2fast.errors import InvalidDecisionError, InvalidInputError

__all__ = ["MAX_DECISION_TS_MS", "Side", "StrategicDecision", "TacticalSignal", "make_signal_id", "printable",
           "real_float"]

#: Latest ``ts_ms`` of a decision: 9999-12-31 23:59:59.999 UTC, the last millisecond a
#: ``datetime`` can hold. Anything later is no time L3 decided at, and fits no int64
#: arithmetic the engine does with it.
MAX_DECISION_TS_MS = 253_402_300_799_999


class Side(StrEnum):
    """What L1 should do with a symbol on this bar."""

    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return type(value) is int or isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real_float(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None; one too large
    for a float is +-inf, so that range checks refuse it as not finite (``float()`` would
    raise OverflowError)."""
    if type(value) is float:
        return value
    if not _is_real(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


class _LongInt(int):
    """An integer that prints as its digit count (see :func:`printable`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        bits = abs(self).bit_length()
        if bits <= 14_000:  # well under the 4,300 digits Python converts to text
            return f"<an integer of {len(str(abs(int(self))))} digits>"
        return f"<an integer of about {int(bits * math.log10(2)) + 1} digits>"

    __str__ = __repr__


def printable(value: Any) -> Any:
    """``value``, or for an integer beyond 128 bits an equal ``int`` that prints as its
    digit count: error messages name an absurd number without spelling it out (and Python
    refuses to convert one of more than 4,300 digits to text at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return _LongInt(value)
    return value


# ---------------------------------------------------------------------------------------
# L3 -> L2


def _bad_decision(name: str, value: Any, rule: str) -> InvalidDecisionError:
    return InvalidDecisionError(f"invalid decision: {name}={printable(value)!r}: {rule}")


@dataclass(frozen=True, slots=True)
class StrategicDecision:
    """A decision of the strategic layer (L3), validated on construction.

    Attributes:
        regime: Market regime, one of ``"trending"``, ``"ranging"``, ``"volatile"``.
        target_exposure: Share of the allowed exposure L3 wants in use, in [0, 1].
        risk_appetite: ``"conservative"``, ``"moderate"`` or ``"aggressive"``.
        universe: Symbols L2 may trade (``"BTC/USDT"``...), non-empty, no duplicates; a
            list is stored as a tuple.
        ts_ms: When L3 decided (epoch ms UTC, at most :data:`MAX_DECISION_TS_MS`), or None.

    Raises:
        InvalidDecisionError: A field is missing, unknown, of the wrong type or out of
            range (the message names the field and value). Every field is checked here,
            so that an engine installing a decision never fails half-way through it.
    """

    regime: str
    target_exposure: float
    risk_appetite: str
    universe: tuple[str, ...]
    ts_ms: int | None = None

    def __post_init__(self) -> None:
        # The type first: ``in`` compares, and an array compared to a string is ambiguous.
        if not isinstance(self.regime, str) or self.regime not in REGIMES:
            raise _bad_decision("regime", self.regime, f"must be one of {', '.join(map(repr, REGIMES))}")
        x = real_float(self.target_exposure)
        if x is None or not (math.isfinite(x) and 0.0 <= x <= 1.0):
            raise _bad_decision("target_exposure", self.target_exposure, "must be a number in [0, 1]")
        object.__setattr__(self, "target_exposure", x)
        if not isinstance(self.risk_appetite, str) or self.risk_appetite not in RISK_APPETITES:
            raise _bad_decision("risk_appetite", self.risk_appetite,
                                f"must be one of {', '.join(map(repr, RISK_APPETITES))}")
        universe = self.universe
        # A bare string is a sequence of characters, never a universe.
        if isinstance(universe, str) or not isinstance(universe, Sequence) or not universe:
            raise _bad_decision("universe", universe, "must be a non-empty list of symbols")
        for symbol in universe:
            if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
                raise _bad_decision("universe", symbol, "symbols look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        if len(set(universe)) != len(universe):
            raise _bad_decision("universe", universe, "symbols must be distinct")
        object.__setattr__(self, "universe", tuple(universe))
        if self.ts_ms is not None:
            if not _is_int(self.ts_ms) or not 0 <= self.ts_ms <= MAX_DECISION_TS_MS:
                raise _bad_decision("ts_ms", self.ts_ms, "must be epoch milliseconds (an integer in "
                                    f"[0, {MAX_DECISION_TS_MS}], up to the year 9999) or None")
            object.__setattr__(self, "ts_ms", int(self.ts_ms))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategicDecision:
        """Build a decision from L3's dict, rejecting unknown and missing keys.

        Args:
            data: ``regime``, ``target_exposure``, ``risk_appetite``, ``universe`` and
                optionally ``ts_ms``.

        Raises:
            InvalidDecisionError: A key is unknown or missing, or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise InvalidDecisionError(f"invalid decision: expected a mapping, got {type(data).__name__}")
        known = cls.__dataclass_fields__
        for key in data:
            if key not in known:
                raise _bad_decision(str(key), data[key], f"unknown field (known: {', '.join(known)})")
        for key in ("regime", "target_exposure", "risk_appetite", "universe"):
            if key not in data:
                raise InvalidDecisionError(f"invalid decision: {key}: missing")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The decision as L3's dict (``universe`` as a list); :meth:`from_dict` reads it back."""
        return {"regime": self.regime, "target_exposure": self.target_exposure,
                "risk_appetite": self.risk_appetite, "universe": list(self.universe), "ts_ms": self.ts_ms}


# ---------------------------------------------------------------------------------------
# L2 -> L1


_ID_NUMBERS = struct.Struct("<qddd")
_NAN = float("nan")


def _signal_id(symbol: str, ts_ms: int, side: str, qty: float, stop_loss: float | None,
               take_profit: float | None) -> str:
    numbers_ = _ID_NUMBERS.pack(ts_ms, qty + 0.0, _NAN if stop_loss is None else stop_loss,
                                _NAN if take_profit is None else take_profit)
    return hashlib.blake2b(f"l2fast-signal-v1|{symbol}|{side}|".encode() + numbers_, digest_size=8).hexdigest()


def make_signal_id(symbol: str, ts_ms: int, side: str, qty: float,
                   stop_loss: float | None = None, take_profit: float | None = None) -> str:
    """The deterministic id of a signal (BLAKE2b-64, module docstring), 16 hex digits.

    Args:
        symbol: Trading pair (``"BTC/USDT"``).
        ts_ms: Open time of the bar the signal answers (epoch ms UTC).
        side: ``"buy"``, ``"sell"`` or ``"hold"``.
        qty: Quantity (base units); ``-0.0`` and ``0.0`` give the same id.
        stop_loss: Stop price, or None (a non-finite price counts as None).
        take_profit: Take-profit price, or None (likewise).
    """
    return _signal_id(symbol, int(ts_ms), Side(side).value, float(qty), _id_price(stop_loss), _id_price(take_profit))


def _id_price(value: float | None) -> float | None:
    # As TacticalSignal stores it: a non-finite price is no price.
    return None if value is None or not math.isfinite(value) else float(value)


def _json_safe(value: Any, path: str) -> Any:
    """``value`` as JSON types: non-finite floats become None, tuples lists, numpy scalars
    and arrays their Python equivalents."""
    if value is None or type(value) in (bool, int):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _json_safe(value.tolist(), path)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _json_safe(float(value), path)
    raise TypeError(f"{path}={value!r}: cannot be written as JSON")


def _bad_signal(name: str, value: Any, rule: str) -> InvalidInputError:
    return InvalidInputError(f"invalid signal: {name}={printable(value)!r}: {rule}")


# A signal is built on every bar: exact types take the fast branch of these checks.
_SIDES: dict[str, Side] = {side.value: side for side in Side}
_SIDE_TEXT: dict[Side, str] = {side: side.value for side in Side}


def _price(name: str, value: Any) -> float | None:
    if value is None:
        return None
    x = real_float(value)
    if x is None:
        raise _bad_signal(name, value, "must be a price or None")
    if not math.isfinite(x):
        return None
    if x <= 0.0:
        raise _bad_signal(name, value, "must be > 0")
    return x


def _unit(name: str, value: Any) -> float:
    x = real_float(value)
    if x is None or not (math.isfinite(x) and 0.0 <= x <= 1.0):
        raise _bad_signal(name, value, "must be a finite number in [0, 1]")
    return x


class _Deferred:
    """The slot a signal keeps its unbuilt reasoning in (see :class:`TacticalSignal`)."""

    __slots__ = ("_lazy",)


@dataclass(frozen=True, slots=True)
class TacticalSignal(_Deferred):
    """What L2 tells L1 for one symbol on one bar.

    Attributes:
        symbol: Trading pair (``"BTC/USDT"``).
        side: :class:`Side` (a ``"buy"``/``"sell"``/``"hold"`` string is converted).
        qty: Quantity in base units, finite; 0 exactly when ``side`` is hold, > 0 otherwise.
        confidence: Combined confidence, finite, in [0, 1].
        consensus: Weighted agreement with the chosen side, finite, in [0, 1].
        stop_loss: Stop price (> 0), or None; a non-finite value is stored as None.
        take_profit: Take-profit price (> 0), or None; a non-finite value is stored as None.
        reasoning: Why (warm-up, thresholds, sizing factors, risk denials...). Held as
            given; :meth:`to_dict` makes it JSON-safe.
        ts_ms: Open time of the bar the signal answers (epoch ms UTC, >= 0).
        signal_id: Deterministic id; computed with :func:`make_signal_id` when empty.

    The engine's signals are lazy: they hold the numbers of their bar, and build
    ``reasoning`` (from a copy of that bar's vote, sizing and risk results, so it
    describes that bar however late it is read) and ``signal_id`` on first access, then
    keep them. Reading, comparing, printing, copying or pickling a signal gives what an
    eager one of the same fields gives.

    Raises:
        InvalidInputError: A field has the wrong type or is out of range (non-finite
            ``qty``/``confidence``/``consensus`` included); the message names it.
    """

    symbol: str
    side: Side
    qty: float
    confidence: float
    consensus: float
    stop_loss: float | None
    take_profit: float | None
    reasoning: dict[str, Any]
    ts_ms: int
    signal_id: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        symbol = self.symbol
        if not isinstance(symbol, str) or not is_symbol(str.__str__(symbol)):
            raise _bad_signal("symbol", symbol, "must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        try:
            side = _SIDES[self.side]
        except (KeyError, TypeError):
            raise _bad_signal("side", self.side, "must be 'buy', 'sell' or 'hold'") from None
        set_(self, "side", side)
        qty = real_float(self.qty)
        if qty is None or not math.isfinite(qty) or qty < 0.0:
            raise _bad_signal("qty", self.qty, "must be a finite number >= 0")
        if (side is Side.HOLD) != (qty == 0.0):
            raise _bad_signal("qty", self.qty, "must be 0 for a hold and > 0 for a buy or sell")
        set_(self, "qty", qty + 0.0)  # -0.0 -> 0.0
        # Exact floats come back as the same object: only converted values are stored.
        value = self.confidence
        checked = _unit("confidence", value)
        if checked is not value:
            set_(self, "confidence", checked)
        value = self.consensus
        checked = _unit("consensus", value)
        if checked is not value:
            set_(self, "consensus", checked)
        price = self.stop_loss
        stop_loss = _price("stop_loss", price)
        if stop_loss is not price:
            set_(self, "stop_loss", stop_loss)
        price = self.take_profit
        take_profit = _price("take_profit", price)
        if take_profit is not price:
            set_(self, "take_profit", take_profit)
        if not isinstance(self.reasoning, dict):
            raise _bad_signal("reasoning", self.reasoning, "must be a dict")
        ts_ms = self.ts_ms
        if not (_is_int(ts_ms) and 0 <= ts_ms < 1 << 63):
            raise _bad_signal("ts_ms", ts_ms, "must be epoch milliseconds (an integer in [0, 2**63))")
        if type(ts_ms) is not int:
            ts_ms = int(ts_ms)
            set_(self, "ts_ms", ts_ms)
        if not isinstance(self.signal_id, str):
            raise _bad_signal("signal_id", self.signal_id, "must be a string")
        if not self.signal_id:
            set_(self, "signal_id", _signal_id(symbol, ts_ms, _SIDE_TEXT[side], qty, stop_loss, take_profit))

    if not TYPE_CHECKING:  # mypy would take every misspelt attribute for a lazy one
        def __getattr__(self, name: str) -> Any:
            # Python calls this only for an unset slot: a lazy signal's reasoning or id,
            # built once and stored in the slot, so later reads are plain slot reads. The
            # compiled engine makes its signals without __init__ (its fields are checked
            # already): it sets every slot but these two, and _lazy (see SIGNAL_SLOTS and
            # _emit in _engine.pyx).
            if name == "reasoning":
                value = _LAZY.__get__(self).reasoning()
            elif name == "signal_id":
                value = _signal_id(self.symbol, self.ts_ms, _SIDE_TEXT[self.side], self.qty, self.stop_loss,
                                   self.take_profit)
            else:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            object.__setattr__(self, name, value)
            return value

    def _brief(self) -> tuple[str, bool, str | None]:
        """``reasoning``'s code, whether it holds a vote, and its denial's code (or None),
        without building a lazy signal's reasoning (the replay counts these on every bar)."""
        try:
            lazy: Reasoning = _LAZY.__get__(self)
        except AttributeError:
            reasoning = self.reasoning
            denial = reasoning.get("denial")
            return reasoning["code"], "vote" in reasoning, None if denial is None else denial["code"]
        return lazy.brief()

    @classmethod
    def hold(cls, symbol: str, ts_ms: int, reasoning: dict[str, Any], *, confidence: float = 0.0,
             consensus: float = 0.0, stop_loss: float | None = None,
             take_profit: float | None = None) -> TacticalSignal:
        """A hold (``qty=0``) for ``symbol``; ``reasoning`` says why."""
        return cls(symbol, Side.HOLD, 0.0, confidence, consensus, stop_loss, take_profit, reasoning, ts_ms)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TacticalSignal:
        """Read back a :meth:`to_dict` result (e.g. a line of a signals JSONL file).

        Raises:
            InvalidInputError: A key is unknown or missing, or a value is invalid.
        """
        fields_ = cls.__dataclass_fields__
        for key in data:
            if key not in fields_:
                raise _bad_signal(str(key), data[key], f"unknown field (known: {', '.join(fields_)})")
        missing = [k for k in fields_ if k not in data]
        if missing:
            raise InvalidInputError(f"invalid signal: missing {', '.join(missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The signal as JSON types; ``json.dumps(d, allow_nan=False)`` always succeeds.

        Raises:
            TypeError: ``reasoning`` holds an object with no JSON form.
        """
        fields_ = self.fields()
        fields_["reasoning"] = _json_safe(self.reasoning, "reasoning")
        return fields_

    def content_id(self) -> str:
        """The id this signal's content gives (:func:`make_signal_id`); ``signal_id``
        equals it unless it was set to something else on construction."""
        return _signal_id(self.symbol, self.ts_ms, _SIDE_TEXT[self.side], self.qty, self.stop_loss, self.take_profit)

    def fields(self) -> dict[str, Any]:
        """The fields of :meth:`to_dict`, but ``reasoning`` as held (not converted).

        For serialisers that convert the reasoning themselves: the bus's encoder writes
        non-finite floats as ``null``, tuples as lists and numpy values as numbers, as
        :meth:`to_dict` does, at a fraction of the cost of walking it in Python.
        """
        return {
            "symbol": self.symbol,
            "side": self.side.value,
            "qty": self.qty,
            "confidence": self.confidence,
            "consensus": self.consensus,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "reasoning": self.reasoning,
            "ts_ms": self.ts_ms,
            "signal_id": self.signal_id,
        }


#: The slot of a lazy signal's :class:`Reasoning` (unset in an eager signal).
_LAZY = _Deferred._lazy  # type: ignore[attr-defined]  # a slot's member descriptor


class Reasoning(Protocol):
    """What a lazy signal holds in place of its reasoning dict (the engine's
    ``SignalReasoning``): a copy of the bar's results that builds the dict when asked."""

    def reasoning(self) -> dict[str, Any]:
        """The reasoning dict, a new one on each call."""

    def brief(self) -> tuple[str, bool, str | None]:
        """What :meth:`TacticalSignal._brief` returns, without building the dict."""
