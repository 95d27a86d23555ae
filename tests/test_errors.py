"""l2fast's typed errors survive pickling: message, attributes and type."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from l2fast.errors import (
    BusUnavailableError,
    InvalidBarError,
    ModelLoadError,
    SnapshotError,
    UnsafePickleError,
)
from l2fast.export.safe_pickle import UnsafePickleOpcodeError

# Every error whose __init__ takes something other than the message alone.
ERRORS = {
    "model load, with path": ModelLoadError("SHA-256 does not match", Path("models/trend_agent.onnx")),
    "model load, no path": ModelLoadError("no models to fuse"),
    "bar": InvalidBarError("high", 99.5, "below low 100.0"),
    "unsafe pickle": UnsafePickleError("os", "system", "agent.pkl"),
    "unsafe opcode": UnsafePickleOpcodeError("INST", "agent.pkl"),
    "snapshot": SnapshotError("checksum mismatch", Path("engine.snap")),
    "bus unavailable": BusUnavailableError("redis://:***@host:6379/0", "Connection refused", retries=7,
                                           waited_s=30.2, reason="interrupted"),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_model_load_error_keeps_message_path_and_reason_through_pickle(protocol) -> None:
    err = ModelLoadError("SHA-256 does not match", Path("models/trend_agent.onnx"))
    back = pickle.loads(pickle.dumps(err, protocol))
    assert type(back) is ModelLoadError
    assert str(back) == str(err) == "models/trend_agent.onnx: SHA-256 does not match"
    assert back.path == Path("models/trend_agent.onnx") and back.reason == "SHA-256 does not match"


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_with_their_own_init_survive_pickle_and_copy_unchanged(name) -> None:
    err = ERRORS[name]
    err.add_note("while loading the ensemble")
    for back in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(back) is type(err)
        assert str(back) == str(err) and back.args == err.args
        assert vars(back) == vars(err)  # every attribute, and the note
