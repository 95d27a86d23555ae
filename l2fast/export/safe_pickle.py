"""A restricted unpickler for the pickled parts of agents: bundles, VecNormalize files, SB3 zips.

A pickle is a program: unpickling calls whatever callables the file names. Loading a
``.pkl`` bundle, a ``VecNormalize.save`` file or the cloudpickled entries of an SB3 zip's
``data`` with :mod:`pickle` runs code chosen by whoever wrote the file. This module's
unpickler resolves only the explicit allow-list below and raises
:class:`~l2fast.errors.UnsafePickleError` naming any other global, before anything named
by it can run. Before unpickling, the whole opcode stream is scanned and refused if it
uses an opcode agents never need (protocol 0/1 instance building, the copyreg extension
registry, persistent ids, out-of-band buffers).

Every allowed global is one of four kinds:

* **real**: resolved to the real object, because the result must be one (numpy arrays,
  dtypes and scalars; sklearn's StandardScaler, MinMaxScaler and RobustScaler; a few
  builtin containers; ``bytes``, ``bytearray`` and numpy's ``_reconstruct`` behind a cap
  on what they allocate, see Resources below). None of them can reach the filesystem, a
  process or an import of a module named by the pickle.
* **stand-in**: resolved to an inert record class of this module that only stores the
  pickled state (:class:`PickledSpace` for gymnasium/gym spaces,
  :class:`PickledVecNormalize`, :class:`PickledRunningMeanStd`). SB3's ``VecNormalize``
  is never resolved: its ``__setstate__`` is harmless, but calling its constructor
  (which a pickle may do) wraps whatever "venv" the pickle provides; the record keeps
  ``obs_rms``, ``clip_obs``, ``epsilon`` and ``norm_obs``, which is all the export needs.
* **discarded**: numpy random generator state (a space's ``_np_random``), resolved to
  :class:`Discarded`, which ignores its arguments. numpy's own helpers would call a
  callable taken from the pickle.
* **reference**: classes that must only be *named* (SB3 policy classes, torch
  activation and optimizer classes, SB3 features-extractor classes, ``numpy.ndarray``
  as the argument of ``_reconstruct``): resolved to an inert class
  whose metaclass is :class:`GlobalRef`. It cannot be called, instantiated or given
  state, so the pickle cannot build the object; the caller maps the name to a class
  from its own table. Every
  ``sb3_contrib`` class is a reference too, so that loading can say which algorithm is
  unsupported instead of merely refusing the file, and so is every ``torch.optim``
  class (``policy_kwargs`` may name any optimizer; inference ignores it).

Everything else, including ``builtins.eval/exec/getattr/__import__``, ``os``/``posix``,
``subprocess``, ``functools.partial``, ``copyreg._reconstructor``, ``torch.load``,
``numpy.load``, torch tensors and pickled SB3 algorithm objects, is refused.

Resources: a pickle may also try to exhaust memory through the allowed globals. A genuine
agent pickle carries its data, so no allowed constructor is asked to allocate from a size:
``bytearray(n)`` / ``bytes(n)`` and numpy's array reconstruction (``_reconstruct``,
shape x itemsize) are refused above :data:`MAX_ALLOCATION_BYTES`, and ``numpy.ndarray``
is a reference that only ``_reconstruct`` may use (calling it, ``ndarray(shape)``, is
refused). Shared references multiply cheaply (a list holding the same list a thousand
times, nested three deep, is a billion items to whoever converts it), so the unpickled
object is walked, every reference counted each time it is reached, and refused beyond
:data:`MAX_EXPANDED_ITEMS` items or :data:`MAX_NESTING` levels. Each refusal is an
:class:`~l2fast.errors.ExportError` naming the size.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import operator
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from l2fast._files import FileTooLargeError, NotRegularFileError, UnreadableFileError, read_regular_file
from l2fast.errors import ExportError, UnsafePickleError

__all__ = [
    "MAX_ALLOCATION_BYTES",
    "MAX_EXPANDED_ITEMS",
    "MAX_NESTING",
    "MAX_SOURCE_BYTES",
    "Discarded",
    "GlobalRef",
    "PickledRunningMeanStd",
    "PickledSpace",
    "PickledVecNormalize",
    "UnsafePickleOpcodeError",
    "allowed_globals",
    "read_bounded",
    "safe_load",
    "safe_loads",
]


MAX_SOURCE_BYTES = 256 << 20
"""Largest file an export reads (256 MiB): a ``.zip``, a ``.pkl`` bundle (its model's
zip archive plus kilobytes of metadata) or a VecNormalize file; MLP policies are a few MB."""

MAX_ALLOCATION_BYTES = 64 << 20
"""Largest buffer an allowed constructor may allocate from a size the pickle gives
(``bytearray(n)``, ``bytes(n)``, an array's shape x itemsize): 64 MiB, far above any
scaler or statistics array of an agent (observation-sized), far below a memory attack."""

MAX_EXPANDED_ITEMS = 5_000_000
"""Most container items the unpickled object may hold, a shared reference counted every
time it is reached (see the module docstring)."""

MAX_NESTING = 100
"""Deepest nesting of containers in the unpickled object (an agent's is under 10)."""


class UnsafePickleOpcodeError(UnsafePickleError):
    """A pickle uses an opcode the export never needs; nothing in it was loaded.

    Attributes:
        module: ``"<opcode>"``.
        name: The opcode's name (``"INST"``, ``"EXT1"``, ...).
    """

    def __init__(self, opcode: str, source: str = "") -> None:
        self.module = "<opcode>"
        self.name = opcode
        where = f" in {source}" if source else ""
        ExportError.__init__(self, f"refused to unpickle{where}: pickle opcode {opcode} is not allowed")


class GlobalRef(type):
    """Metaclass of the inert references to classes a pickle may name but not build or call.

    A reference is a class (so that pickle's ``NEWOBJ`` reaches its ``__new__``) whose
    every way of being instantiated, called or modified raises; ``isinstance(x, GlobalRef)``
    tells a reference apart from real data.

    Attributes:
        module: Module of the referenced global.
        name: Its name.
    """

    module: str
    name: str

    def __call__(cls, *args: object, **kwargs: object) -> None:
        raise _RefMisused(cls)

    def __setattr__(cls, key: str, value: object) -> None:
        raise _RefMisused(cls)

    @property
    def qualname(cls) -> str:
        """``module.name``."""
        return f"{cls.module}.{cls.name}"

    def __repr__(cls) -> str:
        return f"GlobalRef({cls.qualname})"


def _refuse_new(cls: GlobalRef, *args: object, **kwargs: object) -> None:
    raise _RefMisused(cls)


def _reference(module: str, name: str) -> GlobalRef:
    """A fresh inert reference to ``module.name``."""
    made: list[GlobalRef] = []

    def refuse_setstate(*args: object) -> None:
        raise _RefMisused(made[0])

    made.append(GlobalRef(f"Ref_{name}", (), {"__new__": _refuse_new, "__setstate__": refuse_setstate,
                                              "__slots__": (), "module": module, "name": name}))
    return made[0]


class _RefMisused(Exception):
    """Internal: the pickle tried to call a :class:`GlobalRef` or give it state."""

    def __init__(self, ref: GlobalRef) -> None:
        super().__init__(ref.qualname)
        self.ref = ref


class _Record:
    """Base of the stand-ins: stores the pickled state dict, runs nothing else."""

    __slots__ = ("state",)
    state: dict[str, Any]

    def __new__(cls, *args: object, **kwargs: object) -> _Record:
        if args or kwargs:
            raise ExportError(f"{cls.__name__[len('Pickled'):]} cannot be built from constructor arguments")
        self = super().__new__(cls)
        self.state = {}
        return self

    def __setstate__(self, state: object) -> None:
        # BUILD hands over either the instance dict or (dict, slot dict).
        merged: dict[str, Any] = {}
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:
            if part is None:
                continue
            if not isinstance(part, dict):
                raise ExportError(f"{type(self).__name__}: pickled state is {type(part).__name__}, expected a dict")
            merged.update(part)
        self.state = merged

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self.state)})"


class PickledSpace(_Record):
    """The pickled state of a gymnasium (or legacy gym) space; rebuild it with :attr:`kind`.

    Attributes:
        kind: ``"Box"``, ``"Discrete"``, ``"Dict"``, ``"Tuple"``, ``"MultiDiscrete"``,
            ``"MultiBinary"``, ``"Sequence"``, ``"Text"`` or ``"Graph"``.
        module: Module of the pickled class (``gymnasium.spaces.box``, ``gym.spaces.box``...).
        state: The pickled attributes.
    """

    __slots__ = ()
    kind = ""
    module = ""


class PickledVecNormalize(_Record):
    """The pickled attributes of an SB3 ``VecNormalize`` (``obs_rms``, ``clip_obs``, ...)."""

    __slots__ = ()


class PickledRunningMeanStd(_Record):
    """The pickled attributes of an SB3 ``RunningMeanStd`` (``mean``, ``var``, ``count``)."""

    __slots__ = ()


class Discarded:
    """Stands in for random-generator state, which the export never uses; ignores everything."""

    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> Discarded:
        return super().__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __repr__(self) -> str:
        return "Discarded()"


def _size_argument(args: tuple[Any, ...]) -> int | None:
    """The size ``bytearray(*args)`` / ``bytes(*args)`` would allocate zeros for, if any."""
    if len(args) != 1 or isinstance(args[0], (str, bytes, bytearray, memoryview)):
        return None
    try:
        return operator.index(args[0])  # ints and numpy integers both
    except TypeError:
        return None  # an iterable: no bigger than what the pickle holds


def _capped(kind: type) -> Any:
    """``bytes`` or ``bytearray`` refusing to allocate more than :data:`MAX_ALLOCATION_BYTES` from a size."""
    def build(*args: Any) -> Any:
        size = _size_argument(args)
        if size is not None and size > MAX_ALLOCATION_BYTES:
            raise ExportError(f"{kind.__name__}({size}) would allocate {size} bytes, more than the "
                              f"{MAX_ALLOCATION_BYTES}-byte cap on what a pickle may ask for")
        return kind(*args)

    build.__name__ = build.__qualname__ = kind.__name__
    return build


def _reconstruct(subtype: object, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` for plain arrays of at most :data:`MAX_ALLOCATION_BYTES` bytes.

    Pickles made by numpy call it with an empty shape and fill the array from their own
    bytes (``__setstate__``); a pickle asking for a big shape here asks for memory it
    does not carry.
    """
    if not (isinstance(subtype, GlobalRef) and subtype.qualname == "numpy.ndarray"):
        raise ExportError(f"numpy _reconstruct of {subtype!r}: only plain numpy.ndarray is allowed")
    try:
        dims = [operator.index(d) for d in (shape if isinstance(shape, tuple) else (shape,))]
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as exc:
        raise ExportError(f"numpy _reconstruct with shape {shape!r}, dtype {dtype!r}: {exc}") from None
    nbytes = itemsize
    for d in dims:
        nbytes *= max(d, 0)  # Python ints: no overflow before the comparison
    if nbytes > MAX_ALLOCATION_BYTES:
        raise ExportError(f"a numpy array of shape {tuple(dims)} and {itemsize}-byte items would allocate "
                          f"{nbytes} bytes, more than the {MAX_ALLOCATION_BYTES}-byte cap on what a pickle "
                          "may ask for")
    from numpy._core.multiarray import _reconstruct as numpy_reconstruct

    return numpy_reconstruct(np.ndarray, tuple(dims), dtype)


def _children(obj: object) -> Any:
    """The objects ``obj`` holds, as the size walk counts them (None: a leaf)."""
    if isinstance(obj, dict):
        return [x for kv in obj.items() for x in kv]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, _Record):
        return [obj.state]
    if isinstance(obj, np.ndarray):
        return obj.flat if obj.dtype.hasobject else None
    if isinstance(obj, type) or not hasattr(obj, "__dict__"):
        return None
    return list(vars(obj).values())  # a scaler's fitted attributes


def _check_expanded(root: object, source: str) -> None:
    """Refuse an object holding more than :data:`MAX_EXPANDED_ITEMS` items or nesting
    deeper than :data:`MAX_NESTING` (module docstring); iterative, so cycles and depth are safe."""
    items = 0
    stack: list[tuple[object, int]] = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        children = _children(obj)
        if children is None:
            continue
        if depth >= MAX_NESTING:
            raise ExportError(f"{source}: the pickle nests containers deeper than {MAX_NESTING} levels")
        for child in children:
            items += 1
            if items > MAX_EXPANDED_ITEMS:
                raise ExportError(f"{source}: the pickle expands to more than {MAX_EXPANDED_ITEMS} items (its shared "
                                  "references counted each time they are reached); an agent holds far fewer")
            stack.append((child, depth + 1))


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what protocol 2 uses for ``bytes``: latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "latin_1"):
        raise ExportError(f"_codecs.encode with encoding {encoding!r} is not allowed (only latin1)")
    return text.encode("latin-1")


# --- the allow-list -------------------------------------------------------------------

# (module as pickled, name) -> (module to import, attribute): resolved to the real object.
_REAL: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    # numpy 1.x wrote numpy.core.*; numpy 2 keeps the same functions under numpy._core.
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"): ("builtins", "set"),
    ("builtins", "frozenset"): ("builtins", "frozenset"),
    ("builtins", "complex"): ("builtins", "complex"),
    ("collections", "OrderedDict"): ("collections", "OrderedDict"),
}
for _scaler in ("StandardScaler", "MinMaxScaler", "RobustScaler"):
    _REAL[("sklearn.preprocessing._data", _scaler)] = ("sklearn.preprocessing._data", _scaler)
    _REAL[("sklearn.preprocessing.data", _scaler)] = ("sklearn.preprocessing._data", _scaler)  # sklearn < 0.22

_SPACE_KINDS = {
    "box": "Box", "discrete": "Discrete", "dict": "Dict", "tuple": "Tuple",
    "multi_discrete": "MultiDiscrete", "multi_binary": "MultiBinary",
    "sequence": "Sequence", "text": "Text", "graph": "Graph",
}
_STANDINS: dict[tuple[str, str], type] = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): PickledVecNormalize,
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): PickledRunningMeanStd,
}
for _package in ("gymnasium", "gym"):
    for _mod, _kind in _SPACE_KINDS.items():
        _STANDINS[(f"{_package}.spaces.{_mod}", _kind)] = type(
            f"Pickled{_kind}", (PickledSpace,), {"__slots__": (), "kind": _kind, "module": f"{_package}.spaces.{_mod}"})

_DISCARDED = {
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random", "__RandomState_ctor"),
    ("numpy.random.mtrand", "__RandomState_ctor"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
}

_REFERENCES: set[tuple[str, str]] = set()
for _name in ("ActorCriticPolicy", "ActorCriticCnnPolicy", "MultiInputActorCriticPolicy"):
    _REFERENCES.add(("stable_baselines3.common.policies", _name))
for _algo, _base in (("dqn", "DQNPolicy"), ("sac", "SACPolicy"), ("td3", "TD3Policy")):
    for _name in (_base, "MlpPolicy", "CnnPolicy", "MultiInputPolicy"):
        _REFERENCES.add((f"stable_baselines3.{_algo}.policies", _name))
for _name in ("FlattenExtractor", "NatureCNN", "CombinedExtractor"):
    _REFERENCES.add(("stable_baselines3.common.torch_layers", _name))
for _name in ("ReLU", "ReLU6", "Tanh", "Sigmoid", "ELU", "LeakyReLU", "SiLU", "GELU", "Hardtanh"):
    _REFERENCES.add(("torch.nn.modules.activation", _name))
_REFERENCES.add(("torch.nn.modules.linear", "Identity"))
# Only numpy's _reconstruct below may use it: called directly, ndarray(shape) allocates.
_REFERENCES.add(("numpy", "ndarray"))

# Real constructors behind a cap on what they allocate from a size the pickle gives.
_CAPPED: dict[tuple[str, str], Any] = {
    ("builtins", "bytes"): _capped(bytes),
    ("builtins", "bytearray"): _capped(bytearray),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
}
# Any sb3_contrib class is only ever a reference, so loading can name the unsupported
# algorithm; any torch optimizer too: policy_kwargs may name one, and inference drops it.
_REFERENCE_PREFIXES = ("sb3_contrib.", "torch.optim.")

# Protocol 0/1 instance building, the copyreg extension registry, persistent ids and
# out-of-band buffers: no agent file needs them, and refusing them keeps find_class the
# only door through which a pickle can reach a global.
_REFUSED_OPCODES = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
                              "NEXT_BUFFER", "READONLY_BUFFER"})


def allowed_globals() -> dict[str, list[str]]:
    """The allow-list by kind, as ``module.name`` strings (for documentation and audits)."""
    return {
        "real": sorted([f"{m}.{n}" for m, n in _REAL]
                       + [f"{m}.{n} (at most MAX_ALLOCATION_BYTES from a size)" for m, n in _CAPPED]),
        "stand-in": sorted([f"{m}.{n}" for m, n in _STANDINS] + ["_codecs.encode (latin-1 only)"]),
        "discarded": sorted(f"{m}.{n}" for m, n in _DISCARDED),
        "reference": sorted(f"{m}.{n}" for m, n in _REFERENCES) + [f"{p}*" for p in _REFERENCE_PREFIXES],
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-list; everything else raises :class:`UnsafePickleError`."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, fix_imports=False)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 write Python 2 names (__builtin__.set); judge the Python 3 name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _CAPPED:
            return _CAPPED[key]
        if key in _REAL:
            real_module, attr = _REAL[key]
            try:
                return getattr(importlib.import_module(real_module), attr)
            except ImportError as exc:
                raise ExportError(f"{module}.{name} needs {real_module}, which cannot be imported: {exc}") from exc
        if key in _STANDINS:
            return _STANDINS[key]
        if key in _DISCARDED:
            return Discarded
        if key in _REFERENCES or (module.startswith(_REFERENCE_PREFIXES) and name.isidentifier()):
            return _reference(module, name)
        if key == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(module, name, self._source)

    def persistent_load(self, pid: object) -> Any:
        raise UnsafePickleOpcodeError("PERSID", self._source)


def _scan_opcodes(data: bytes, source: str) -> None:
    """Refuse unneeded opcodes before anything is executed; a malformed stream is corrupt."""
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES:
                if opcode.name == "INST" and isinstance(arg, str) and " " in arg:
                    module, name = arg.split(" ", 1)
                    raise UnsafePickleError(module, name, source)
                raise UnsafePickleOpcodeError(opcode.name, source)
    except UnsafePickleError:
        raise
    except Exception as exc:  # pickletools raises ValueError, but malformed input can raise others
        raise ExportError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc


def safe_loads(data: bytes, *, source: str) -> object:
    """Unpickle ``data`` through the allow-list.

    Args:
        data: The pickle bytes.
        source: What the bytes are (file name and entry), used in error messages.

    Returns:
        The unpickled object; spaces, VecNormalize and RunningMeanStd come back as the
        record stand-ins of this module, class references as :class:`GlobalRef`.

    Raises:
        UnsafePickleError: The pickle names a global outside the allow-list (or uses a
            refused opcode, :class:`UnsafePickleOpcodeError`); nothing it names was run.
        ExportError: The bytes are not a complete, well-formed pickle.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ExportError(f"{source}: expected pickle bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ExportError(f"{source}: empty file, not a pickle")
    _scan_opcodes(data, source)
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except _RefMisused as exc:
        err = UnsafePickleError(exc.ref.module, exc.ref.name, source)
        err.args = ((f"refused to unpickle {exc.ref.qualname} in {source}: it is allowed only as a class "
                     "reference, and the pickle tries to build or call it"),)
        raise err from None
    except ExportError as exc:
        raise ExportError(f"{source}: {exc}") from exc
    except Exception as exc:  # any failure inside the unpickler means a malformed file
        raise ExportError(f"{source}: corrupt or unreadable pickle ({type(exc).__name__}: {exc})") from exc
    _check_expanded(loaded, source)
    return loaded


def safe_load(path: str | Path) -> object:
    """Read and unpickle the file at ``path`` through the allow-list (see :func:`safe_loads`).

    Raises:
        ExportError: The file cannot be read, is larger than :data:`MAX_SOURCE_BYTES`,
            or is not a well-formed pickle.
        UnsafePickleError: The file names a global outside the allow-list.
    """
    path = Path(path)
    return safe_loads(read_bounded(path, MAX_SOURCE_BYTES), source=str(path))


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refused when larger than ``limit``.

    :func:`l2fast._files.read_regular_file` with the export's errors: the size is judged
    before anything is read, and the read stops one byte past the limit whatever the size
    said (a file growing meanwhile); a FIFO or device is refused without waiting on it.

    Raises:
        ExportError: The file cannot be opened or read, is not a regular file, or is
            larger than ``limit`` bytes.
    """
    try:
        return read_regular_file(path, limit, "export source")
    except UnreadableFileError as exc:
        raise ExportError(f"{path}: cannot read: {exc.strerror}") from exc
    except NotRegularFileError:
        raise ExportError(f"{path}: not a regular file") from None
    except FileTooLargeError as exc:
        found = f"{exc.size} bytes, more" if exc.size is not None else "more"
        raise ExportError(f"{path}: {found} than the {limit}-byte limit of an export source") from None
