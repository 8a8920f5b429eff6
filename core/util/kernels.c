/* kernels.c: the layer kernels declared in kernels.h (matmul, layer norm,
 * GELU, softmax, embedding, cross-entropy, residual, gradient clipping,
 * AdamW). Matrix products go to rb_sgemm (gemm.h); everything else is plain loops
 * with OpenMP over rows, which are independent. Sums over rows (dweight,
 * dbias, dwte, norms) are never split by thread: each thread owns a block of
 * columns (or a chunk whose size depends only on n) and adds rows in order, so
 * results are bit-identical run to run for a given thread count. Small calls
 * stay on one thread: below PAR_MIN elements a parallel region costs more than
 * it saves. */
#include "util/kernels.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "util/common.h"
#include "util/gemm.h"
#include "util/vexp.h"

#define LN_EPS 1e-5f
/* elements of work below which loops run serially */
#define PAR_MIN 16384
/* column block owned by one thread in row reductions: 16 floats = one cache
 * line, so no two threads write the same line */
#define COL_BLOCK 16
/* stack buffer for exponentials in cross-entropy (no allocation in kernels) */
#define CE_CHUNK 256
/* layer norm backward: a row's dnorm is summed this many floats at a time (stack) */
#define LN_CHUNK 1024

/* ------------------------------------------------------------------ matmul */

/* out (N,OC) = res + bias, row by row (res or bias may be NULL, not both) */
static void fill_rows(float *out, const float *res, const float *bias, int N, int OC) {
#pragma omp parallel for schedule(static) if ((size_t)N * OC >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * OC;
        const float *r = res ? res + (size_t)n * OC : NULL;
        if (!bias) memcpy(o, r, (size_t)OC * sizeof(float));
        else if (!r) memcpy(o, bias, (size_t)OC * sizeof(float));
        else
            for (int j = 0; j < OC; j++) o[j] = r[j] + bias[j];
    }
}

void matmul_forward_add(float *out, const float *inp, const float *weight, const float *bias, const float *res,
                        int N, int C, int OC) {
    // out is (N,OC), inp is (N,C), weight is (OC,C), bias (OC) or NULL, res (N,OC) or NULL
    if (N <= 0 || OC <= 0) return;
    /* bias and residual go into out first and the product adds to them (beta
     * = 1): one pass over out instead of sgemm's zeroing plus an add pass */
    int pre = bias || res;
    if (pre) fill_rows(out, res, bias, N, OC);
    if (C > 0)
        rb_sgemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, pre ? 1.0f : 0.0f, out, OC);
    else if (!pre)
        memset(out, 0, (size_t)N * OC * sizeof(float)); /* empty product; sgemm rejects lda = 0 */
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    matmul_forward_add(out, inp, weight, bias, NULL, N, C, OC);
}

/* dst (cols) += column sums of src (rows, cols), in double, rows in order. */
static void colsum_accumulate(float *dst, const float *src, int rows, int cols) {
    int nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN)
    for (int b = 0; b < nblk; b++) {
        int c0 = b * COL_BLOCK, c1 = RB_MIN(c0 + COL_BLOCK, cols);
        double acc[COL_BLOCK] = {0};
        for (int n = 0; n < rows; n++) {
            const float *s = src + (size_t)n * cols;
            for (int c = c0; c < c1; c++) acc[c - c0] += s[c];
        }
        for (int c = c0; c < c1; c++) dst[c] += (float)acc[c - c0];
    }
}

static void matmul_backward_beta(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, int N, int C, int OC, float beta) {
    // dinp is (N,C), dweight (OC,C), dbias (OC), dout (N,OC), inp (N,C), weight (OC,C)
    if (N <= 0 || OC <= 0) {
        if (dinp && beta == 0.0f && N > 0 && C > 0) memset(dinp, 0, (size_t)N * C * sizeof(float));
        return;
    }
    if (C > 0) {
        if (dinp)
            rb_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, beta, dinp, C);
        if (dweight)
            rb_sgemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    }
    if (dbias) colsum_accumulate(dbias, dout, N, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    matmul_backward_beta(dinp, dweight, dbias, dout, inp, weight, N, C, OC, 1.0f);
}

void matmul_backward_set(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, int N, int C, int OC) {
    matmul_backward_beta(dinp, dweight, dbias, dout, inp, weight, N, C, OC, 0.0f);
}

/* --------------------------------------------------------------- layernorm */

/* Row reductions of layer norm in double: sum of a[i] (b NULL) or of
 * a[i] * b[i], where a[i] = (x[i] - sub) * mul (mul 0: a = x) in float; eight
 * double lanes, then the lanes in a fixed order, so the result does not
 * depend on anything but the row. */
static double ln_rowsum(const float *x, float sub, float mul, const float *b, int C) {
    int i = 0;
    double s = 0.0;
#ifdef __AVX512F__
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    __m512 vs = _mm512_set1_ps(sub), vm = _mm512_set1_ps(mul);
    for (; i + 16 <= C; i += 16) {
        __m512 a = _mm512_loadu_ps(x + i);
        if (mul != 0.0f) a = _mm512_mul_ps(_mm512_sub_ps(a, vs), vm);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        if (b) {
            __m512 bb = _mm512_loadu_ps(b + i);
            lo = _mm512_mul_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(bb)));
            hi = _mm512_mul_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(bb), 1))));
        }
        acc0 = _mm512_add_pd(acc0, lo);
        acc1 = _mm512_add_pd(acc1, hi);
    }
    double l[8];
    _mm512_storeu_pd(l, _mm512_add_pd(acc0, acc1));
    s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
#endif
    for (; i < C; i++) {
        float a = mul != 0.0f ? (x[i] - sub) * mul : x[i];
        s += b ? (double)a * b[i] : (double)a;
    }
    return s;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
    // out is (N,C), mean and rstd (N) (either may be NULL at inference), inp (N,C), weight and bias (C) or NULL
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double m = C > 0 ? ln_rowsum(x, 0.0f, 0.0f, NULL, C) / C : 0.0;
        /* two passes: the centred sum of squares does not cancel like E[x^2]-m^2;
         * the deviations in double, as (float) x - m would lose digits */
        double v = 0.0;
        int i = 0;
#ifdef __AVX512F__
        __m512d acc = _mm512_setzero_pd(), vmd = _mm512_set1_pd(m);
        for (; i + 8 <= C; i += 8) {
            __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), vmd);
            acc = _mm512_fmadd_pd(d, d, acc);
        }
        double l[8];
        _mm512_storeu_pd(l, acc);
        v = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
#endif
        for (; i < C; i++) {
            double d = x[i] - m;
            v += d * d;
        }
        v = C > 0 ? v / C : 0.0;
        float mf = (float)m, rs = (float)(1.0 / sqrt(v + LN_EPS));
        if (weight && bias)
            for (int j = 0; j < C; j++) o[j] = (x[j] - mf) * rs * weight[j] + bias[j];
        else
            for (int j = 0; j < C; j++) {
                float y = (x[j] - mf) * rs;
                if (weight) y *= weight[j];
                if (bias) y += bias[j];
                o[j] = y;
            }
        if (mean) mean[n] = mf;
        if (rstd) rstd[n] = rs;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    // dinp is (N,C), dweight and dbias (C) or NULL, dout and inp (N,C), weight (C) or NULL, mean and rstd (N)
    if (N <= 0 || C <= 0) return;
    if (dinp) {
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float m = mean[n], rs = rstd[n];
            /* dnorm = weight * dout; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
            double sd = 0.0, sdn = 0.0;
            for (int c0 = 0; c0 < C; c0 += LN_CHUNK) {
                int len = RB_MIN(LN_CHUNK, C - c0);
                float dn[LN_CHUNK];
                for (int i = 0; i < len; i++) dn[i] = weight ? weight[c0 + i] * g[c0 + i] : g[c0 + i];
                sd += ln_rowsum(dn, 0.0f, 0.0f, NULL, len);
                sdn += ln_rowsum(x + c0, m, rs, dn, len);
            }
            float md = (float)(sd / C), mdn = (float)(sdn / C);
            for (int i = 0; i < C; i++) {
                float nrm = (x[i] - m) * rs;
                float dn = weight ? weight[i] * g[i] : g[i];
                dx[i] += (dn - md - nrm * mdn) * rs;
            }
        }
    }
    if (dweight || dbias) {
        /* sums over rows: each thread owns a block of columns (deterministic) */
        int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
        for (int b = 0; b < nblk; b++) {
            int c0 = b * COL_BLOCK, c1 = RB_MIN(c0 + COL_BLOCK, C);
            double aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
                float m = mean[n], rs = rstd[n];
                for (int c = c0; c < c1; c++) {
                    aw[c - c0] += (double)g[c] * ((x[c] - m) * rs);
                    ab[c - c0] += g[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dweight) dweight[c] += (float)aw[c - c0];
                if (dbias) dbias[c] += (float)ab[c - c0];
            }
        }
    }
}

/* -------------------------------------------------------------------- gelu */

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */

/* 0.5 x (1 + tanh u) is evaluated as x * sigmoid(2u) = x / (1 + exp(-2u)):
 * the same function, without the cancellation of 1 + tanh u near -1 that
 * loses all digits of the small outputs at negative x. The exponential is
 * vexp.h's polynomial, sixteen lanes at a time; the scalar tail uses the same
 * polynomial, so every element gets the same bits wherever it falls. */
static inline float gelu_scalar(float x) {
    float u = GELU_S * (x + 0.044715f * x * x * x);
    return x / (1.0f + rb_expf(-2.0f * u));
}

/* d gelu / dx: s = sigmoid(2u) = (1 + tanh u)/2; sech^2 u = 4 s (1 - s), with
 * 1 - s = e s computed directly rather than by subtraction */
static inline float gelu_grad_scalar(float x) {
    float u = GELU_S * (x + 0.044715f * x * x * x);
    float e = rb_expf(-2.0f * u);
    float s = 1.0f / (1.0f + e), one_minus_s = isinf(e) ? 1.0f : e * s;
    return s + 2.0f * x * s * one_minus_s * GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
}

#ifdef __AVX512F__
static inline __m512 gelu_u16(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), x), x), x);
    return _mm512_mul_ps(_mm512_set1_ps(GELU_S), _mm512_add_ps(x, x3));
}
static inline __m512 gelu16(__m512 x) {
    __m512 e = rb_exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), gelu_u16(x)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}
static inline __m512 gelu_grad16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = rb_exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), gelu_u16(x)));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    __mmask16 inf = _mm512_cmp_ps_mask(e, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    __m512 oms = _mm512_mask_blend_ps(inf, _mm512_mul_ps(e, s), one);
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(2.0f), x), s), oms),
                             _mm512_set1_ps(GELU_S));
    __m512 q = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(3.0f * 0.044715f), x), x);
    return _mm512_add_ps(s, _mm512_mul_ps(t, _mm512_add_ps(one, q)));
}
#endif

/* elements per parallel chunk of the element-wise loops (a multiple of 16) */
#define EW_CHUNK 4096

/* mode 0: out = gelu(inp); mode 1: out += gelu'(inp) * dout; mode 2: out =
 * gelu'(inp) * dout (out may alias dout) */
static void gelu_range(float *out, const float *inp, const float *dout, size_t n, int mode) {
    size_t i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(inp + i), y;
        if (mode == 0) y = gelu16(x);
        else {
            y = _mm512_mul_ps(gelu_grad16(x), _mm512_loadu_ps(dout + i));
            if (mode == 1) y = _mm512_add_ps(_mm512_loadu_ps(out + i), y);
        }
        _mm512_storeu_ps(out + i, y);
    }
#endif
    for (; i < n; i++) {
        if (mode == 0) out[i] = gelu_scalar(inp[i]);
        else if (mode == 1) out[i] += gelu_grad_scalar(inp[i]) * dout[i];
        else out[i] = gelu_grad_scalar(inp[i]) * dout[i];
    }
}

static void gelu_apply(float *out, const float *inp, const float *dout, size_t n, int mode) {
    size_t nchunk = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nchunk; k++) {
        size_t i0 = k * EW_CHUNK, len = RB_MIN(EW_CHUNK, n - i0);
        gelu_range(out + i0, inp + i0, dout ? dout + i0 : NULL, len, mode);
    }
}

void gelu_forward(float *out, const float *inp, size_t n) { gelu_apply(out, inp, NULL, n, 0); }

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) { gelu_apply(dinp, inp, dout, n, 1); }

void gelu_backward_set(float *dinp, const float *inp, const float *dout, size_t n) {
    gelu_apply(dinp, inp, dout, n, 2);
}

/* ----------------------------------------------------------------- softmax */

void softmax_forward(float *out, const float *inp, int N, int C) {
    // out and inp are (N,C); out may alias inp
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = rb_vmax(x, C);
        if (m == -INFINITY) {
            /* every entry masked: no distribution exists; give zeros rather than NaN */
            memset(o, 0, (size_t)C * sizeof(float));
            continue;
        }
        double s = rb_vexp_shift_sum(o, x, m, C);
        float inv = (float)(1.0 / s);
        for (int i = 0; i < C; i++) o[i] *= inv;
    }
}

void softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
    // dinp, dout, out are (N,C)
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *g = dout + (size_t)n * C, *p = out + (size_t)n * C;
        float *d = dinp + (size_t)n * C;
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)g[i] * p[i];
        float df = (float)dot;
        for (int i = 0; i < C; i++) d[i] += p[i] * (g[i] - df);
    }
}

/* --------------------------------------------------------------- embedding */

void embedding_forward(float *out, const int *tokens, const float *wte, int N, int C) {
    // out is (N,C), tokens (N), wte (V,C); tokens are checked by the data loader
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        assert(tokens[n] >= 0);
        memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
    }
}

void embedding_backward(float *dwte, const float *dout, const int *tokens, int N, int C) {
    // dwte is (V,C), dout (N,C), tokens (N)
    /* Two positions may share a token, so threads split columns, not rows:
     * no two threads touch the same dwte entry, and each entry gets its rows
     * added in position order. */
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int b = 0; b < nblk; b++) {
        int c0 = b * COL_BLOCK, c1 = RB_MIN(c0 + COL_BLOCK, C);
        for (int n = 0; n < N; n++) {
            assert(tokens[n] >= 0);
            float *d = dwte + (size_t)tokens[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* ----------------------------------------------------------- cross-entropy */

/* log sum_i exp(x[i] - m) for a row, in double, exponentials a chunk at a
 * time through the vector exp into a stack buffer. */
static double row_log_sum_exp_shifted(const float *x, float m, int V) {
    float buf[CE_CHUNK];
    double s = 0.0;
    for (int i = 0; i < V; i += CE_CHUNK) s += rb_vexp_shift_sum(buf, x + i, m, RB_MIN(CE_CHUNK, V - i));
    return log(s);
}

/* -log softmax(x)[target] in double */
static double row_crossentropy(const float *x, int target, int V) {
    float m = rb_vmax(x, V);
    return (double)m + row_log_sum_exp_shifted(x, m, V) - (double)x[target];
}

double crossentropy_forward(float *losses, const float *logits, const int *targets, const float *mask, int N,
                            int V) {
    // losses (N) or NULL, logits (N,V), targets (N), mask (N) or NULL
    /* Targets of masked positions are never read, so padding may use any value (e.g. -1). */
    double num = 0.0, den = 0.0;
    if (losses) {
#pragma omp parallel for schedule(static) if ((size_t)N * V >= PAR_MIN)
        for (int n = 0; n < N; n++) {
            if (mask && mask[n] == 0.0f) {
                losses[n] = 0.0f;
                continue;
            }
            assert(targets[n] >= 0 && targets[n] < V);
            losses[n] = (float)row_crossentropy(logits + (size_t)n * V, targets[n], V);
        }
        /* the mean in a fixed order, so the result does not depend on threads */
        for (int n = 0; n < N; n++) {
            double w = mask ? mask[n] : 1.0;
            if (w == 0.0) continue;
            num += w * losses[n];
            den += w;
        }
    } else {
        for (int n = 0; n < N; n++) {
            double w = mask ? mask[n] : 1.0;
            if (w == 0.0) continue;
            assert(targets[n] >= 0 && targets[n] < V);
            num += w * row_crossentropy(logits + (size_t)n * V, targets[n], V);
            den += w;
        }
    }
    return den != 0.0 ? num / den : 0.0;
}

/* set 0: dlogits += ...; set 1: dlogits = ... (dlogits may alias logits:
 * each chunk of a row is read before it is written) */
static void crossentropy_backward_mode(float *dlogits, const float *logits, const int *targets, const float *mask,
                                       float scale, int N, int V, int set) {
    // dlogits and logits are (N,V), targets (N), mask (N) or NULL
#pragma omp parallel for schedule(static) if ((size_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float w = mask ? mask[n] : 1.0f;
        const float *x = logits + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        if (w == 0.0f) {
            if (set) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        assert(targets[n] >= 0 && targets[n] < V);
        float m = rb_vmax(x, V);
        /* probabilities exp(x - lse): shifting by lse instead of dividing by
         * the sum keeps the second pass one subtraction per entry */
        float lse = (float)((double)m + row_log_sum_exp_shifted(x, m, V));
        float coef = scale * w;
        float buf[CE_CHUNK];
        for (int i = 0; i < V; i += CE_CHUNK) {
            int len = RB_MIN(CE_CHUNK, V - i);
            rb_vexp_shift_sum(buf, x + i, lse, len);
            if (set)
                for (int j = 0; j < len; j++) d[i + j] = coef * buf[j];
            else
                for (int j = 0; j < len; j++) d[i + j] += coef * buf[j];
        }
        d[targets[n]] -= coef;
    }
}

void crossentropy_backward(float *dlogits, const float *logits, const int *targets, const float *mask,
                           float scale, int N, int V) {
    crossentropy_backward_mode(dlogits, logits, targets, mask, scale, N, V, 0);
}

void crossentropy_backward_set(float *dlogits, const float *logits, const int *targets, const float *mask,
                               float scale, int N, int V) {
    crossentropy_backward_mode(dlogits, logits, targets, mask, scale, N, V, 1);
}

/* ---------------------------------------------------------------- residual */

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    // out, a, b are (n)
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, size_t n) {
    // da, db, dout are (n); either gradient may be NULL
    if (da) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) da[i] += dout[i];
    }
    if (db) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) db[i] += dout[i];
    }
}

/* --------------------------------------------------------------- optimiser */

/* The sum of squares is split into at most NORM_CHUNKS chunks whose size
 * depends on n only, summed in order, so the norm is the same bits for any
 * thread count. */
#define NORM_CHUNKS 1024
#define NORM_MIN_CHUNK 65536

double clip_grad_norm(float *g, size_t n, double max_norm) {
    // g is (n)
    size_t nchunk = (n + NORM_MIN_CHUNK - 1) / NORM_MIN_CHUNK;
    if (nchunk > NORM_CHUNKS) nchunk = NORM_CHUNKS;
    if (nchunk == 0) nchunk = 1;
    size_t chunk = (n + nchunk - 1) / nchunk;
    double part[NORM_CHUNKS];
#pragma omp parallel for schedule(static) if (nchunk > 1)
    for (size_t k = 0; k < nchunk; k++) {
        size_t i0 = k * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        /* four accumulators in a fixed pattern: no serial add-latency chain */
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        size_t i = i0;
        for (; i + 4 <= i1; i += 4) {
            a0 += (double)g[i] * g[i];
            a1 += (double)g[i + 1] * g[i + 1];
            a2 += (double)g[i + 2] * g[i + 2];
            a3 += (double)g[i + 3] * g[i + 3];
        }
        for (; i < i1; i++) a0 += (double)g[i] * g[i];
        part[k] = (a0 + a1) + (a2 + a3);
    }
    double ss = 0.0;
    for (size_t k = 0; k < nchunk; k++) ss += part[k];
    double norm = sqrt(ss);
    if (max_norm > 0.0 && norm > max_norm) {
        float s = (float)(max_norm / norm);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    return norm;
}

void adamw_update_scaled(float *params, const float *grads, float *m, float *v, const unsigned char *decay_mask,
                         size_t n, float gscale, float lr, float beta1, float beta2, float eps, float weight_decay,
                         int t) {
    // params, grads, m, v are (n); decay_mask (n) or NULL
    assert(t >= 1);
    float bc1 = (float)(1.0 - pow(beta1, t)), bc2 = (float)(1.0 - pow(beta2, t));
    float b1c = 1.0f - beta1, b2c = 1.0f - beta2;
    size_t nchunk = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nchunk; k++) {
        size_t i1 = RB_MIN(n, (k + 1) * EW_CHUNK);
        /* one pass: the clipping scale, both moments and the update; gcc
         * vectorises this loop (no reductions, the mask a blend) */
#pragma omp simd
        for (size_t i = k * EW_CHUNK; i < i1; i++) {
            float g = grads[i] * gscale;
            float mi = beta1 * m[i] + b1c * g;
            float vi = beta2 * v[i] + b2c * g * g;
            m[i] = mi;
            v[i] = vi;
            float mhat = mi / bc1, vhat = vi / bc2;
            float wd = (!decay_mask || decay_mask[i]) ? weight_decay : 0.0f;
            /* decoupled decay: shrinks the parameter itself, not the gradient */
            params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * params[i]);
        }
    }
}

void adamw_update(float *params, const float *grads, float *m, float *v, const unsigned char *decay_mask,
                  size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
    adamw_update_scaled(params, grads, m, v, decay_mask, n, 1.0f, lr, beta1, beta2, eps, weight_decay, t);
}
