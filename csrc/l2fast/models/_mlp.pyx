"""Compiled batch-1 forward of plain-MLP ensemble members (see _mlp.pxd for the contract).

:class:`MlpForward` is built once at load from per-member plans (plain arrays, made by
:mod:`l2fast.models.compiled` from the members' ONNX initializers): every weight, constant
and scratch buffer is copied into one 64-byte aligned block, so a forward allocates
nothing, touches one contiguous range and holds no Python object. It reads the shared
float32 row it was given and writes each member's outputs into the arrays it was given
(the ensemble's bound output buffers).

Levels (``LEVELS``): ``"baseline"`` (portable C, SSE2 on x86-64), ``"avx2"`` (AVX2 + FMA),
``"avx512"`` (AVX-512F). :func:`best_level` says what this CPU supports; a level above it
is refused, since its instructions would fault.
"""

cdef extern from "l2fast/models/_mlp_kernels.h" nogil:
    int L2F_ACT_IDENTITY, L2F_ACT_TANH, L2F_ACT_RELU, L2F_ACT_SIGMOID
    int L2F_LEVEL_BASELINE, L2F_LEVEL_AVX2, L2F_LEVEL_AVX512
    ctypedef void (*l2f_tanh_fn)(float*, int) noexcept nogil
    int l2f_mlp_best_level(int cap)
    l2f_dense_fn l2f_dense_for(int level)
    l2f_tanh_fn l2f_tanh_for(int level)

from libc.math cimport expf
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc, calloc
from libc.string cimport memcpy, memset

import numpy as np

from l2fast.errors import InvalidInputError

LEVELS = ("baseline", "avx2", "avx512")
MAX_LAYERS = MLP_MAX_LAYERS
MAX_PREFIX = MLP_MAX_PREFIX
MAX_CLIPS = MLP_MAX_CLIPS
ACTIVATIONS = {"Identity": L2F_ACT_IDENTITY, "Tanh": L2F_ACT_TANH, "Relu": L2F_ACT_RELU,
               "Sigmoid": L2F_ACT_SIGMOID}


def best_level() -> str:
    """The widest level this CPU runs."""
    return LEVELS[l2f_mlp_best_level(-1)]


def _level_index(level):
    if level not in LEVELS:
        raise InvalidInputError(f"level={level!r}: expected one of {LEVELS}")
    k = LEVELS.index(level)
    if k > l2f_mlp_best_level(-1):
        raise InvalidInputError(f"level={level!r}: this CPU supports up to {best_level()!r}")
    return k


def tanh_approx(x, level="baseline"):
    """The kernels' tanh of a float32 array (a copy), at ``level``: for the error tests."""
    cdef int k = _level_index(level)
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    n = a.size
    out = np.zeros((n + 15) // 16 * 16, dtype=np.float32)
    out[:n] = a
    cdef float[::1] v = out
    if n:
        l2f_tanh_for(k)(&v[0], <int>out.size)
    return out[:n]


cdef inline size_t _pad64(size_t n) noexcept nogil:
    return (n + 63) & ~(<size_t>63)


cdef uintptr_t _place(char** cursor, a) except 0:
    """Copy array ``a``'s bytes to ``*cursor`` (then moved past them, 64-byte aligned)."""
    cdef const unsigned char[::1] src = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    cdef char* dst = cursor[0]
    if src.shape[0]:
        memcpy(dst, &src[0], src.shape[0])
    cursor[0] += _pad64(src.shape[0])
    return <uintptr_t>dst


cdef class MlpForward:
    """Every plain-MLP member's forward, batch 1, float32, one call.

    Args:
        row: The shared input, float32 C-contiguous ``[1, F]`` (read by every call).
        plans: Per member, an object with ``columns`` (int64 ``[n]``), ``prefix``
            (``(MlpPrefixOp, float64 [n] or None)`` steps), ``layers`` (``(W float32
            [out, in], b float32 [out], activation name)``), ``head`` (:class:`MlpHead`),
            ``unscale`` (None or ``(one, half, range [d], low [d])``, float32), ``clips``
            (``(low [d], high [d])`` float32 pairs, applied in order), ``action`` (the
            output array: int64 ``[1]`` or float32 ``[1, d]``) and ``scores`` (float32
            ``[1, n_out]`` or None for a box head).
        level: One of :data:`LEVELS`, at most :func:`best_level`.

    Raises:
        InvalidInputError: A plan whose shapes, dtypes or sizes do not fit, or a level
            this CPU does not run.
    """

    def __cinit__(self, *args, **kwargs):
        self._members = NULL
        self._arena = NULL

    def __dealloc__(self):
        free(self._members)
        free(self._arena)

    def __init__(self, row, plans, level):
        cdef int k = _level_index(level)
        cdef float[:, ::1] row_view
        if (not isinstance(row, np.ndarray) or row.dtype != np.float32 or row.ndim != 2 or row.shape[0] != 1
                or not row.flags.c_contiguous):
            raise InvalidInputError("row: expected a C-contiguous float32 array [1, F]")
        row_view = row
        plans = list(plans)
        if not plans:
            raise InvalidInputError("plans: no member")
        n_features = row.shape[1]
        keep = [row]
        # First pass: check every plan and size the arena.
        size = 0
        widest = 0
        checked = []
        for p in plans:
            cols = np.ascontiguousarray(p.columns, dtype=np.int64)
            n_in = cols.size
            if cols.ndim != 1 or n_in == 0 or cols.min() < 0 or cols.max() >= n_features:
                raise InvalidInputError(f"columns: expected indices into the {n_features} features")
            if len(p.prefix) > MLP_MAX_PREFIX or not 1 <= len(p.layers) <= MLP_MAX_LAYERS:
                raise InvalidInputError(f"at most {MLP_MAX_PREFIX} prefix steps and 1..{MLP_MAX_LAYERS} layers")
            prefix = []
            for op, const in p.prefix:
                op = int(op)
                if op == PRE_ROUND_F32:
                    prefix.append((op, None))
                    continue
                if op not in (PRE_SUB, PRE_DIV, PRE_MUL, PRE_ADD):
                    raise InvalidInputError(f"prefix op {op}: unknown")
                c = np.ascontiguousarray(const, dtype=np.float64)
                if c.shape != (n_in,):
                    raise InvalidInputError(f"prefix constant of shape {c.shape}, expected ({n_in},)")
                prefix.append((op, c))
                size += _pad64(n_in * 8)
            layers = []
            width = n_in
            widest = max(widest, n_in)
            for w, b, act in p.layers:
                w = np.asarray(w, dtype=np.float32)
                b = np.asarray(b, dtype=np.float32)
                if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],) or act not in ACTIVATIONS:
                    raise InvalidInputError(f"layer W {w.shape}, b {b.shape}, {act!r} does not follow a "
                                            f"width of {width}")
                out_pad = (w.shape[0] + 15) // 16 * 16
                wt = np.zeros((width, out_pad), dtype=np.float32)
                wt[:, :w.shape[0]] = w.T
                bp = np.zeros(out_pad, dtype=np.float32)
                bp[:w.shape[0]] = b
                layers.append((wt, bp, int(w.shape[0]), ACTIVATIONS[act]))
                size += _pad64(wt.nbytes) + _pad64(bp.nbytes)
                width = w.shape[0]
                widest = max(widest, out_pad)
            n_out = width
            head = int(p.head)
            unscale = None
            clips = []
            if head == HEAD_BOX:
                action = p.action
                if action.dtype != np.float32 or action.shape != (1, n_out) or not action.flags.c_contiguous:
                    raise InvalidInputError(f"action: expected float32 [1, {n_out}]")
                if p.unscale is not None:
                    one, half, rng, low = p.unscale
                    unscale = (float(one), float(half), np.ascontiguousarray(rng, dtype=np.float32),
                               np.ascontiguousarray(low, dtype=np.float32))
                    if unscale[2].shape != (n_out,) or unscale[3].shape != (n_out,):
                        raise InvalidInputError(f"unscale: expected [{n_out}] range and low")
                    size += 2 * _pad64(n_out * 4)
                if len(p.clips) > MLP_MAX_CLIPS:
                    raise InvalidInputError(f"at most {MLP_MAX_CLIPS} clips")
                for lo, hi in p.clips:
                    lo = np.ascontiguousarray(lo, dtype=np.float32).reshape(-1)
                    hi = np.ascontiguousarray(hi, dtype=np.float32).reshape(-1)
                    if lo.shape != (n_out,) or hi.shape != (n_out,):
                        raise InvalidInputError(f"clip: expected [{n_out}] bounds")
                    clips.append((lo, hi))
                    size += 2 * _pad64(n_out * 4)
            elif head in (HEAD_CATEGORICAL, HEAD_ARGMAX):
                action, scores = p.action, p.scores
                if action.dtype != np.int64 or action.shape != (1,):
                    raise InvalidInputError("action: expected int64 [1]")
                if (scores is None or scores.dtype != np.float32 or scores.shape != (1, n_out)
                        or not scores.flags.c_contiguous):
                    raise InvalidInputError(f"scores: expected float32 [1, {n_out}]")
                keep.append(scores)
            else:
                raise InvalidInputError(f"head {head}: unknown")
            keep.append(action)
            size += _pad64(n_in * 8)
            checked.append((cols, prefix, layers, head, n_out, unscale, clips, p.action,
                            None if head == HEAD_BOX else p.scores))
        size += _pad64(widest * 8) + 2 * _pad64(widest * 4)
        self._members = <MlpMember*>calloc(len(checked), sizeof(MlpMember))
        self._arena = calloc(size + 64, 1)
        if self._members == NULL or self._arena == NULL:
            raise MemoryError()
        cdef char* cursor = <char*>((<uintptr_t>self._arena + 63) & ~(<uintptr_t>63))

        cdef MlpMember* m
        cdef int64_t[::1] ints
        cdef float[:, ::1] floats
        cdef int j
        # Weights first, member by member in call order: one forward streams through them.
        for i, (cols, prefix, layers, head, n_out, unscale, clips, action, scores) in enumerate(checked):
            m = &self._members[i]
            m.n_in = cols.size
            m.columns = <const int64_t*>_place(&cursor, cols)
            m.n_prefix = len(prefix)
            for j, (op, c) in enumerate(prefix):
                m.prefix_op[j] = op
                if c is not None:
                    m.prefix_const[j] = <const double*>_place(&cursor, c)
            m.n_layers = len(layers)
            for j, (wt, bp, n, act) in enumerate(layers):
                m.layers[j].n_in = wt.shape[0]
                m.layers[j].n_out = n
                m.layers[j].out_pad = wt.shape[1]
                m.layers[j].act = act
                m.layers[j].wt = <const float*>_place(&cursor, wt)
                m.layers[j].b = <const float*>_place(&cursor, bp)
            m.head = head
            m.n_out = n_out
            m.unscale = unscale is not None
            if unscale is not None:
                m.one, m.half = unscale[0], unscale[1]
                m.range = <const float*>_place(&cursor, unscale[2])
                m.low = <const float*>_place(&cursor, unscale[3])
            m.n_clips = len(clips)
            for j, (lo, hi) in enumerate(clips):
                m.clip_low[j] = <const float*>_place(&cursor, lo)
                m.clip_high[j] = <const float*>_place(&cursor, hi)
            if head == HEAD_BOX:
                floats = action
                m.box_action = &floats[0, 0]
            else:
                ints = action
                m.action = &ints[0]
                floats = scores
                m.scores = &floats[0, 0]
        self._pre = <double*>cursor
        cursor += _pad64(widest * 8)
        self._h0 = <float*>cursor
        cursor += _pad64(widest * 4)
        self._h1 = <float*>cursor
        self._n_members = len(checked)
        self._row = &row_view[0, 0]
        self._dense = l2f_dense_for(k)
        self.level = k
        self._keep = tuple(keep)

    @property
    def level_name(self) -> str:
        """The level this forward runs (one of :data:`LEVELS`)."""
        return LEVELS[self.level]

    cdef void forward(self) noexcept nogil:
        cdef int i
        for i in range(self._n_members):
            _member_forward(&self._members[i], self._row, self._pre, self._h0, self._h1, self._dense)

    cdef void forward_some(self, unsigned int mask) noexcept nogil:
        cdef int i
        for i in range(min(self._n_members, 32)):
            if mask >> i & 1:
                _member_forward(&self._members[i], self._row, self._pre, self._h0, self._h1, self._dense)

    def run_some(self, members):
        """Run only the members at the indices ``members`` (plan order); the others' output
        arrays keep their values."""
        cdef unsigned int mask = 0
        for k in members:
            if not 0 <= k < min(self._n_members, 32):
                raise IndexError(f"member index {k!r}: the forward has {self._n_members} members")
            mask |= 1u << k
        self.forward_some(mask)

    def __call__(self):
        """Run every member on the row into its output arrays (no argument, no result)."""
        # The GIL is kept: releasing and taking it back would cost a tenth of the forward.
        self.forward()

    def __repr__(self):
        return f"MlpForward({self._n_members} members, level={LEVELS[self.level]!r})"


cdef inline void _member_forward(const MlpMember* m, const float* row, double* pre, float* h0, float* h1,
                                 l2f_dense_fn dense) noexcept nogil:
    cdef int i, j, p, n = m.n_in, best
    cdef const double* c
    cdef float* x = h0
    cdef float* y = h1
    cdef float* t
    cdef float mx, s, v, inv
    for i in range(n):
        pre[i] = row[m.columns[i]]
    for p in range(m.n_prefix):
        c = m.prefix_const[p]
        if m.prefix_op[p] == PRE_SUB:
            for i in range(n):
                pre[i] = pre[i] - c[i]
        elif m.prefix_op[p] == PRE_DIV:
            for i in range(n):
                pre[i] = pre[i] / c[i]
        elif m.prefix_op[p] == PRE_MUL:
            for i in range(n):
                pre[i] = pre[i] * c[i]
        elif m.prefix_op[p] == PRE_ADD:
            for i in range(n):
                pre[i] = pre[i] + c[i]
        else:
            for i in range(n):
                pre[i] = <float>pre[i]
    for i in range(n):
        x[i] = <float>pre[i]
    for j in range(m.n_layers):
        dense(x, m.layers[j].n_in, m.layers[j].wt, m.layers[j].b, m.layers[j].out_pad, m.layers[j].act, y)
        t = x
        x = y
        y = t
    n = m.n_out
    if m.head == HEAD_BOX:
        for i in range(n):
            v = x[i]
            if m.unscale:
                # Each step rounded to float32 as the graph's Add, Mul, Mul, Add (no contraction).
                v = v + m.one
                v = v * m.half
                v = v * m.range[i]
                v = m.low[i] + v
            for p in range(m.n_clips):
                v = v if v < m.clip_high[p][i] else m.clip_high[p][i]
                v = v if v > m.clip_low[p][i] else m.clip_low[p][i]
            m.box_action[i] = v
        return
    if m.head == HEAD_CATEGORICAL:
        # One pass: probs = exp(logits - max) / sum, which the graph's Softmax(logits -
        # ReduceLogSumExp(logits)) equals up to float32 rounding (the load-time check bounds it).
        mx = x[0]
        for i in range(1, n):
            mx = x[i] if x[i] > mx else mx
        s = 0.0
        for i in range(n):
            y[i] = expf(x[i] - mx)
            s += y[i]
        inv = 1.0 / s
        for i in range(n):
            m.scores[i] = y[i] * inv
    else:
        for i in range(n):
            m.scores[i] = x[i]
    # The first maximum, as ArgMax (and SB3's predict) pick.
    best = 0
    for i in range(1, n):
        if m.scores[i] > m.scores[best]:
            best = i
    m.action[0] = best
