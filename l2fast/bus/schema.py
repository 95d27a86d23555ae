"""The bus's wire schema: one versioned envelope for decisions, bars, fills and signals.

Envelope (a JSON object, UTF-8, written by :func:`encode`, read by :func:`decode`)::

    {"v": 1, "type": "bar", "payload": {...}, "meta": {...}}

- ``v``: :data:`SCHEMA_VERSION`, an integer. Another version is refused, so that a
  reader never guesses at a layout it does not know.
- ``type``: one of :class:`MessageType` (``"decision"``, ``"bar"``, ``"fill"``,
  ``"signal"``).
- ``payload``: the message's own dict: :meth:`StrategicDecision.to_dict
  <l2fast.signals.StrategicDecision.to_dict>`, :meth:`Bar.to_dict`, :meth:`Fill.to_dict`
  or :meth:`TacticalSignal.to_dict <l2fast.signals.TacticalSignal.to_dict>`.
- ``meta`` (optional): what the bus says about a delivery rather than about the message;
  only the keys of :data:`META_FIELDS` (``age_ms``, ``stale``: see
  :mod:`l2fast.bus.adapter`).

:func:`decode` validates everything and raises :class:`MessageError` naming the field as
a dotted path (``"v"``, ``"type"``, ``"payload.high"``, ``"meta.stale"``, or
``"envelope"`` when the bytes are not a JSON object at all): unknown keys anywhere,
missing keys, wrong types, out-of-range values, ``NaN``/``Infinity`` literals (not JSON,
although Python's parser accepts them) and a signal whose ``signal_id`` does not match its
content (:func:`~l2fast.signals.make_signal_id`), so that L1's de-duplication by id can be
trusted. Floats are written in their shortest round-tripping form: decoding what
:func:`encode` wrote gives back equal messages, bit for bit.

The JSON is written and parsed by orjson (about 10x faster than the standard library on a
signal with its reasoning, which is most of a bus message's cost). A signal's reasoning
is written as :meth:`TacticalSignal.to_dict <l2fast.signals.TacticalSignal.to_dict>`
would convert it: non-finite floats as ``null``, tuples as lists, numpy values as numbers,
keys as strings. Bytes orjson refuses are parsed again by the standard library only to
say precisely what is wrong (a ``NaN`` literal and its path, say).

Signed form (a bus with a key, :class:`~l2fast.bus.bus.MessageBus`'s ``signer``): what
travels is :data:`SIGNED_PREFIX`, the tag's 64 hex digits, ``:``, then the envelope's
bytes exactly as :func:`encode` wrote them::

    sig1:<hex HMAC-SHA256>:{"v": 1, "type": "bar", "payload": {...}}

The tag (:class:`l2fast.keys.Signer`, purpose ``bus``) covers the topic's name, a zero
byte and the envelope's bytes (:func:`signed_content`), so it binds the very bytes the
receiver parses, every field of the payload (a signal's ``signal_id`` and ``meta``
included) and the topic: a signed bar moved to ``l3.decisions`` does not verify.
:func:`sign` makes the form, :func:`open_signed` checks it (:class:`UnauthenticatedError`)
and returns the envelope's bytes before anything decodes them. A tag does not stop a
captured message from being published again as it is (a replay): the README's security
model says what does.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias

import orjson

from l2fast.config import is_symbol
from l2fast.errors import InvalidBarError, InvalidInputError
from l2fast.keys import TAG_CHARS, Signer
from l2fast.signals import StrategicDecision, TacticalSignal, printable, real_float

__all__ = [
    "META_FIELDS",
    "NO_META",
    "SCHEMA_VERSION",
    "SIGNED_PREFIX",
    "Bar",
    "Envelope",
    "Fill",
    "Message",
    "MessageError",
    "MessageType",
    "UnauthenticatedError",
    "check_meta",
    "decode",
    "encode",
    "message_type",
    "open_signed",
    "sign",
    "signed_content",
]

#: The envelope version this build writes and the only one it reads.
SCHEMA_VERSION = 1
#: Bar open times lie on the minute grid (the engine consumes 1-minute bars).
MINUTE_MS = 60_000
_MAX_TS = 1 << 63
_INF = math.inf
# Longest repr of an offending value kept in an error message (a whole bad payload can
# be large).
_REPR_LIMIT = 200


class MessageError(InvalidInputError):
    """A bus message failed validation.

    Attributes:
        field: Dotted path of the offending field (``"payload.qty"``, ``"v"``, ...).
        value: The offending value (None when the field is missing).
        reason: What is wrong with it.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        text = repr(printable(value))
        if len(text) > _REPR_LIMIT:
            text = text[:_REPR_LIMIT] + "..."
        super().__init__(f"invalid message: {field}={text}: {reason}")


class UnauthenticatedError(MessageError):
    """A delivery is not signed, or not signed with the bus's key for its topic
    (:func:`open_signed`): it is refused before anything reads its envelope.

    ``field`` is ``"tag"``; ``value`` the tag found (None when there is none).
    """


class MessageType(StrEnum):
    """The ``type`` of an envelope."""

    DECISION = "decision"
    BAR = "bar"
    FILL = "fill"
    SIGNAL = "signal"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _symbol_ok(symbol: Any) -> bool:
    return isinstance(symbol, str) and is_symbol(str.__str__(symbol))


def _timestamp_ok(ts_ms: Any) -> bool:
    return _is_int(ts_ms) and 0 <= ts_ms < _MAX_TS


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed 1-minute bar of one symbol, validated on construction like the engine's bars.

    Attributes:
        symbol: Trading pair (``"BTC/USDT"``).
        ts_ms: Bar open time, epoch ms UTC, on the minute grid.
        open, high, low, close: Prices, finite and > 0, with ``low <= min(open, close)``
            and ``high >= max(open, close)``.
        volume: Volume, finite and >= 0.

    Raises:
        InvalidBarError: A field is of the wrong type or out of range (``field`` names it).
            What depends on the previous bar (order, duplicates) is the engine's check.
    """

    symbol: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def __post_init__(self) -> None:
        # A worker builds one Bar per message: exact types inside their ranges take one
        # comparison chain (NaN fails every comparison); anything else, and every error,
        # goes through the field-by-field checks below.
        o, h, lo, c, v, ts = self.open, self.high, self.low, self.close, self.volume, self.ts_ms
        if (type(o) is float and type(h) is float and type(lo) is float and type(c) is float
                and type(v) is float and type(ts) is int and type(self.symbol) is str
                and 0.0 < lo <= min(o, c) and max(o, c) <= h < _INF and 0.0 <= v < _INF
                and 0 <= ts < _MAX_TS and not ts % MINUTE_MS and is_symbol(self.symbol)):
            return
        self._check_fields()

    def _check_fields(self) -> None:
        if not _symbol_ok(self.symbol):
            raise InvalidBarError("symbol", printable(self.symbol),
                                  "must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        if not _timestamp_ok(self.ts_ms):
            raise InvalidBarError("ts_ms", printable(self.ts_ms),
                                  "must be epoch milliseconds (an integer in [0, 2**63))")
        if self.ts_ms % MINUTE_MS:
            raise InvalidBarError("ts_ms", self.ts_ms, f"not a whole minute (ts_ms % 60000 = {self.ts_ms % MINUTE_MS})")
        object.__setattr__(self, "ts_ms", int(self.ts_ms))
        for name in ("open", "high", "low", "close", "volume"):
            raw = getattr(self, name)
            x = real_float(raw)
            if x is None:
                raise InvalidBarError(name, raw, "must be a real number")
            if not math.isfinite(x):
                raise InvalidBarError(name, printable(raw), "must be finite")
            if name == "volume":
                if x < 0.0:
                    raise InvalidBarError(name, raw, "must be non-negative")
            elif x <= 0.0:
                raise InvalidBarError(name, raw, "must be positive")
            if x is not raw:
                object.__setattr__(self, name, x)
        if self.high < max(self.open, self.close):
            raise InvalidBarError("high", self.high, f"below max(open, close)={max(self.open, self.close)!r}")
        if self.low > min(self.open, self.close):
            raise InvalidBarError("low", self.low, f"above min(open, close)={min(self.open, self.close)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The bar as JSON types; :meth:`from_dict` reads it back."""
        return {"symbol": self.symbol, "ts_ms": self.ts_ms, "open": self.open, "high": self.high,
                "low": self.low, "close": self.close, "volume": self.volume}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bar:
        """Build a bar from its dict, rejecting unknown and missing keys.

        Raises:
            InvalidBarError: A key is unknown or missing, or a value is invalid.
        """
        _check_keys(data, cls.__dataclass_fields__, (), InvalidBarError)
        return cls(**data)


_SIDES = ("buy", "sell")


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution L1 reports to L2 (the arguments of the engine's ``on_fill``).

    Attributes:
        symbol: Trading pair.
        side: ``"buy"`` or ``"sell"``.
        qty: Executed quantity (base units), finite and > 0.
        price: Execution price, finite and > 0.
        ts_ms: Execution time, epoch ms UTC: the open time of the bar it executed in,
            so that L2 applies it before that bar.
        fee: Fee in quote currency, finite and >= 0.

    Raises:
        MessageError: A field is of the wrong type or out of range (``field`` names it).
    """

    symbol: str
    side: str
    qty: float
    price: float
    ts_ms: int
    fee: float = 0.0

    def __post_init__(self) -> None:
        if not _symbol_ok(self.symbol):
            raise MessageError("symbol", self.symbol, "must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        if not isinstance(self.side, str) or self.side not in _SIDES:
            raise MessageError("side", self.side, "must be 'buy' or 'sell'")
        for name, positive in (("qty", True), ("price", True), ("fee", False)):
            raw = getattr(self, name)
            x = real_float(raw)
            if x is None or not math.isfinite(x) or x < 0.0 or (positive and x == 0.0):
                raise MessageError(name, raw, f"must be a finite number {'> 0' if positive else '>= 0'}")
            if x is not raw:
                object.__setattr__(self, name, x + 0.0)
        if not _timestamp_ok(self.ts_ms):
            raise MessageError("ts_ms", self.ts_ms, "must be epoch milliseconds (an integer in [0, 2**63))")
        object.__setattr__(self, "ts_ms", int(self.ts_ms))

    def to_dict(self) -> dict[str, Any]:
        """The fill as JSON types; :meth:`from_dict` reads it back."""
        return {"symbol": self.symbol, "side": self.side, "qty": self.qty, "price": self.price,
                "ts_ms": self.ts_ms, "fee": self.fee}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fill:
        """Build a fill from its dict (``fee`` may be left out), rejecting unknown keys.

        Raises:
            MessageError: A key is unknown or missing, or a value is invalid.
        """
        _check_keys(data, cls.__dataclass_fields__, ("fee",), MessageError)
        return cls(**data)


def _check_keys(data: Mapping[str, Any], known: Mapping[str, Any], optional: tuple[str, ...],
                error: type[InvalidBarError] | type[MessageError]) -> None:
    for key in data:
        if key not in known:
            raise error(str(key), data[key], f"unknown field (known: {', '.join(known)})")
    for key in known:
        if key not in data and key not in optional:
            raise error(key, None, "missing")


#: What a bus message is.
Message: TypeAlias = StrategicDecision | Bar | Fill | TacticalSignal

_TYPE_OF: dict[type, MessageType] = {StrategicDecision: MessageType.DECISION, Bar: MessageType.BAR,
                                     Fill: MessageType.FILL, TacticalSignal: MessageType.SIGNAL}


def message_type(message: Message) -> MessageType:
    """The envelope ``type`` of ``message``.

    Raises:
        TypeError: ``message`` is not one of the four message classes.
    """
    try:
        return _TYPE_OF[type(message)]
    except KeyError:
        raise TypeError(f"not a bus message: {type(message).__name__} (expected StrategicDecision, Bar, "
                        "Fill or TacticalSignal)") from None


_TYPES: dict[str, MessageType] = {t.value: t for t in MessageType}

#: The keys ``meta`` may hold: name -> (check, rule).
META_FIELDS: dict[str, tuple[Any, str]] = {
    "age_ms": (lambda x: _is_int(x) and x >= 0, "must be an integer >= 0"),
    "stale": (lambda x: isinstance(x, bool), "must be true or false"),
}


def check_meta(meta: Any) -> Mapping[str, Any]:
    """``meta`` if it holds only :data:`META_FIELDS` with valid values.

    Raises:
        MessageError: ``meta`` is not a mapping, or holds an unknown key or a bad value.
    """
    if not isinstance(meta, Mapping):
        raise MessageError("meta", meta, "must be an object")
    for key, value in meta.items():
        rule = META_FIELDS.get(key)
        if rule is None:
            raise MessageError(f"meta.{key}", value, f"unknown field (known: {', '.join(META_FIELDS)})")
        if not rule[0](value):
            raise MessageError(f"meta.{key}", value, rule[1])
    return meta


#: The ``meta`` of an envelope without one (read-only, shared).
NO_META: Mapping[str, Any] = MappingProxyType({})


class Envelope(NamedTuple):
    """A decoded message and what the bus said about its delivery (a tuple: cheap to build).

    Attributes:
        message: The message.
        meta: The envelope's ``meta`` (:data:`NO_META` when there was none).
    """

    message: Message
    meta: Mapping[str, Any]

    @property
    def type(self) -> MessageType:
        """The message's envelope ``type``."""
        return message_type(self.message)


def encode(message: Message, meta: Mapping[str, Any] | None = None) -> bytes:
    """``message`` (and ``meta``) as one UTF-8 JSON envelope.

    Raises:
        TypeError: ``message`` is not a bus message, or a signal's ``reasoning`` holds an
            object with no JSON form.
        MessageError: ``meta`` holds an unknown key or a bad value.
    """
    kind = message_type(message)
    # Every field but a signal's reasoning is validated finite on construction, so orjson
    # writing NaN as null can only touch the reasoning, where to_dict does the same.
    payload = message.fields() if isinstance(message, TacticalSignal) else message.to_dict()
    envelope: dict[str, Any] = {"v": SCHEMA_VERSION, "type": kind.value, "payload": payload}
    if meta:
        envelope["meta"] = dict(check_meta(meta))
    return orjson.dumps(envelope, default=_json_default, option=_ORJSON_OPTIONS)


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json_default(value: Any) -> Any:
    """What orjson cannot write by itself, as TacticalSignal.to_dict converts it."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"reasoning: {value!r} cannot be written as JSON")


#: What starts an envelope in the signed form (module docstring); no JSON text starts so.
SIGNED_PREFIX = b"sig1:"
_SIGNED_TEXT = SIGNED_PREFIX.decode()
# The signed form's head: the prefix, the tag's hex digits and the ":" after them.
_SIGNED_HEAD = len(SIGNED_PREFIX) + TAG_CHARS + 1


def signed_content(topic: str, envelope: bytes) -> bytes:
    """What a tag covers: the topic's name, a zero byte, then the envelope's bytes."""
    return topic.encode() + b"\0" + envelope


def sign(signer: Signer, topic: str, envelope: bytes) -> bytes:
    """``envelope`` (bytes :func:`encode` wrote) in the signed form for ``topic``."""
    return SIGNED_PREFIX + signer.tag(signed_content(topic, envelope)).encode() + b":" + envelope


def open_signed(data: object, topic: str, signer: Signer | None) -> object:
    """The envelope inside ``data``, delivered on ``topic``, for :func:`decode`.

    With a signer, ``data`` must be the signed form (module docstring) whose tag is the
    tag of ``topic`` and the envelope under ``signer``'s key; the envelope's bytes are
    returned. Without one (a bus without a key reads without checking), the envelope of
    a signed form is returned as it is, unchecked, and any other data unchanged.

    Raises:
        UnauthenticatedError: With a signer: ``data`` is not in the signed form, or its
            tag does not verify (another key, another topic, altered bytes, a truncated
            or made-up tag).
    """
    if signer is None:
        if isinstance(data, bytes) and data.startswith(SIGNED_PREFIX) and data[_SIGNED_HEAD - 1:_SIGNED_HEAD] == b":":
            return data[_SIGNED_HEAD:]
        if isinstance(data, str) and data.startswith(_SIGNED_TEXT) and data[_SIGNED_HEAD - 1:_SIGNED_HEAD] == ":":
            return data[_SIGNED_HEAD:]
        return data
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeEncodeError:  # a lone surrogate: no bytes were ever signed
            raise UnauthenticatedError("tag", None, "not signed: text that is not UTF-8") from None
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise UnauthenticatedError("tag", None, f"not signed: a {type(data).__name__}, not bytes")
    if not data.startswith(SIGNED_PREFIX) or data[_SIGNED_HEAD - 1:_SIGNED_HEAD] != b":":
        raise UnauthenticatedError("tag", None, f"not signed (the signed form is {_SIGNED_TEXT}<tag: {TAG_CHARS} "
                                                "hex digits>:<envelope>)")
    tag = data[len(SIGNED_PREFIX):_SIGNED_HEAD - 1].decode("ascii", "replace")
    envelope = data[_SIGNED_HEAD:]
    if not signer.verify(signed_content(topic, envelope), tag):
        raise UnauthenticatedError("tag", tag, f"not the tag of this {topic} envelope under the bus key "
                                               "(another key, another topic, or altered bytes)")
    return envelope


_ENVELOPE_KEYS = ("v", "type", "payload", "meta")


class _NonFinite:
    """Stands for a NaN/Infinity literal while parsing, so that its path can be reported."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _find_non_finite(node: Any, path: str) -> tuple[str, str] | None:
    if isinstance(node, _NonFinite):
        return path, node.literal
    if isinstance(node, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for sub_path, value in items:
        hit = _find_non_finite(value, sub_path)
        if hit is not None:
            return hit
    return None


def _parse_refused(data: Any) -> Any:
    """Parse what orjson refused with the standard library, to say what is wrong.

    Raises:
        MessageError: Not JSON (``"envelope"``), or a NaN/Infinity literal (its path).
    """
    literals: list[str] = []

    def non_finite(literal: str) -> _NonFinite:
        literals.append(literal)
        return _NonFinite(literal)

    try:
        obj = json.loads(data, parse_constant=non_finite)
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MessageError("envelope", data, f"not JSON: {exc}") from None
    hit = _find_non_finite(obj, "") if literals else None
    if hit is not None:
        path, literal = hit
        raise MessageError(path or "envelope", literal, "NaN and Infinity are not JSON numbers")
    # JSON that only orjson refuses (a lone surrogate escape in a string): the rules
    # below judge it like any other.
    return obj


def decode(data: object) -> Envelope:
    """Parse and validate one envelope (module docstring).

    Args:
        data: The envelope as UTF-8 bytes or text (anything else is malformed).

    Raises:
        MessageError: Anything is malformed; ``field`` names where. Nothing else: an
            error of another type from deep inside (a case the checks above missed) is
            a MessageError on ``"envelope"`` too, so that one message never stops a
            consumer.
    """
    try:
        return _decode(data)
    except MessageError:
        raise
    except Exception as exc:
        raise MessageError("envelope", data, f"unreadable: {type(exc).__name__}: {exc}") from exc


def _decode(data: object) -> Envelope:
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        try:
            obj = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError):
            obj = _parse_refused(data)
    else:  # a transport's payload of another type: the standard library says why it is not JSON
        obj = _parse_refused(data)
    if not isinstance(obj, dict):
        raise MessageError("envelope", obj, "must be a JSON object")
    for key in obj:
        if key not in _ENVELOPE_KEYS:
            raise MessageError(key, obj[key], f"unknown envelope field (known: {', '.join(_ENVELOPE_KEYS)})")
    for key in ("v", "type", "payload"):
        if key not in obj:
            raise MessageError(key, None, "missing")
    version = obj["v"]
    if type(version) is not int:
        raise MessageError("v", version, "must be an integer")
    if version != SCHEMA_VERSION:
        raise MessageError("v", version, f"unsupported schema version (this build reads {SCHEMA_VERSION})")
    kind = _TYPES.get(obj["type"]) if type(obj["type"]) is str else None
    if kind is None:
        raise MessageError("type", obj["type"], f"must be one of {', '.join(t.value for t in MessageType)}")
    payload = obj["payload"]
    if not isinstance(payload, dict):
        raise MessageError("payload", payload, "must be an object")
    meta = check_meta(obj["meta"]) if "meta" in obj else NO_META
    return Envelope(_build(kind, payload), meta)


# "invalid decision: regime='x': ...", "invalid signal: missing qty, side": the field of
# the errors StrategicDecision and TacticalSignal raise.
_INNER_FIELD = re.compile(r"invalid (?:decision|signal): (?:missing )?([A-Za-z_]\w*)")


def _build(kind: MessageType, payload: dict[str, Any]) -> Message:
    try:
        if kind is MessageType.BAR:
            return Bar.from_dict(payload)
        if kind is MessageType.FILL:
            return Fill.from_dict(payload)
        if kind is MessageType.DECISION:
            return StrategicDecision.from_dict(payload)
        signal = TacticalSignal.from_dict(payload)
    except (InvalidBarError, MessageError) as exc:
        raise MessageError(f"payload.{exc.field}", exc.value, exc.reason) from None
    except InvalidInputError as exc:
        match = _INNER_FIELD.match(str(exc))
        name = match.group(1) if match else None
        value = payload.get(name) if name is not None else payload
        raise MessageError(f"payload.{name}" if name else "payload", value, str(exc)) from None
    expected = signal.content_id()
    if signal.signal_id != expected:
        raise MessageError("payload.signal_id", signal.signal_id,
                           f"does not match the signal's content (expected {expected!r})")
    return signal
