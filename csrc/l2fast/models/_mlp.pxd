# Contract of the compiled MLP forward: the ensemble's plain-MLP members run batch 1 in
# float32 from their ONNX initializers, one member after the other, no allocation per call.
#
# A member is what l2fast.models.stacking.mlp_chain recognises in its graph:
#   gather its columns of the shared float32 row
#   -> the element-wise preprocessing (the exporter's scaler: Cast(double), Sub, Div,
#      Cast(float)), run in float64 with a rounding to float32 wherever the graph's
#      working type is float32, so the network's input is bit for bit the graph's
#   -> dense layers y = act(W x + b) (float32, weights transposed and padded to 16 outputs)
#   -> one head: categorical (probs = exp(logits - max) / sum, the graph's softmax of the
#      normalised logits up to float32 rounding; action = first maximum of probs), argmax (q_values = logits, action = first maximum), or box
#      (optional float32 unscale low + ((a + 1) * 0.5) * range, then each clip in order:
#      min with high, max with low).
# The dense layers and tanh have three levels (_mlp_kernels.h), chosen once at load.

from libc.stdint cimport int64_t

# The kernels' header (_mlp_kernels.h: the three levels' dense layers and tanh, and the
# ACT_*/LEVEL_* numbers) is included by _mlp.pyx alone: a module cimporting MlpForward
# calls forward() and does not compile the kernels again.
ctypedef void (*l2f_dense_fn)(const float*, int, const float*, const float*, int, int, float*) noexcept nogil

cdef enum:
    MLP_MAX_LAYERS = 8
    MLP_MAX_PREFIX = 8
    MLP_MAX_CLIPS = 2

cpdef enum MlpHead:
    HEAD_CATEGORICAL = 0        # outputs action (int64) and probs
    HEAD_ARGMAX = 1             # outputs action (int64) and q_values
    HEAD_BOX = 2                # outputs action (float32 [d])

cpdef enum MlpPrefixOp:        # one element-wise step before the first layer, in float64
    PRE_SUB = 0
    PRE_DIV = 1
    PRE_MUL = 2
    PRE_ADD = 3
    PRE_ROUND_F32 = 4           # round to float32 (a Cast to float, or a float32 step's result)

ctypedef struct MlpLayer:
    int n_in
    int n_out
    int out_pad                 # n_out rounded up to a multiple of 16
    int act                     # L2F_ACT_* of _mlp_kernels.h
    const float* wt             # [n_in][out_pad], zero past n_out
    const float* b              # [out_pad], zero past n_out

ctypedef struct MlpMember:
    int n_in
    const int64_t* columns      # [n_in] into the shared row
    int n_prefix
    int prefix_op[MLP_MAX_PREFIX]
    const double* prefix_const[MLP_MAX_PREFIX]   # [n_in] each (NULL for PRE_ROUND_F32)
    int n_layers
    MlpLayer layers[MLP_MAX_LAYERS]
    int head
    int n_out
    bint unscale
    float one
    float half
    const float* range          # [n_out]
    const float* low            # [n_out]
    int n_clips
    const float* clip_low[MLP_MAX_CLIPS]
    const float* clip_high[MLP_MAX_CLIPS]
    int64_t* action             # discrete heads: [1]
    float* scores               # discrete heads: [n_out]
    float* box_action           # box head: [n_out]

cdef class MlpForward:
    cdef MlpMember* _members
    cdef int _n_members
    cdef void* _arena           # every weight, constant and scratch buffer, one 64-byte aligned block
    cdef double* _pre           # scratch: the preprocessed input, float64
    cdef float* _h0             # scratch: layer input/output, ping-pong
    cdef float* _h1
    cdef const float* _row
    cdef l2f_dense_fn _dense
    cdef readonly int level
    cdef tuple _keep            # the row and output arrays the pointers point into

    cdef void forward(self) noexcept nogil
    # Only the members whose bit is set in ``mask`` (bit k: member k, in plan order).
    cdef void forward_some(self, unsigned int mask) noexcept nogil
