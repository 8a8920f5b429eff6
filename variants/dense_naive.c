/* dense_naive.c: exact softmax attention that materialises the probabilities
 * P (batch*heads*n*n floats) in forward and reuses them in backward: the
 * textbook form whose quadratic memory is what the Routing Transformer paper
 * sets out to avoid. It is the memory baseline and a second, independent
 * implementation to check `dense` against. Products go through cblas_sgemm
 * (OpenBLAS threads them); one head is processed at a time. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn.h"
#include "common.h"
#include "vexp.h"

extern const attn_backend attn_backend_dense_naive;

/* Query rows per backward block: bounds the dS workspace to ROWS x n. */
#define NAIVE_ROWS 256

typedef struct {
    attn a;
    float *p;  /* (B, H, n, n) probabilities of the last forward */
    float *ds; /* (ROWS, n) backward: dP, then dS, of a block of rows */
    float *dd; /* (n) backward: D = rowsum(dO * O) of one head */
} naive_attn;

static double naive_pairs(const attn_params *p) {
    double n = p->seq;
    return (double)p->batch * p->heads * (p->causal ? n * (n + 1) / 2 : n * n);
}

static double naive_flops(const attn_params *p, int pass) {
    return naive_pairs(p) * (pass == ATTN_PASS_BWD ? 8.0 : 4.0) * p->head_dim;
}

static int naive_rows(const attn_params *p) { return RB_MIN(NAIVE_ROWS, p->seq); }

/* act_bytes as a double, so absurd sizes can be refused before size_t
 * arithmetic could wrap: the probabilities (all of them, including the zero
 * upper triangle when causal), the dS block and D. Inputs, outputs and
 * gradients belong to the caller and are not counted. */
static double naive_bytes_d(const attn_params *p) {
    double n = p->seq;
    return 4.0 * ((double)p->batch * p->heads * n * n + (double)naive_rows(p) * n + n);
}

static size_t naive_act_bytes(const attn_params *p) { return (size_t)naive_bytes_d(p); }

static double naive_phys_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return (pages > 0 && psz > 0) ? (double)pages * (double)psz : 0.0;
}

static int naive_validate(attn_params *p, char *err, size_t errlen) {
    double need = naive_bytes_d(p), phys = naive_phys_bytes();
    double gib = 1024.0 * 1024.0 * 1024.0;
    if (phys > 0 && need > 0.8 * phys)
        return rb_fail(err, errlen, "dense-naive at seq %d needs %.1f GiB for the probabilities; this machine has %.1f GiB",
                       p->seq, need / gib, phys / gib);
    if (need > (double)SIZE_MAX / 2)
        return rb_fail(err, errlen, "dense-naive at seq %d needs %.3g bytes for the probabilities", p->seq, need);
    return 0;
}

static attn *naive_create(const attn_params *p, char *err, size_t errlen) {
    naive_attn *na = calloc(1, sizeof *na);
    size_t n = (size_t)p->seq;
    size_t pf = (size_t)p->batch * p->heads * n * n, dsf = (size_t)naive_rows(p) * n;
    if (na) {
        na->p = rb_aligned_alloc(pf * sizeof(float));
        na->ds = rb_aligned_alloc(dsf * sizeof(float));
        na->dd = rb_aligned_alloc(n * sizeof(float));
    }
    if (!na || !na->p || !na->ds || !na->dd) {
        if (na) {
            free(na->p);
            free(na->ds);
            free(na->dd);
        }
        free(na);
        rb_fail(err, errlen, "out of memory: dense-naive at seq %d could not allocate %.2f GiB for the probabilities",
                p->seq, (double)pf * sizeof(float) / (1024.0 * 1024.0 * 1024.0));
        return NULL;
    }
    na->a.be = &attn_backend_dense_naive;
    na->a.p = *p;
    na->a.bytes = (pf + dsf + n) * sizeof(float);
    return &na->a;
}

static void naive_destroy(attn *a) {
    naive_attn *na = (naive_attn *)a;
    free(na->p);
    free(na->ds);
    free(na->dd);
    free(na);
}

static void naive_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    (void)flags;
    naive_attn *na = (naive_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal;
    long bh_count = (long)p->batch * p->heads;
    size_t hs = (size_t)n * d, nn = (size_t)n * n;
    float scale = 1.0f / sqrtf((float)d);
    for (long bh = 0; bh < bh_count; bh++) {
        const float *qh = q + bh * hs, *kh = k + bh * hs, *vh = v + bh * hs;
        float *ph = na->p + bh * nn; /* (n, n) */
        /* S = Q K^T * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, scale, qh, d, kh, d, 0.0f, ph, n);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            float *row = ph + (size_t)i * n;
            int nv = causal ? i + 1 : n;
            float mx = rb_vmax(row, nv);
            double sum = rb_vexp_shift_sum(row, row, mx, nv);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < nv; j++) row[j] *= inv;
            if (nv < n) memset(row + nv, 0, sizeof(float) * (size_t)(n - nv));
        }
        /* O = P V */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, ph, n, vh, d, 0.0f, out + bh * hs, d);
    }
}

static void naive_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out) {
    naive_attn *na = (naive_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, rows = naive_rows(p);
    long bh_count = (long)p->batch * p->heads;
    size_t hs = (size_t)n * d, nn = (size_t)n * n;
    float scale = 1.0f / sqrtf((float)d);
    for (long bh = 0; bh < bh_count; bh++) {
        const float *qh = q + bh * hs, *kh = k + bh * hs, *vh = v + bh * hs;
        const float *oh = out + bh * hs, *gh = dout + bh * hs;
        const float *ph = na->p + bh * nn;
        float *dqh = dq + bh * hs, *dkh = dk + bh * hs, *dvh = dv + bh * hs;
        /* dV = P^T dO */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, n, 1.0f, ph, n, gh, d, 0.0f, dvh, d);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            double acc = 0.0;
            for (int c = 0; c < d; c++) acc += (double)oh[(size_t)i * d + c] * gh[(size_t)i * d + c];
            na->dd[i] = (float)acc;
        }
        for (int r0 = 0; r0 < n; r0 += rows) {
            int nr = RB_MIN(rows, n - r0);
            float *ds = na->ds; /* (nr, n) */
            /* dP = dO V^T, then dS = P * (dP - D) (zero where P is masked) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, n, d, 1.0f, gh + (size_t)r0 * d, d, vh, d, 0.0f,
                        ds, n);
#pragma omp parallel for schedule(static)
            for (int i = 0; i < nr; i++) {
                const float *prow = ph + (size_t)(r0 + i) * n;
                float *row = ds + (size_t)i * n, di = na->dd[r0 + i];
                for (int j = 0; j < n; j++) row[j] = prow[j] * (row[j] - di);
            }
            /* dQ = dS K * scale; dK += dS^T Q * scale */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, n, scale, ds, n, kh, d, 0.0f,
                        dqh + (size_t)r0 * d, d);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, d, nr, scale, ds, n, qh + (size_t)r0 * d, d,
                        r0 == 0 ? 0.0f : 1.0f, dkh, d);
        }
    }
}

static int naive_equals_dense(const attn_params *p) {
    (void)p;
    return 1;
}

const attn_backend attn_backend_dense_naive = {
    .name = "dense-naive",
    .description = "exact softmax attention that stores the n x n probabilities (the quadratic-memory baseline)",
    .uses = 0,
    .validate = naive_validate,
    .create = naive_create,
    .forward = naive_forward,
    .backward = naive_backward,
    .flops = naive_flops,
    .act_bytes = naive_act_bytes,
    .stats = NULL,
    .equals_dense = naive_equals_dense,
    .destroy = naive_destroy,
};
