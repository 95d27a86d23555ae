"""Every exported agent run once per bar: compiled, or fused into ONE onnxruntime graph.

:meth:`FusedEnsemble.from_dir` loads each ``<name>.json`` + ``<name>.onnx`` pair with
:func:`l2fast.models.loading.load_model` (manifest schema, ONNX SHA-256, inputs/outputs), maps the
manifest's ``feature_names`` to columns of the technical core's feature vector, and builds
one graph: a shared input ``features`` float32 ``[1, F]``, then per member a ``Gather`` of
its columns (axis 1) feeding that member's own nodes, every name prefixed ``<name>/``.
Outputs are ``<name>/action`` and ``<name>/probs`` (or ``<name>/q_values``).

When every member is the same kind of MLP (what the exporter writes for SB3's MLP
policies), the members are instead stacked into one wider MLP, one Gemm per layer for the
whole ensemble (:mod:`l2fast.models.stacking`), with outputs ``stacked/probs`` ``[M, A]`` and
``stacked/action`` ``[M]`` whose row k :meth:`run` exposes as member k's outputs. The
results are the same numbers as each member run alone (tests/test_ensemble.py).

Members keep the order they are given in (the engine gives its vote order, ``model.weights``;
:meth:`FusedEnsemble.from_dir` gives name order), while the graph is always built in name
order: the same models give the same graph, hence the same numbers, whatever the order.

One session call per bar instead of one per member saves the fixed per-call overhead of
onnxruntime (argument marshalling, executor setup) that dominates for small MLPs, and
stacking removes two thirds of the operators, each with its own fixed cost. Input and
outputs are preallocated numpy buffers bound once through io_binding, so :meth:`run` copies
F numbers in and runs the graph, nothing else.

With ``model.inference = "compiled"`` (the default) each plain-MLP member that passes its
load-time check against the session (:mod:`l2fast.models.compiled`) runs instead in the
compiled forward, reading the same bound row and writing buffers of its own, about ten
times faster; a member that does not pass stays on the session. The engine writes
:attr:`FusedEnsemble.input_row`, runs :attr:`FusedEnsemble.forward` (from C) and, when
:attr:`FusedEnsemble.uses_session`, :attr:`FusedEnsemble.session_run`, and reads each
member's :class:`MemberBuffers`.

Building the graph needs the ``onnx`` package (protobuf classes only); it is imported
lazily so that a missing install surfaces as a :class:`~l2fast.errors.ModelLoadError`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2fast.config import ModelConfig
from l2fast.errors import InvalidInputError, ModelLoadError
from l2fast.keys import Signer
from l2fast.models._mlp import MlpForward
from l2fast.models.compiled import compile_members, level_from_env
from l2fast.models.loading import LoadedModel, load_model, session_options, sha256_bytes
from l2fast.models.manifest import INPUT_NAME
from l2fast.models.stacking import STACKED_ACTION, STACKED_PROBS, mlp_chain, stack
from l2fast.technical.names import StockstatsFeature
from l2fast.technical.state import TechnicalConfig
from l2fast.technical.state import feature_names as technical_feature_names

__all__ = ["FUSED_INPUT", "FusedEnsemble", "MemberBuffers", "member_extras"]

FUSED_INPUT = "features"

_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.compose
    except ImportError as exc:
        raise ModelLoadError("fusing the ensemble needs the 'onnx' package: pip install 'onnx>=1.16'") from exc
    return onnx


def _columns(model: LoadedModel, index: dict[str, int], known: Sequence[str]) -> np.ndarray:
    """Column of each of the model's features in the shared feature vector, manifest order."""
    unknown = [f for f in model.vector_names if f not in index]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3)
            hints.append(f"{name} (did you mean {', '.join(close)}?)" if close else name)
        raise ModelLoadError(f"feature names unknown to the technical core: {'; '.join(hints)}. "
                             f"Known names ({len(known)}): {', '.join(known)}", model.onnx_path)
    return np.array([index[f] for f in model.vector_names], dtype=np.int64)


def _verified_proto(onnx: Any, model: LoadedModel) -> Any:
    """Parse the member's ONNX from bytes whose SHA-256 matches its manifest.

    The file is read again here (load_model keeps no bytes), so the digest is re-checked:
    the graph that gets fused is exactly the one the manifest vouches for.
    """
    try:
        data = model.onnx_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read ONNX file: {exc.strerror or exc}", model.onnx_path) from exc
    digest = sha256_bytes(data)
    if digest != model.manifest["onnx_sha256"]:
        raise ModelLoadError(f"SHA-256 {digest} does not match the manifest's "
                             f"{model.manifest['onnx_sha256']} (file modified or replaced)", model.onnx_path)
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"cannot parse the ONNX file: {exc}", model.onnx_path) from exc


def _clip_action(member_nodes: Any, action: str, bounds: tuple[np.ndarray, np.ndarray],
                 initializers: list) -> list:
    """Nodes clipping a Box member's ``action`` to its float32 bounds, as LoadedModel does.

    Graphs exported by l2fast clip already; one exported before they did (SB3's unscaling
    can round a step past a bound) or written by hand may not. The member's own nodes are
    rewired to write ``<action>:unclipped``, and the clip writes ``action``.
    """
    from onnx import helper, numpy_helper

    unclipped = f"{action}:unclipped"
    for node in member_nodes:
        node.input[:] = [unclipped if name == action else name for name in node.input]
        node.output[:] = [unclipped if name == action else name for name in node.output]
    low, high = bounds
    initializers += [numpy_helper.from_array(low, f"{action}:low"), numpy_helper.from_array(high, f"{action}:high")]
    return [helper.make_node("Min", [unclipped, f"{action}:high"], [f"{action}:capped"], name=f"{action}:min"),
            helper.make_node("Max", [f"{action}:capped", f"{action}:low"], [action], name=f"{action}:max")]


def _fuse(models: Sequence[LoadedModel], protos: Sequence[Any], columns: Sequence[np.ndarray],
          n_features: int) -> bytes:
    """Serialised ONNX model of the generic fused ensemble (every member's own nodes)."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper, version_converter

    # One opset per domain for the whole graph: the newest any member uses. A member on an
    # older default-domain opset is converted so its operators keep their exact semantics.
    opsets: dict[str, int] = {}
    for p in protos:
        for imp in p.opset_import:
            opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
    nodes, initializers, value_infos, outputs, functions = [], [], [], [], []
    for model, cols, proto in zip(models, columns, protos):
        default = next((imp.version for imp in proto.opset_import if imp.domain in ("", "ai.onnx")), None)
        if default is not None and default != opsets.get("", default):
            try:
                proto = version_converter.convert_version(proto, opsets[""])
            except Exception as exc:
                raise ModelLoadError(f"cannot convert opset {default} to {opsets['']}: {exc}",
                                     model.onnx_path) from exc
        prefix = f"{model.name}/"
        proto = onnx.compose.add_prefix(proto, prefix)
        g = proto.graph
        idx_name = f"{prefix}{INPUT_NAME}:columns"
        initializers.append(numpy_helper.from_array(cols, idx_name))
        nodes.append(helper.make_node("Gather", [FUSED_INPUT, idx_name], [prefix + INPUT_NAME],
                                      name=f"{prefix}{INPUT_NAME}:gather", axis=1))
        clip = [] if model.action_bounds is None else _clip_action(g.node, f"{prefix}action",
                                                                   model.action_bounds, initializers)
        nodes.extend(g.node)
        nodes.extend(clip)
        initializers.extend(g.initializer)
        value_infos.extend(g.value_info)
        outputs.extend(g.output)
        functions.extend(proto.functions)
    names = [n.name for n in nodes] + [i.name for i in initializers]
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise ModelLoadError(f"fused graph has clashing names after prefixing: {dupes[:5]}")
    graph = helper.make_graph(
        nodes, "l2fast_fused_ensemble",
        [helper.make_tensor_value_info(FUSED_INPUT, TensorProto.FLOAT, [1, n_features])],
        outputs, initializer=initializers, value_info=value_infos)
    fused = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        functions=functions, producer_name="l2fast.models.ensemble")
    fused.ir_version = max(p.ir_version for p in protos)
    return fused.SerializeToString()


def member_extras(members: Sequence[LoadedModel]) -> tuple[StockstatsFeature, ...]:
    """The stockstats features the members need computed, each once, in member order."""
    extras: dict[str, StockstatsFeature] = {}
    for model in members:
        for feature in model.extras:
            extras.setdefault(feature.name, feature)
    return tuple(extras.values())


@dataclass(frozen=True)
class MemberBuffers:
    """Where one member's outputs land on every run (bound once, overwritten by each run).

    Attributes:
        name: The member's name.
        action: Discrete: int64 ``[1]``, the action index; continuous: float32 ``[1, d]``.
        scores: Discrete: float32 ``[1, n]``, its ``probs`` or ``q_values``; continuous: None.
    """

    name: str
    action: np.ndarray
    scores: np.ndarray | None


class FusedEnsemble:
    """Every member agent run once per bar: compiled, or in one onnxruntime session.

    Attributes:
        members: The loaded member models, in the order given (each keeps its own
            session, useful as a per-member fallback and for checks).
        names: Member names, same order.
        feature_names: The shared feature vector's names (the input's columns).
        columns: Per member, the int64 column indices it gathers, in manifest order.
        output_names: Fused output names, ``<name>/action`` then ``<name>/probs`` or
            ``<name>/q_values`` per member.
        session: The fused onnxruntime ``InferenceSession``.
        stacked: True when the members share one stacked MLP (:mod:`l2fast.models.stacking`),
            False for the generic graph of per-member nodes.
        input_row: The bound input, float32 ``[1, F]``: what every run reads.
        session_run: Runs the session on :attr:`input_row` into :attr:`session_buffers`
            (no argument, no result; onnxruntime's errors propagate).
        session_buffers: Each member's outputs bound to the session, in member order.
        paths: Per member, its :class:`~l2fast.models.compiled.MemberPath`: whether its
            compiled forward passed the load-time check against onnxruntime, or why not.
        compiled: The compiled forward of the members that passed (None if none did):
            called without argument, it reads :attr:`input_row` and writes
            :attr:`compiled_buffers`.
        compiled_buffers: Those members' compiled outputs, in member order.
        forward: What runs compiled per bar: :attr:`compiled` when ``inference`` is
            ``"compiled"``, else None.
        uses_session: Whether the session runs per bar (``inference="onnxruntime"``, or a
            member that failed its check).
        run_bound: The per bar run: :attr:`forward` and/or :attr:`session_run`.
        member_buffers: Where each member's per-bar outputs land, in member order (its
            compiled buffers, or the session's).
        forward_index: Per member, its index in :attr:`forward` (what
            ``MlpForward.run_some`` takes), or -1 when it reads the session's outputs.
        inference: What runs per bar: ``"compiled"`` (every member compiled),
            ``"compiled+onnxruntime"`` (a member failed its check and reads the session's
            outputs) or ``"onnxruntime"``.
    """

    __slots__ = ("members", "names", "feature_names", "columns", "output_names", "session",
                 "stacked", "input_row", "session_run", "session_buffers", "forward", "uses_session", "run_bound",
                 "member_buffers", "_outputs", "paths", "compiled", "compiled_buffers", "inference", "forward_index")

    def __init__(self, members: Sequence[LoadedModel], feature_names: Sequence[str], *,
                 inference: str = ModelConfig.inference) -> None:
        """Fuse already loaded members; :meth:`from_dir` is the usual entry point.

        Args:
            members: The loaded members, in vote order.
            feature_names: The shared feature vector's names.
            inference: ``model.inference``: ``"compiled"`` (each member that passed its
                load-time check runs compiled, the others on the session) or
                ``"onnxruntime"`` (every member on the session).

        Raises:
            ModelLoadError: No members, a feature name unknown to ``feature_names``, a
                member whose ONNX no longer matches its manifest, or a fused graph that
                onnxruntime rejects.
            InvalidInputError: ``feature_names`` contains duplicates.
        """
        import onnxruntime as ort

        names = tuple(str(n) for n in feature_names)
        index = {n: i for i, n in enumerate(names)}
        if len(index) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInputError(f"feature_names: duplicate names {dupes[:5]}")
        if not members:
            raise ModelLoadError("no models to fuse")
        self.members = tuple(members)
        self.names = tuple(m.name for m in self.members)
        self.feature_names = names
        self.columns = {m.name: _columns(m, index, names) for m in self.members}
        onnx = _import_onnx()
        # The graph in name order whatever the members' order: one graph per set of models.
        graph_members = sorted(self.members, key=lambda m: m.name)
        protos = [_verified_proto(onnx, m) for m in graph_members]
        columns = [self.columns[m.name] for m in graph_members]
        if inference not in ("onnxruntime", "compiled"):
            raise InvalidInputError(f"inference={inference!r}: expected 'onnxruntime' or 'compiled'")
        graph_chains = [mlp_chain(p) for p in protos]
        chains = [c for c in graph_chains if c is not None]
        data = None
        if len(chains) == len(protos):
            data = stack(chains, columns, len(names), FUSED_INPUT, max(p.ir_version for p in protos))
        self.stacked = data is not None
        if data is None:
            data = _fuse(graph_members, protos, columns, len(names))
        try:
            self.session = ort.InferenceSession(data, sess_options=session_options(),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelLoadError(f"onnxruntime cannot load the fused ensemble: {exc}") from exc
        self.output_names = tuple(f"{m.name}/{o}" for m in self.members for o in m.output_names)
        # Preallocated, bound once: a call writes F floats into input_row and runs the graph.
        self.input_row = np.zeros((1, len(names)), dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(FUSED_INPUT, ort.OrtValue.ortvalue_from_numpy(self.input_row))
        shapes = {o.name: o for o in self.session.get_outputs()}
        self._outputs: dict[str, np.ndarray] = {}
        if self.stacked:
            # Row k of the two stacked buffers belongs to graph member k (views, bound once).
            probs = np.zeros([int(d) for d in shapes[STACKED_PROBS].shape], dtype=np.float32)
            action = np.zeros(len(self.members), dtype=np.int64)
            binding.bind_ortvalue_output(STACKED_PROBS, ort.OrtValue.ortvalue_from_numpy(probs))
            binding.bind_ortvalue_output(STACKED_ACTION, ort.OrtValue.ortvalue_from_numpy(action))
            row = {m.name: k for k, m in enumerate(graph_members)}
            for name in self.names:
                k = row[name]
                self._outputs[f"{name}/action"] = action[k:k + 1]
                self._outputs[f"{name}/probs"] = probs[k:k + 1]
        for name in self.output_names if not self.stacked else ():
            info = shapes[name]
            shape = [1] + [int(d) for d in info.shape[1:]]
            buf = np.zeros(shape, dtype=_ORT_TO_NUMPY[info.type])
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            self._outputs[name] = buf
        # A partial, not a method: a per-bar call costs no Python frame.
        self.session_run: Callable[[], None] = functools.partial(self.session.run_with_iobinding, binding)
        self.session_buffers: tuple[MemberBuffers, ...] = tuple(
            MemberBuffers(m.name, self._outputs[f"{m.name}/action"],
                          self._outputs[f"{m.name}/{m.output_names[1]}"] if len(m.output_names) > 1 else None)
            for m in self.members)
        # The compiled forward writes buffers of its own, shaped as the session's.
        chain_of = {m.name: c for m, c in zip(graph_members, graph_chains)}
        own = [MemberBuffers(b.name, np.zeros_like(b.action), None if b.scores is None else np.zeros_like(b.scores))
               for b in self.session_buffers]
        self.compiled, self.paths = compile_members(
            self.members, [chain_of[n] for n in self.names], [self.columns[n] for n in self.names],
            self.input_row, [(b.action, b.scores) for b in own], level_from_env())
        on_compiled = [p.path == "compiled" for p in self.paths]
        self.compiled_buffers = tuple(b for b, c in zip(own, on_compiled) if c)
        self.forward: MlpForward | None = None
        self.uses_session = True
        self.member_buffers: tuple[MemberBuffers, ...] = self.session_buffers
        self.inference = "onnxruntime"
        if inference == "compiled" and self.compiled is not None:
            self.forward = self.compiled
            self.member_buffers = tuple(mine if c else theirs
                                        for mine, theirs, c in zip(own, self.session_buffers, on_compiled))
            # With a member that failed its check the session still runs the whole graph
            # each bar; only that member reads its outputs.
            self.uses_session = not all(on_compiled)
            self.inference = "compiled+onnxruntime" if self.uses_session else "compiled"
        self.forward_index: tuple[int, ...] = (-1,) * len(self.members)
        if self.forward is not None:
            ranks = iter(range(len(self.members)))
            self.forward_index = tuple(next(ranks) if c else -1 for c in on_compiled)
        self.run_bound: Callable[[], None] = self._per_bar_run()
        self._outputs = {}
        for m, b in zip(self.members, self.member_buffers):
            self._outputs[f"{m.name}/action"] = b.action
            if b.scores is not None:
                self._outputs[f"{m.name}/{m.output_names[1]}"] = b.scores

    def _per_bar_run(self) -> Callable[[], None]:
        """One call running :attr:`forward` and, when :attr:`uses_session`, the session."""
        forward, session_run = self.forward, self.session_run
        if forward is None:
            return session_run
        if not self.uses_session:
            return forward

        def both() -> None:
            forward()
            session_run()

        return both

    @classmethod
    def from_dir(cls, models_dir: str | Path, feature_names: Sequence[str] | None = None, *,
                 technical: TechnicalConfig | None = None, signer: Signer | None = None,
                 inference: str = ModelConfig.inference) -> FusedEnsemble:
        """Load and fuse every ``<name>.json`` + ``<name>.onnx`` pair in ``models_dir``.

        Args:
            models_dir: Folder written by ``python -m l2fast.export``.
            feature_names: Names of the shared feature vector's columns; None (the usual
                case): :func:`l2fast.technical.state.feature_names` of ``technical`` and the
                members' stockstats features (:func:`member_extras`), the vector
                ``TechnicalState(technical, extras)`` writes. Give them only for another layout.
            technical: The technical config the members' feature names refer to (the
                defaults if None); a manifest without ``lookback`` gets
                :func:`~l2fast.models.loading.default_lookback` under it.
            signer: The model key's signer: every manifest must be signed with it
                (:func:`~l2fast.models.loading.load_model`); None: signatures are not read.
            inference: As the constructor's.

        Raises:
            ModelLoadError: Missing folder, no manifests, an ONNX file without manifest,
                anything :func:`~l2fast.models.loading.load_model` rejects (SHA-256 mismatch...),
                an unknown feature name, or a fused graph onnxruntime cannot load.
        """
        folder = Path(models_dir)
        if not folder.is_dir():
            raise ModelLoadError("not a directory", folder)
        orphans = [p.name for p in sorted(folder.glob("*.onnx")) if not p.with_suffix(".json").exists()]
        if orphans:
            raise ModelLoadError(f"ONNX files without a manifest beside them: {orphans}", folder)
        manifests = sorted(folder.glob("*.json"))
        if not manifests:
            raise ModelLoadError("no exported models (<name>.json + <name>.onnx)", folder)
        members = [load_model(p, technical=technical, signer=signer) for p in manifests]
        if feature_names is None:
            feature_names = technical_feature_names(technical if technical is not None else TechnicalConfig(),
                                                    member_extras(members))
        return cls(members, feature_names, inference=inference)

    def run(self, features_row: np.ndarray) -> dict[str, np.ndarray]:
        """Run every member on one feature vector.

        The returned dict and its arrays are this object's bound output buffers: they
        are overwritten by the next call (copy what must outlive it), and calls must not
        overlap (one thread per ensemble).

        Args:
            features_row: The shared feature vector, shape ``[F]`` (float64, as the
                technical core writes it; converted to float32).

        Returns:
            ``{"<name>/action": int64 [1] (or float32 [1, d]), "<name>/probs" or
            "<name>/q_values": float32 [1, n], ...}``.

        Raises:
            InvalidInputError: The row does not hold exactly one value per feature.
        """
        if np.shape(features_row) != self.input_row.shape[1:]:
            raise InvalidInputError(
                f"features_row: shape {np.shape(features_row)}, expected ({self.input_row.shape[1]},)"
            )
        self.input_row[0] = features_row
        # No RunOptions argument: with onnxruntime 1.32 passing any RunOptions object,
        # even a default one, costs ~20 us per call here (measured), three times the graph.
        self.run_bound()
        return self._outputs

    def describe_paths(self) -> str:
        """One line per member: its path (compiled at which level, or onnxruntime and why)."""
        level = self.compiled.level_name if self.compiled is not None else None
        return "; ".join(f"{p.name}: compiled ({level}, checked on {p.rows} rows)" if p.path == "compiled"
                         else f"{p.name}: onnxruntime ({p.reason})" for p in self.paths)

    def __repr__(self) -> str:
        compiled = sum(p.path == "compiled" for p in self.paths)
        return (f"FusedEnsemble({list(self.names)}, {len(self.feature_names)} features, "
                f"per bar: {self.inference}, compiled forward verified for {compiled}/{len(self.names)})")
