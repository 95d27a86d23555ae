"""The restricted unpickler: what it loads, what it refuses, and that refused code never runs."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from l2fast.errors import ExportError, UnsafePickleError
from l2fast.export.safe_pickle import (
    Discarded,
    GlobalRef,
    PickledRunningMeanStd,
    PickledSpace,
    PickledVecNormalize,
    UnsafePickleOpcodeError,
    allowed_globals,
    safe_load,
    safe_loads,
)

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


class _Payload:
    """Pickles as a call to ``func(*args)``: what a malicious file does on ``pickle.load``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(target: Path) -> dict[str, tuple[object, str, str]]:
    """Payloads that each create ``target`` when unpickled, with the global they name."""
    return {
        "os.system": (_Payload(os.system, f"touch {target}"), os.system.__module__, "system"),
        "builtins.eval": (_Payload(builtins.eval, f"open({str(target)!r}, 'w').close()"), "builtins", "eval"),
        "builtins.exec": (_Payload(builtins.exec, f"open({str(target)!r}, 'w').close()"), "builtins", "exec"),
        "subprocess.Popen": (_Payload(subprocess.Popen, ["touch", str(target)]), "subprocess", "Popen"),
        "subprocess.call": (_Payload(subprocess.call, ["touch", str(target)]), "subprocess", "call"),
    }


def _raw_global(module: str, name: str, arg: str = "x") -> bytes:
    """A protocol-2 pickle calling ``module.name(arg)`` (built by hand: the global need not import)."""
    text = b"X" + len(arg).to_bytes(4, "little") + arg.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + text + b"\x85R."


PAYLOAD_KINDS = ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "subprocess.call"]


def test_the_payloads_are_live_under_plain_pickle(tmp_path):
    # Guards the tests below: each payload really creates the file when unpickled naively.
    for kind, (payload, _module, _name) in _payloads(tmp_path / "control").items():
        target = tmp_path / "control"
        target.unlink(missing_ok=True)
        result = pickle.loads(pickle.dumps(payload))
        if isinstance(result, subprocess.Popen):
            result.wait()
        assert target.exists(), kind


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(kind, protocol, tmp_path):
    target = tmp_path / "pwned"
    payload, module, name = _payloads(target)[kind]
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(pickle.dumps(payload, protocol=protocol), source="evil.pkl")
    assert (info.value.module, info.value.name) == (module, name)
    assert f"{module}.{name}" in str(info.value) and "evil.pkl" in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_malicious_object_nested_in_valid_data_is_refused(kind, tmp_path):
    target = tmp_path / "pwned"
    payload, module, name = _payloads(target)[kind]
    data = {"weights": np.arange(5.0), "meta": [1, "two", {"deep": (3.0, payload)}]}
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        safe_loads(pickle.dumps(data, protocol=4), source="nested.pkl")
    assert not target.exists()


@pytest.mark.parametrize("module,name", [
    ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "open"), ("builtins", "compile"),
    ("builtins", "globals"), ("builtins", "object"), ("builtins", "type"), ("os", "system"), ("posix", "system"),
    ("nt", "system"), ("os", "popen"), ("subprocess", "check_output"), ("functools", "partial"),
    ("copyreg", "_reconstructor"), ("pickle", "loads"), ("_pickle", "loads"),
    ("importlib", "import_module"), ("runpy", "run_path"), ("shutil", "rmtree"), ("torch", "load"),
    ("torch._utils", "_rebuild_tensor_v2"), ("numpy", "load"), ("numpy", "frombuffer"),
    ("numpy.testing._private.utils", "runstring"), ("numpy", "core.multiarray._reconstruct"),
    ("numpy._core.multiarray", "_reconstruct.__globals__"), ("stable_baselines3.ppo.ppo", "PPO"),
    ("stable_baselines3.common.utils", "FloatSchedule"), ("cloudpickle.cloudpickle", "_make_function"),
    ("sklearn.pipeline", "Pipeline"), ("codecs", "encode"),
])
def test_globals_off_the_allow_list_are_refused(module, name):
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(_raw_global(module, name), source="crafted")
    assert (info.value.module, info.value.name) == (module, name)


@pytest.mark.parametrize("module,name,py3", [
    ("__builtin__", "eval", "builtins.eval"), ("__builtin__", "getattr", "builtins.getattr"),
    ("copy_reg", "_reconstructor", "copyreg._reconstructor"), ("commands", "getoutput", "subprocess.getoutput"),
])
def test_python2_names_are_judged_by_their_python3_meaning(module, name, py3):
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(_raw_global(module, name), source="py2")
    assert f"{info.value.module}.{info.value.name}" == py3


def test_allow_list_lists_no_dangerous_module():
    listed = [g for kind in allowed_globals().values() for g in kind]
    for bad in ("os.", "posix.", "subprocess.", "builtins.eval", "builtins.exec", "builtins.getattr",
                "builtins.__import__", "functools.", "copyreg.", "torch.load", "numpy.load", "pickle."):
        assert not [g for g in listed if g.startswith(bad)], bad


@pytest.mark.parametrize("raw,opcode", [
    (b"(i__main__\nEvil\n.", None),                      # INST: protocol 0 instance building
    (b"\x80\x02(ctorch.nn.modules.activation\nReLU\no.", "OBJ"),
    (b"\x80\x02\x82\x01.", "EXT1"),                       # the copyreg extension registry
    (b"\x80\x02Pabc\n.", "PERSID"),
    (b"\x80\x02X\x03\x00\x00\x00abcQ.", "BINPERSID"),
    (b"\x80\x05\x97.", "NEXT_BUFFER"),
])
def test_unneeded_opcodes_are_refused_before_anything_runs(raw, opcode):
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(raw, source="ops")
    if opcode is None:
        assert (info.value.module, info.value.name) == ("__main__", "Evil")
    else:
        assert isinstance(info.value, UnsafePickleOpcodeError) and info.value.name == opcode


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_numpy_arrays_scalars_and_builtin_containers_round_trip(protocol):
    value = {
        "f64": np.linspace(-1, 1, 7), "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.array([1, -2, 3]), "bool": np.array([True, False]), "str": np.array(["rsi_14_1m", "atr"]),
        "obj": np.array(["a", "bb"], dtype=object), "fortran": np.asfortranarray(np.ones((3, 2))),
        "scalars": (np.float64(1.5), np.float32(2.5), np.int64(7), np.bool_(True)), "dtype": np.dtype("<f4"),
        "set": {1, 2}, "frozen": frozenset({"x"}), "bytes": b"\x00\xff", "ba": bytearray(b"ab"),
        "complex": 1 + 2j, "ordered": OrderedDict(a=1), "nested": [None, True, 1.0, "s", (1, [2])],
        "empty": np.zeros((0, 3)),
    }
    loaded = safe_loads(pickle.dumps(value, protocol=protocol), source="ok")
    assert loaded.keys() == value.keys()
    for key, expected in value.items():
        got = loaded[key]
        if isinstance(expected, np.ndarray):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
        else:
            assert got == expected and type(got) is type(expected), key


def test_numpy_1_pickles_naming_numpy_core_still_load():
    value = {"a": np.arange(4.0), "s": np.float64(3.0)}
    raw = pickle.dumps(value, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in raw
    loaded = safe_loads(raw, source="old")
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["s"] == 3.0


def test_codecs_encode_is_limited_to_latin1():
    assert safe_loads(pickle.dumps(b"\x00\x80\xff", protocol=2), source="p2") == b"\x00\x80\xff"
    raw = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(ExportError, match="latin1"):
        safe_loads(raw, source="codec")


@pytest.mark.parametrize("raw", [
    b"\x80\x02ctorch.nn.modules.activation\nReLU\n)R.",      # call it
    b"\x80\x02ctorch.nn.modules.activation\nReLU\n)\x81.",   # NEWOBJ
    b"\x80\x02ctorch.nn.modules.activation\nReLU\n}b.",      # BUILD state into it
])
def test_class_references_cannot_be_called_or_built(raw):
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.activation.ReLU.*only as a class reference"):
        safe_loads(raw, source="ref")


def test_class_references_are_inert_names():
    ref = safe_loads(b"\x80\x02ctorch.nn.modules.activation\nTanh\n.", source="ref")
    assert isinstance(ref, GlobalRef) and ref.qualname == "torch.nn.modules.activation.Tanh"
    with pytest.raises(Exception, match="torch.nn.modules.activation.Tanh"):  # the loader's private error
        ref()
    contrib = safe_loads(b"\x80\x02csb3_contrib.common.recurrent.policies\nRecurrentActorCriticPolicy\n.",
                         source="ref")
    assert contrib.name == "RecurrentActorCriticPolicy"


def test_stand_ins_refuse_constructor_arguments():
    raw = b"\x80\x02cstable_baselines3.common.vec_env.vec_normalize\nVecNormalize\nK\x01\x85R."
    with pytest.raises(ExportError, match="constructor arguments"):
        safe_loads(raw, source="vn")


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x80\x04\x95", b"not a pickle at all", b"\x80\x02]q\x00(K\x01"])
def test_corrupt_or_truncated_pickles_are_export_errors(raw):
    with pytest.raises(ExportError, match="bad.pkl") as info:
        safe_loads(raw, source="bad.pkl")
    assert not isinstance(info.value, UnsafePickleError)


def test_truncated_real_pickle_is_an_export_error():
    raw = pickle.dumps({"a": np.arange(100.0), "b": "x" * 50}, protocol=4)
    for cut in (len(raw) // 3, len(raw) - 2):
        with pytest.raises(ExportError, match="corrupt|truncated"):
            safe_loads(raw[:cut], source="cut")


def test_safe_load_reads_files_and_names_missing_ones(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2]))
    assert safe_load(path) == [1, 2]
    with pytest.raises(ExportError, match="cannot read"):
        safe_load(tmp_path / "missing.pkl")


def test_sklearn_scalers_load_as_the_real_fitted_objects():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    x = np.random.default_rng(0).normal(size=(200, 4)) * [1, 10, 100, 1000]
    for scaler in (preprocessing.StandardScaler(), preprocessing.MinMaxScaler(clip=True),
                   preprocessing.RobustScaler()):
        scaler.fit(x)
        for protocol in (2, 5):
            loaded = safe_loads(pickle.dumps(scaler, protocol=protocol), source="scaler")
            assert type(loaded) is type(scaler)
            np.testing.assert_array_equal(loaded.transform(x * 3), scaler.transform(x * 3))


def test_gymnasium_spaces_load_as_records_with_rng_state_discarded():
    spaces = pytest.importorskip("gymnasium.spaces")
    box = spaces.Box(low=np.array([-1.0, 0.0], np.float32), high=np.array([2.0, 3.0], np.float32))
    box.seed(3)
    box.sample()  # gives it a generator whose pickle names numpy's random constructors
    disc = spaces.Discrete(7)
    disc.seed(1)
    loaded = safe_loads(pickle.dumps({"box": box, "d": disc}), source="spaces")
    assert isinstance(loaded["box"], PickledSpace) and loaded["box"].kind == "Box"
    np.testing.assert_array_equal(loaded["box"].state["high"], box.high)
    assert loaded["d"].kind == "Discrete" and int(loaded["d"].state["n"]) == 7
    assert isinstance(loaded["d"].state["_np_random"], Discarded)


def test_vecnormalize_file_loads_as_a_record_without_the_real_class(tmp_path):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    vn = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), clip_obs=4.0, epsilon=1e-6)
    vn.reset()
    for _ in range(5):
        vn.step(np.zeros((2, 1), dtype=np.float32))
    vn.save(tmp_path / "vn.pkl")
    loaded = safe_load(tmp_path / "vn.pkl")
    assert isinstance(loaded, PickledVecNormalize)
    assert loaded.state["clip_obs"] == 4.0 and loaded.state["epsilon"] == 1e-6
    rms = loaded.state["obs_rms"]
    assert isinstance(rms, PickledRunningMeanStd)
    np.testing.assert_array_equal(rms.state["mean"], vn.obs_rms.mean)
    np.testing.assert_array_equal(rms.state["var"], vn.obs_rms.var)
