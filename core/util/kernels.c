/* kernels.c: the layer kernels declared in kernels.h (matmul, layer norm,
 * GELU, softmax, embedding, cross-entropy, residual, gradient clipping,
 * AdamW). Matrix products go to cblas_sgemm; everything else is plain loops
 * with OpenMP over rows, which are independent. Sums over rows (dweight,
 * dbias, dwte, norms) are never split by thread: each thread owns a block of
 * columns (or a chunk whose size depends only on n) and adds rows in order, so
 * results are bit-identical run to run for a given thread count. Small calls
 * stay on one thread: below PAR_MIN elements a parallel region costs more than
 * it saves. */
#include "util/kernels.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "util/common.h"
#include "util/vexp.h"

#define LN_EPS 1e-5f
/* elements of work below which loops run serially */
#define PAR_MIN 16384
/* column block owned by one thread in row reductions: 16 floats = one cache
 * line, so no two threads write the same line */
#define COL_BLOCK 16
/* stack buffer for exponentials in cross-entropy (no allocation in kernels) */
#define CE_CHUNK 256

/* ------------------------------------------------------------------ matmul */

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    // out is (N,OC), inp is (N,C), weight is (OC,C), bias is (OC) or NULL
    if (N <= 0 || OC <= 0) return;
    if (C > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
    } else {
        memset(out, 0, (size_t)N * OC * sizeof(float)); /* empty product; sgemm rejects lda = 0 */
    }
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((size_t)N * OC >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * OC;
        for (int j = 0; j < OC; j++) o[j] += bias[j];
    }
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

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    // dinp is (N,C), dweight (OC,C), dbias (OC), dout (N,OC), inp (N,C), weight (OC,C)
    if (N <= 0 || OC <= 0) return;
    if (C > 0) {
        if (dinp)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f,
                        dinp, C);
        if (dweight)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight,
                        C);
    }
    if (dbias) colsum_accumulate(dbias, dout, N, OC);
}

/* --------------------------------------------------------------- layernorm */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
    // out is (N,C), mean and rstd (N) (either may be NULL at inference), inp (N,C), weight and bias (C) or NULL
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double s = 0.0;
        for (int i = 0; i < C; i++) s += x[i];
        double m = C > 0 ? s / C : 0.0;
        /* two passes: the centred sum of squares does not cancel like E[x^2]-m^2 */
        double v = 0.0;
        for (int i = 0; i < C; i++) {
            double d = x[i] - m;
            v += d * d;
        }
        v = C > 0 ? v / C : 0.0;
        float mf = (float)m, rs = (float)(1.0 / sqrt(v + LN_EPS));
        for (int i = 0; i < C; i++) {
            float y = (x[i] - mf) * rs;
            if (weight) y *= weight[i];
            if (bias) y += bias[i];
            o[i] = y;
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
            for (int i = 0; i < C; i++) {
                float nrm = (x[i] - m) * rs;
                float dn = weight ? weight[i] * g[i] : g[i];
                sd += dn;
                sdn += (double)dn * nrm;
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
 * loses all digits of the small outputs at negative x. */
void gelu_forward(float *out, const float *inp, size_t n) {
    // out and inp are (n)
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_S * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    // dinp, inp, dout are (n)
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_S * (x + 0.044715f * x * x * x);
        /* s = sigmoid(2u) = (1 + tanh u)/2; sech^2 u = 4 s (1 - s), with
         * 1 - s = e s computed directly rather than by subtraction */
        float e = expf(-2.0f * u);
        float s = 1.0f / (1.0f + e), one_minus_s = isinf(e) ? 1.0f : e * s;
        float local = s + 2.0f * x * s * one_minus_s * GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
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

void crossentropy_backward(float *dlogits, const float *logits, const int *targets, const float *mask,
                           float scale, int N, int V) {
    // dlogits and logits are (N,V), targets (N), mask (N) or NULL
#pragma omp parallel for schedule(static) if ((size_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float w = mask ? mask[n] : 1.0f;
        if (w == 0.0f) continue;
        assert(targets[n] >= 0 && targets[n] < V);
        const float *x = logits + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        float m = rb_vmax(x, V);
        /* probabilities exp(x - lse): shifting by lse instead of dividing by
         * the sum keeps the second pass one subtraction per entry */
        float lse = (float)((double)m + row_log_sum_exp_shifted(x, m, V));
        float coef = scale * w;
        float buf[CE_CHUNK];
        for (int i = 0; i < V; i += CE_CHUNK) {
            int len = RB_MIN(CE_CHUNK, V - i);
            rb_vexp_shift_sum(buf, x + i, lse, len);
            for (int j = 0; j < len; j++) d[i + j] += coef * buf[j];
        }
        d[targets[n]] -= coef;
    }
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

void adamw_update(float *params, const float *grads, float *m, float *v, const unsigned char *decay_mask,
                  size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
    // params, grads, m, v are (n); decay_mask (n) or NULL
    assert(t >= 1);
    float bc1 = (float)(1.0 - pow(beta1, t)), bc2 = (float)(1.0 - pow(beta2, t));
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        float wd = (!decay_mask || decay_mask[i]) ? weight_decay : 0.0f;
        /* decoupled decay: shrinks the parameter itself, not the gradient */
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * params[i]);
    }
}
