/* Batch-1 float32 dense layers for l2fast.models._mlp, with runtime CPU dispatch.
 *
 * Three levels of the same two operations (a dense layer y = act(W x + b) and the vector
 * tanh), chosen once at load by the caller:
 *   0  portable C (SSE2 on x86-64 through the compiler's auto-vectorisation, no FMA),
 *   1  AVX2 + FMA intrinsics in functions compiled with target("avx2,fma"),
 *   2  AVX-512F intrinsics in functions compiled with target("avx512f").
 * The module itself is compiled for the baseline, so the wheel runs on any x86-64; the
 * wider functions are only called after __builtin_cpu_supports said the CPU has them.
 *
 * Weights are stored transposed, Wt[in][out_pad] with out_pad a multiple of 16 (the pad
 * columns and bias entries are zero), so that one input value broadcast against a row of
 * Wt updates a block of outputs held in registers: the accumulators never leave the
 * registers while the inputs stream by.
 *
 * tanh is onnxruntime's (MLAS) rational approximation, as its own Tanh kernel computes
 * it: x clamped to [-9, 9], then x * P(x^2) / Q(x^2) with P of degree 6 and Q of degree 3
 * in x^2 (the Eigen/MLAS coefficients), then clamped to [-1, 1] (MLAS is not, and returns
 * 1 + 2^-23 near the clamp). Measured against the float64 tanh on 2,000,001 points of
 * [-12, 12] (tests/test_mlp.py): max |error| 3.4e-7 for the baseline (no FMA), 2.6e-7
 * with FMA; the test's bound is 3.5e-7.
 */
#ifndef L2F_MLP_KERNELS_H
#define L2F_MLP_KERNELS_H

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define L2F_MLP_X86 1
#else
#define L2F_MLP_X86 0
#endif

#define L2F_ACT_IDENTITY 0
#define L2F_ACT_TANH 1
#define L2F_ACT_RELU 2
#define L2F_ACT_SIGMOID 3

#define L2F_LEVEL_BASELINE 0
#define L2F_LEVEL_AVX2 1
#define L2F_LEVEL_AVX512 2

#define L2F_TANH_LO (-9.0f)
#define L2F_TANH_HI 9.0f
#define L2F_TANH_A13 (-2.76076847742355e-16f)
#define L2F_TANH_A11 2.00018790482477e-13f
#define L2F_TANH_A9 (-8.60467152213735e-11f)
#define L2F_TANH_A7 5.12229709037114e-08f
#define L2F_TANH_A5 1.48572235717979e-05f
#define L2F_TANH_A3 6.37261928875436e-04f
#define L2F_TANH_A1 4.89352455891786e-03f
#define L2F_TANH_B6 1.19825839466702e-06f
#define L2F_TANH_B4 1.18534705686654e-04f
#define L2F_TANH_B2 2.26843463243900e-03f
#define L2F_TANH_B0 4.89352518554385e-03f

/* ------------------------------------------------------------------ portable baseline */

static inline float l2f_tanh_scalar(float x) {
    float x2, p, q;
    x = x < L2F_TANH_LO ? L2F_TANH_LO : x;
    x = x > L2F_TANH_HI ? L2F_TANH_HI : x;
    x2 = x * x;
    p = L2F_TANH_A13;
    p = p * x2 + L2F_TANH_A11;
    p = p * x2 + L2F_TANH_A9;
    p = p * x2 + L2F_TANH_A7;
    p = p * x2 + L2F_TANH_A5;
    p = p * x2 + L2F_TANH_A3;
    p = p * x2 + L2F_TANH_A1;
    p = p * x;
    q = L2F_TANH_B6;
    q = q * x2 + L2F_TANH_B4;
    q = q * x2 + L2F_TANH_B2;
    q = q * x2 + L2F_TANH_B0;
    p = p / q;
    /* The rational exceeds 1 by a float32 step near the clamp: bring it back. */
    p = p > 1.0f ? 1.0f : p;
    return p < -1.0f ? -1.0f : p;
}

/* Element-wise activation over n floats (n a multiple of 16: the loops vectorise). */
static void l2f_activate_base(float* y, int n, int act) {
    int j;
    if (act == L2F_ACT_TANH) {
        for (j = 0; j < n; j++) y[j] = l2f_tanh_scalar(y[j]);
    } else if (act == L2F_ACT_SIGMOID) {
        for (j = 0; j < n; j++) y[j] = 0.5f + 0.5f * l2f_tanh_scalar(0.5f * y[j]);
    } else if (act == L2F_ACT_RELU) {
        for (j = 0; j < n; j++) y[j] = y[j] > 0.0f ? y[j] : 0.0f;
    }
}

static void l2f_dense_base(const float* x, int n_in, const float* wt, const float* b, int out_pad,
                           int act, float* y) {
    int j, i, k;
    for (j = 0; j < out_pad; j += 16) {
        float acc[16];
        for (k = 0; k < 16; k++) acc[k] = b[j + k];
        for (i = 0; i < n_in; i++) {
            const float xi = x[i];
            const float* w = wt + (int64_t)i * out_pad + j;
            for (k = 0; k < 16; k++) acc[k] += xi * w[k];
        }
        for (k = 0; k < 16; k++) y[j + k] = acc[k];
    }
    l2f_activate_base(y, out_pad, act);
}

static void l2f_tanh_base(float* y, int n) {
    int j;
    for (j = 0; j < n; j++) y[j] = l2f_tanh_scalar(y[j]);
}

#if L2F_MLP_X86
/* ------------------------------------------------------------------ AVX2 + FMA */

__attribute__((target("avx2,fma"))) static inline __m256 l2f_tanh_avx2(__m256 x) {
    __m256 x2, p, q;
    x = _mm256_max_ps(_mm256_set1_ps(L2F_TANH_LO), _mm256_min_ps(_mm256_set1_ps(L2F_TANH_HI), x));
    x2 = _mm256_mul_ps(x, x);
    p = _mm256_fmadd_ps(_mm256_set1_ps(L2F_TANH_A13), x2, _mm256_set1_ps(L2F_TANH_A11));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(L2F_TANH_A9));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(L2F_TANH_A7));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(L2F_TANH_A5));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(L2F_TANH_A3));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(L2F_TANH_A1));
    p = _mm256_mul_ps(p, x);
    q = _mm256_fmadd_ps(_mm256_set1_ps(L2F_TANH_B6), x2, _mm256_set1_ps(L2F_TANH_B4));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(L2F_TANH_B2));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(L2F_TANH_B0));
    p = _mm256_div_ps(p, q);
    return _mm256_max_ps(_mm256_set1_ps(-1.0f), _mm256_min_ps(_mm256_set1_ps(1.0f), p));
}

__attribute__((target("avx2,fma"))) static inline __m256 l2f_act_avx2(__m256 v, int act) {
    if (act == L2F_ACT_TANH) return l2f_tanh_avx2(v);
    if (act == L2F_ACT_RELU) return _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == L2F_ACT_SIGMOID) {
        const __m256 half = _mm256_set1_ps(0.5f);
        return _mm256_fmadd_ps(half, l2f_tanh_avx2(_mm256_mul_ps(half, v)), half);
    }
    return v;
}

/* 64 outputs in eight registers, then 16 at a time in two. */
__attribute__((target("avx2,fma"))) static void l2f_dense_avx2(const float* x, int n_in, const float* wt,
                                                              const float* b, int out_pad, int act, float* y) {
    int j = 0, i;
    for (; j + 64 <= out_pad; j += 64) {
        __m256 a0 = _mm256_loadu_ps(b + j), a1 = _mm256_loadu_ps(b + j + 8);
        __m256 a2 = _mm256_loadu_ps(b + j + 16), a3 = _mm256_loadu_ps(b + j + 24);
        __m256 a4 = _mm256_loadu_ps(b + j + 32), a5 = _mm256_loadu_ps(b + j + 40);
        __m256 a6 = _mm256_loadu_ps(b + j + 48), a7 = _mm256_loadu_ps(b + j + 56);
        for (i = 0; i < n_in; i++) {
            const __m256 xi = _mm256_broadcast_ss(x + i);
            const float* w = wt + (int64_t)i * out_pad + j;
            a0 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w), a0);
            a1 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 8), a1);
            a2 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 16), a2);
            a3 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 24), a3);
            a4 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 32), a4);
            a5 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 40), a5);
            a6 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 48), a6);
            a7 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 56), a7);
        }
        _mm256_storeu_ps(y + j, l2f_act_avx2(a0, act));
        _mm256_storeu_ps(y + j + 8, l2f_act_avx2(a1, act));
        _mm256_storeu_ps(y + j + 16, l2f_act_avx2(a2, act));
        _mm256_storeu_ps(y + j + 24, l2f_act_avx2(a3, act));
        _mm256_storeu_ps(y + j + 32, l2f_act_avx2(a4, act));
        _mm256_storeu_ps(y + j + 40, l2f_act_avx2(a5, act));
        _mm256_storeu_ps(y + j + 48, l2f_act_avx2(a6, act));
        _mm256_storeu_ps(y + j + 56, l2f_act_avx2(a7, act));
    }
    for (; j < out_pad; j += 16) {
        /* Two registers wide only: four sets of them over interleaved inputs, so that the
         * additions do not wait on each other (summed in a fixed order at the end). */
        __m256 a0 = _mm256_loadu_ps(b + j), a1 = _mm256_loadu_ps(b + j + 8);
        __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), d0 = _mm256_setzero_ps();
        __m256 d1 = _mm256_setzero_ps(), e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps();
        for (i = 0; i + 4 <= n_in; i += 4) {
            const float* w = wt + (int64_t)i * out_pad + j;
            const __m256 x0 = _mm256_broadcast_ss(x + i), x1 = _mm256_broadcast_ss(x + i + 1);
            const __m256 x2 = _mm256_broadcast_ss(x + i + 2), x3 = _mm256_broadcast_ss(x + i + 3);
            a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w), a0);
            a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + 8), a1);
            c0 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w + out_pad), c0);
            c1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w + out_pad + 8), c1);
            d0 = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w + 2 * out_pad), d0);
            d1 = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w + 2 * out_pad + 8), d1);
            e0 = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w + 3 * out_pad), e0);
            e1 = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w + 3 * out_pad + 8), e1);
        }
        for (; i < n_in; i++) {
            const __m256 xi = _mm256_broadcast_ss(x + i);
            const float* w = wt + (int64_t)i * out_pad + j;
            a0 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w), a0);
            a1 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(w + 8), a1);
        }
        a0 = _mm256_add_ps(_mm256_add_ps(a0, c0), _mm256_add_ps(d0, e0));
        a1 = _mm256_add_ps(_mm256_add_ps(a1, c1), _mm256_add_ps(d1, e1));
        _mm256_storeu_ps(y + j, l2f_act_avx2(a0, act));
        _mm256_storeu_ps(y + j + 8, l2f_act_avx2(a1, act));
    }
}

__attribute__((target("avx2,fma"))) static void l2f_tanh_avx2_n(float* y, int n) {
    int j;
    for (j = 0; j < n; j += 8) _mm256_storeu_ps(y + j, l2f_tanh_avx2(_mm256_loadu_ps(y + j)));
}

/* ------------------------------------------------------------------ AVX-512F */

__attribute__((target("avx512f"))) static inline __m512 l2f_tanh_avx512(__m512 x) {
    __m512 x2, p, q;
    x = _mm512_max_ps(_mm512_set1_ps(L2F_TANH_LO), _mm512_min_ps(_mm512_set1_ps(L2F_TANH_HI), x));
    x2 = _mm512_mul_ps(x, x);
    p = _mm512_fmadd_ps(_mm512_set1_ps(L2F_TANH_A13), x2, _mm512_set1_ps(L2F_TANH_A11));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(L2F_TANH_A9));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(L2F_TANH_A7));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(L2F_TANH_A5));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(L2F_TANH_A3));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(L2F_TANH_A1));
    p = _mm512_mul_ps(p, x);
    q = _mm512_fmadd_ps(_mm512_set1_ps(L2F_TANH_B6), x2, _mm512_set1_ps(L2F_TANH_B4));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(L2F_TANH_B2));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(L2F_TANH_B0));
    p = _mm512_div_ps(p, q);
    return _mm512_max_ps(_mm512_set1_ps(-1.0f), _mm512_min_ps(_mm512_set1_ps(1.0f), p));
}

__attribute__((target("avx512f"))) static inline __m512 l2f_act_avx512(__m512 v, int act) {
    if (act == L2F_ACT_TANH) return l2f_tanh_avx512(v);
    if (act == L2F_ACT_RELU) return _mm512_max_ps(v, _mm512_setzero_ps());
    if (act == L2F_ACT_SIGMOID) {
        const __m512 half = _mm512_set1_ps(0.5f);
        return _mm512_fmadd_ps(half, l2f_tanh_avx512(_mm512_mul_ps(half, v)), half);
    }
    return v;
}

/* 64 outputs in four registers (twice), then 16 at a time in one. */
__attribute__((target("avx512f"))) static void l2f_dense_avx512(const float* x, int n_in, const float* wt,
                                                               const float* b, int out_pad, int act, float* y) {
    int j = 0, i;
    for (; j + 64 <= out_pad; j += 64) {
        /* Even and odd inputs in two sets of four registers: eight chains in flight. */
        __m512 a0 = _mm512_loadu_ps(b + j), a1 = _mm512_loadu_ps(b + j + 16);
        __m512 a2 = _mm512_loadu_ps(b + j + 32), a3 = _mm512_loadu_ps(b + j + 48);
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
        __m512 c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
        for (i = 0; i + 2 <= n_in; i += 2) {
            const __m512 xi = _mm512_set1_ps(x[i]), xo = _mm512_set1_ps(x[i + 1]);
            const float* w = wt + (int64_t)i * out_pad + j;
            a0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w), a0);
            a1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 16), a1);
            a2 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 32), a2);
            a3 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 48), a3);
            c0 = _mm512_fmadd_ps(xo, _mm512_loadu_ps(w + out_pad), c0);
            c1 = _mm512_fmadd_ps(xo, _mm512_loadu_ps(w + out_pad + 16), c1);
            c2 = _mm512_fmadd_ps(xo, _mm512_loadu_ps(w + out_pad + 32), c2);
            c3 = _mm512_fmadd_ps(xo, _mm512_loadu_ps(w + out_pad + 48), c3);
        }
        if (i < n_in) {
            const __m512 xi = _mm512_set1_ps(x[i]);
            const float* w = wt + (int64_t)i * out_pad + j;
            a0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w), a0);
            a1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 16), a1);
            a2 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 32), a2);
            a3 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(w + 48), a3);
        }
        _mm512_storeu_ps(y + j, l2f_act_avx512(_mm512_add_ps(a0, c0), act));
        _mm512_storeu_ps(y + j + 16, l2f_act_avx512(_mm512_add_ps(a1, c1), act));
        _mm512_storeu_ps(y + j + 32, l2f_act_avx512(_mm512_add_ps(a2, c2), act));
        _mm512_storeu_ps(y + j + 48, l2f_act_avx512(_mm512_add_ps(a3, c3), act));
    }
    for (; j < out_pad; j += 16) {
        /* One register wide: four chains over interleaved inputs (summed in a fixed order). */
        __m512 a0 = _mm512_loadu_ps(b + j), c0 = _mm512_setzero_ps();
        __m512 d0 = _mm512_setzero_ps(), e0 = _mm512_setzero_ps();
        for (i = 0; i + 4 <= n_in; i += 4) {
            const float* w = wt + (int64_t)i * out_pad + j;
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(w), a0);
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 1]), _mm512_loadu_ps(w + out_pad), c0);
            d0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 2]), _mm512_loadu_ps(w + 2 * out_pad), d0);
            e0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 3]), _mm512_loadu_ps(w + 3 * out_pad), e0);
        }
        for (; i < n_in; i++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(wt + (int64_t)i * out_pad + j), a0);
        a0 = _mm512_add_ps(_mm512_add_ps(a0, c0), _mm512_add_ps(d0, e0));
        _mm512_storeu_ps(y + j, l2f_act_avx512(a0, act));
    }
}

__attribute__((target("avx512f"))) static void l2f_tanh_avx512_n(float* y, int n) {
    int j;
    for (j = 0; j < n; j += 16) _mm512_storeu_ps(y + j, l2f_tanh_avx512(_mm512_loadu_ps(y + j)));
}
#endif

/* ------------------------------------------------------------------ dispatch */

typedef void (*l2f_dense_fn)(const float*, int, const float*, const float*, int, int, float*);
typedef void (*l2f_tanh_fn)(float*, int);

/* The widest level the CPU supports, at most `cap` (-1: no cap). */
static int l2f_mlp_best_level(int cap) {
    int level = L2F_LEVEL_BASELINE;
#if L2F_MLP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = L2F_LEVEL_AVX2;
    if (__builtin_cpu_supports("avx512f")) level = L2F_LEVEL_AVX512;
#endif
    return (cap >= 0 && level > cap) ? cap : level;
}

static l2f_dense_fn l2f_dense_for(int level) {
#if L2F_MLP_X86
    if (level == L2F_LEVEL_AVX512) return l2f_dense_avx512;
    if (level == L2F_LEVEL_AVX2) return l2f_dense_avx2;
#endif
    (void)level;
    return l2f_dense_base;
}

static l2f_tanh_fn l2f_tanh_for(int level) {
#if L2F_MLP_X86
    if (level == L2F_LEVEL_AVX512) return l2f_tanh_avx512_n;
    if (level == L2F_LEVEL_AVX2) return l2f_tanh_avx2_n;
#endif
    (void)level;
    return l2f_tanh_base;
}

#endif
