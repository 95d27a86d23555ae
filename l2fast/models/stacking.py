"""Same-shape MLP agents stacked into one wider MLP: one Gemm per layer for the whole ensemble.

A fused graph that keeps every member's own nodes runs about 14 small operators per member;
onnxruntime's fixed cost per operator, not the arithmetic, dominates at batch 1. When
every member is the same kind of network (what ``python -m l2fast.export`` writes for
SB3's MLP policies with a categorical head), the members can share the operators instead:

- one ``Gather`` of all members' columns side by side (a column used by two members is
  gathered twice);
- the element-wise preprocessing (``Cast``, ``Sub``, ``Div``, ``Mul``, ``Add`` with
  per-column constants: the folded observation scaling) once, on the concatenated
  constants;
- each layer as ONE ``Gemm`` whose weight is the block-diagonal of the members' weights
  (on finite inputs the zero blocks contribute exact zeros; a non-finite feature makes
  0 x inf = NaN in every member's block, so one bad feature turns all members NaN, where
  each member alone, and the compiled forward, confine it to the members reading it) and
  whose bias is their concatenation, then the shared activation;
- the categorical head (``ReduceLogSumExp``, ``Sub``, ``Softmax``, ``ArgMax`` over the
  last axis) once, on the logits reshaped to ``[members, actions]``.

Member ``k`` reads row ``k`` of the outputs ``probs`` ``[M, A]`` and ``action`` ``[M]``.
:func:`mlp_chain` recognises the pattern on a member's graph (anything else returns None,
and the ensemble keeps the generic per-member fusion); :func:`stack` builds the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_ELEMENTWISE = ("Sub", "Div", "Mul", "Add")
_ACTIVATIONS = ("Tanh", "Relu", "Sigmoid")
STACKED_PROBS = "stacked/probs"
STACKED_ACTION = "stacked/action"


@dataclass(frozen=True)
class MlpChain:
    """One member recognised as preprocessing -> Gemm/activation layers -> head.

    Attributes:
        prefix: Element-wise steps in order: ``("Cast", to)`` or ``(op, constant)`` with the
            constant expanded to one value per input column.
        layers: ``(W [out, in], B [out], activation or None)`` per Gemm; only the last may
            have none (a Box head's may end in ``Tanh``).
        n_actions: Width of the last layer (the logits, Q-values or Box action).
        opset: The member's default-domain opset.
        head: ``"categorical"`` (ReduceLogSumExp, Sub, Softmax, ArgMax: ``action`` and
            ``probs``), ``"argmax"`` (DQN: Identity to ``q_values``, ArgMax: ``action``) or
            ``"box"`` (float32 unscale if any, then Min/Max clip: ``action``).
        unscale: Box head: ``(one, half, range [d], low [d])`` of ``low + ((x + one) * half)
            * range``, or None when the action is not unscaled.
        clips: Box head: ``(low [d], high [d])`` of its clip.
    """

    prefix: tuple[tuple[str, Any], ...]
    layers: tuple[tuple[np.ndarray, np.ndarray, str | None], ...]
    n_actions: int
    opset: int
    head: str = "categorical"
    unscale: tuple[Any, ...] | None = None
    clips: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def signature(self) -> tuple:
        """What must agree between members for them to stack."""
        steps = tuple((op, arg if op == "Cast" else arg.dtype.str) for op, arg in self.prefix)
        return steps, tuple(act for _, _, act in self.layers), self.n_actions, self.opset, self.head


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def mlp_chain(proto: Any) -> MlpChain | None:
    """The member's graph as an :class:`MlpChain`, or None if it is anything else.

    The one reading of a plain-MLP member's weights: :func:`stack` builds the stacked graph
    from it and :mod:`l2fast.models.compiled` the compiled forward.
    """
    from onnx import numpy_helper

    g = proto.graph
    opset = next((i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")), None)
    if opset is None or len(g.input) != 1 or not 1 <= len(g.output) <= 2 or proto.functions:
        return None
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    n_in = g.input[0].type.tensor_type.shape.dim[-1].dim_value
    nodes, k, x = list(g.node), 0, g.input[0].name
    prefix: list[tuple[str, Any]] = []
    while k < len(nodes) and nodes[k].op_type in ("Cast", *_ELEMENTWISE) and nodes[k].input[0] == x:
        node = nodes[k]
        if node.op_type == "Cast":
            prefix.append(("Cast", _attrs(node)["to"]))
        else:
            c = consts.get(node.input[1])
            if c is None or c.shape not in ((), (1,), (n_in,)):
                return None
            prefix.append((node.op_type, np.broadcast_to(c, (n_in,)).copy()))
        x, k = node.output[0], k + 1
    layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
    while k < len(nodes) and nodes[k].op_type == "Gemm":
        node = nodes[k]
        a = _attrs(node)
        w, b = consts.get(node.input[1]), consts.get(node.input[2]) if len(node.input) > 2 else None
        if (node.input[0] != x or w is None or b is None or a.get("transB") != 1 or a.get("transA", 0)
                or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or w.ndim != 2
                or b.shape != (w.shape[0],) or w.dtype != np.float32 or b.dtype != np.float32):
            return None
        x, k = node.output[0], k + 1
        act = None
        if k < len(nodes) and nodes[k].op_type in _ACTIVATIONS and nodes[k].input[0] == x:
            act, x, k = nodes[k].op_type, nodes[k].output[0], k + 1
        layers.append((w, b, act))
    if not layers or any(act is None for _, _, act in layers[:-1]):
        return None
    outputs = sorted(o.name for o in g.output)
    tail = nodes[k:]
    if [n.op_type for n in tail] == ["ReduceLogSumExp", "Sub", "Softmax", "ArgMax"] and layers[-1][2] is None:
        ok = _categorical_head(tail, x, consts) and outputs == ["action", "probs"]
        head = "categorical"
    elif [n.op_type for n in tail] == ["Identity", "ArgMax"] and layers[-1][2] is None:
        ident, arg = tail
        ok = (outputs == ["action", "q_values"] and ident.input[0] == x and ident.output[0] == "q_values"
              and arg.input[0] == x and _attrs(arg).get("axis") == 1 and _attrs(arg).get("keepdims") == 0
              and not _attrs(arg).get("select_last_index", 0) and arg.output[0] == "action")
        head = "argmax"
    else:
        box = _box_head(tail, x, consts, int(layers[-1][0].shape[0]))
        if box is None or outputs != ["action"]:
            return None
        return MlpChain(tuple(prefix), tuple(layers), int(layers[-1][0].shape[0]), opset, "box", *box)
    if not ok:
        return None
    return MlpChain(tuple(prefix), tuple(layers), int(layers[-1][0].shape[0]), opset, head)


def _categorical_head(tail: Sequence[Any], x: str, consts: dict[str, np.ndarray]) -> bool:
    """Whether ReduceLogSumExp, Sub, Softmax, ArgMax on ``x`` are the exporter's categorical head."""
    lse, sub, soft, arg = tail
    axes = _attrs(lse).get("axes")
    if axes is None and len(lse.input) > 1 and lse.input[1] in consts:
        axes = consts[lse.input[1]].tolist()
    return not (lse.input[0] != x or list(axes or []) != [-1] or _attrs(lse).get("keepdims", 1) != 1
                or list(sub.input) != [x, lse.output[0]] or soft.input[0] != sub.output[0]
                or _attrs(soft).get("axis", -1) != -1 or arg.input[0] != soft.output[0]
                or _attrs(arg).get("axis") != 1 or _attrs(arg).get("keepdims") != 0
                or _attrs(arg).get("select_last_index", 0) or soft.output[0] != "probs"
                or arg.output[0] != "action")


def _box_head(tail: Sequence[Any], x: str, consts: dict[str, np.ndarray],
              dim: int) -> tuple[tuple[Any, ...] | None, tuple[tuple[np.ndarray, np.ndarray], ...]] | None:
    """``(unscale, clips)`` of the exporter's float32 Box head on ``x``, or None.

    The head is an optional float32 unscale ``low + ((x + one) * half) * range`` (Add, Mul,
    Mul, Add) and a clip (Min with high, then Max with low) writing ``action``.
    """
    def const(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        c = consts.get(name)
        if c is None or c.dtype != np.float32 or (c.size != 1 and c.shape != shape):
            return None
        return np.full(shape, c.reshape(-1)[0], np.float32) if c.size == 1 else c.copy()

    unscale = None
    if [n.op_type for n in tail] == ["Add", "Mul", "Mul", "Add", "Min", "Max"]:
        add1, mul1, mul2, add2 = tail[:4]
        one, half = const(add1.input[1], ()), const(mul1.input[1], ())
        rng, low = const(mul2.input[1], (dim,)), const(add2.input[0], (dim,))
        if (add1.input[0] != x or mul1.input[0] != add1.output[0] or mul2.input[0] != mul1.output[0]
                or add2.input[1] != mul2.output[0] or one is None or half is None or rng is None or low is None):
            return None
        unscale = (float(one), float(half), rng, low)
        x, tail = add2.output[0], tail[4:]
    if [n.op_type for n in tail] != ["Min", "Max"]:
        return None
    mn, mx = tail
    high, low = const(mn.input[1], (dim,)), const(mx.input[1], (dim,))
    if (len(mn.input) != 2 or len(mx.input) != 2 or mn.input[0] != x or mx.input[0] != mn.output[0]
            or high is None or low is None or mx.output[0] != "action"):
        return None
    return unscale, ((low, high),)


def _block_diagonal(blocks: Sequence[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)), np.float32)
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def stack(chains: Sequence[MlpChain], columns: Sequence[np.ndarray], n_features: int,
          input_name: str, ir_version: int) -> bytes | None:
    """The stacked graph of ``chains`` (one per member, in output-row order), or None when
    their signatures differ or their head is not categorical.

    Args:
        chains: The members' chains.
        columns: Per member, its columns of the shared feature vector.
        n_features: Width of the shared input ``[1, n_features]`` (float32).
        input_name: Name of the shared input.
        ir_version: ONNX IR version to write.
    """
    from onnx import TensorProto, helper, numpy_helper

    if len({c.signature() for c in chains}) != 1 or chains[0].head != "categorical":
        return None
    first, m = chains[0], len(chains)
    inits = [numpy_helper.from_array(np.concatenate(columns).astype(np.int64), "stacked/columns")]
    nodes = [helper.make_node("Gather", [input_name, "stacked/columns"], ["stacked/x0"], axis=1)]
    x = "stacked/x0"
    for k, (op, arg) in enumerate(first.prefix):
        out = f"stacked/pre{k}"
        if op == "Cast":
            nodes.append(helper.make_node("Cast", [x], [out], to=arg))
        else:
            const = f"stacked/pre{k}:c"
            inits.append(numpy_helper.from_array(np.concatenate([c.prefix[k][1] for c in chains]), const))
            nodes.append(helper.make_node(op, [x, const], [out]))
        x = out
    for k, (_, _, act) in enumerate(first.layers):
        w, b = f"stacked/W{k}", f"stacked/B{k}"
        inits.append(numpy_helper.from_array(_block_diagonal([c.layers[k][0] for c in chains]), w))
        inits.append(numpy_helper.from_array(np.concatenate([c.layers[k][1] for c in chains]), b))
        nodes.append(helper.make_node("Gemm", [x, w, b], [f"stacked/h{k}"], transB=1))
        x = f"stacked/h{k}"
        if act is not None:
            nodes.append(helper.make_node(act, [x], [f"stacked/a{k}"]))
            x = f"stacked/a{k}"
    inits.append(numpy_helper.from_array(np.array([m, first.n_actions], np.int64), "stacked/shape"))
    nodes.append(helper.make_node("Reshape", [x, "stacked/shape"], ["stacked/logits"]))
    if first.opset >= 18:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "stacked/axes"))
        nodes.append(helper.make_node("ReduceLogSumExp", ["stacked/logits", "stacked/axes"], ["stacked/lse"],
                                      keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceLogSumExp", ["stacked/logits"], ["stacked/lse"], axes=[-1],
                                      keepdims=1))
    nodes += [helper.make_node("Sub", ["stacked/logits", "stacked/lse"], ["stacked/norm"]),
              helper.make_node("Softmax", ["stacked/norm"], [STACKED_PROBS], axis=-1),
              helper.make_node("ArgMax", [STACKED_PROBS], [STACKED_ACTION], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "l2fast_stacked_ensemble",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, n_features])],
        [helper.make_tensor_value_info(STACKED_PROBS, TensorProto.FLOAT, [m, first.n_actions]),
         helper.make_tensor_value_info(STACKED_ACTION, TensorProto.INT64, [m])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", first.opset)],
                              producer_name="l2fast.models.stacking")
    model.ir_version = ir_version
    return model.SerializeToString()
