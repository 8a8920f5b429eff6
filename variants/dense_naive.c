/* dense_naive.c: exact softmax attention that materialises the probabilities
 * P (batch*heads*n*n floats) in forward and reuses them in backward: the
 * textbook form whose quadratic memory is what the Routing Transformer paper
 * sets out to avoid. It is the memory baseline and a second, independent
 * implementation to check `dense` against. Products go through rb_sgemm_st
 * (util/gemm.h), single-threaded inside our OpenMP regions over blocks of
 * query rows, packing into each thread's workspace. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn/attn.h"
#include "util/common.h"
#include "util/gemm.h"
#include "util/threads.h"
#include "util/vexp.h"

extern const attn_backend attn_backend_dense_naive;

/* Query rows per block: bounds each thread's dS workspace to ROWS x n. */
#define NAIVE_ROWS 256

typedef struct {
    attn a;
    int nthr;  /* threads the workspaces were made for */
    float *p;  /* (B, H, n, n) probabilities of the last forward */
    float *ws; /* nthr x [ds (ROWS, n); dk (n, d); dv (n, d)] backward workspaces */
    float *dd; /* (B, H, n) backward: D = rowsum(dO * O) */
} naive_attn;

static double naive_pairs(const attn_params *p) {
    double n = p->seq;
    return (double)p->batch * p->heads * (p->causal ? n * (n + 1) / 2 : n * n);
}

static double naive_flops(const attn_params *p, int pass) {
    return naive_pairs(p) * (pass == ATTN_PASS_BWD ? 8.0 : 4.0) * p->head_dim;
}

static int naive_rows(const attn_params *p) { return RB_MIN(NAIVE_ROWS, p->seq); }

/* Where a thread's packing buffers (rb_sgemm_st) start in its workspace,
 * after dS and the partial dK, dV: rounded to a cache line. */
static size_t naive_gw_at(const attn_params *p) {
    size_t f = (size_t)naive_rows(p) * p->seq + 2 * (size_t)p->seq * p->head_dim;
    return (f + 15) & ~(size_t)15;
}

/* Floats of one thread's workspace, rounded to a cache line: products have
 * rows up to a block or n keys, columns up to n or head_dim. */
static size_t naive_ws_floats(const attn_params *p) {
    size_t g = rb_sgemm_st_floats(RB_MAX(naive_rows(p), p->seq), RB_MAX(p->seq, p->head_dim), 0);
    return naive_gw_at(p) + ((g + 15) & ~(size_t)15);
}

/* act_bytes as a double, so absurd sizes can be refused before size_t
 * arithmetic could wrap: the probabilities (all of them, including the zero
 * upper triangle when causal), D, and per thread a dS block of rows,
 * partial dK, dV of one head and the products' packing buffers. Inputs, outputs and gradients belong to the
 * caller and are not counted. */
static double naive_bytes_d(const attn_params *p, int nthr) {
    double n = p->seq, rows = (double)p->batch * p->heads * n;
    return 4.0 * (rows * n + rows + (double)nthr * (double)naive_ws_floats(p));
}

static size_t naive_act_bytes(const attn_params *p) { return (size_t)naive_bytes_d(p, rb_threads()); }

static int naive_threads(void) { return RB_MAX(rb_threads(), omp_get_max_threads()); }

static int naive_validate(attn_params *p, rb_err *e) {
    /* Whether it fits this machine's memory is attn_memory_check's business
     * (a sweep records that as unsupported); here only what no machine has. */
    double need = naive_bytes_d(p, naive_threads());
    if (need > (double)SIZE_MAX / 2)
        return rb_err_set(e, RB_EUNSUPPORTED, "seq", "dense-naive at seq %d needs %.3g bytes for the probabilities",
                          p->seq, need);
    return 0;
}

static attn *naive_create(const attn_params *p, char *err, size_t errlen) {
    naive_attn *na = calloc(1, sizeof *na);
    int nthr = naive_threads();
    size_t n = (size_t)p->seq, rows = (size_t)p->batch * p->heads * n;
    size_t pf = rows * n, wf = (size_t)nthr * naive_ws_floats(p);
    if (na) {
        na->p = rb_aligned_alloc(pf * sizeof(float));
        na->ws = rb_aligned_alloc(wf * sizeof(float));
        na->dd = rb_aligned_alloc(rows * sizeof(float));
    }
    if (!na || !na->p || !na->ws || !na->dd) {
        if (na) {
            free(na->p);
            free(na->ws);
            free(na->dd);
        }
        free(na);
        rb_fail(err, errlen, "out of memory: dense-naive at seq %d could not allocate %.2f GiB for the probabilities",
                p->seq, (double)pf * sizeof(float) / (1024.0 * 1024.0 * 1024.0));
        return NULL;
    }
    na->a.be = &attn_backend_dense_naive;
    na->a.p = *p;
    na->nthr = nthr;
    na->a.bytes = (pf + rows + wf) * sizeof(float);
    return &na->a;
}

static void naive_destroy(attn *a) {
    naive_attn *na = (naive_attn *)a;
    free(na->p);
    free(na->ws);
    free(na->dd);
    free(na);
}

/* Parallelism is ours, one sgemm per thread at a time (single-threaded
 * inside the region), like dense: OpenBLAS's own threading of these thin
 * products spins between threads and collapses when the cores are shared.
 * Both passes work on blocks of ROWS query rows; when causal, a block's
 * products stop at its last visible key, so the work is the attended pairs
 * plus the diagonal blocks' triangles, not all n x n. */

static int naive_team(const naive_attn *na) { return RB_MIN(omp_get_max_threads(), na->nthr); }

/* Query rows [r0, r0+nr) of one head: P rows and output rows. */
static void naive_forward_rows(float *out, float *ph, const float *qh, const float *kh, const float *vh, int r0, int nr,
                               int n, int d, int causal, float scale, float *gw) {
    int nc = causal ? r0 + nr : n;
    float *pb = ph + (size_t)r0 * n; /* (nr, n) rows of P */
    /* S = Q K^T * scale over the visible columns */
    rb_sgemm_st(0, 1, nr, nc, d, scale, qh + (size_t)r0 * d, d, kh, d, 0.0f, pb, n, gw);
    for (int i = 0; i < nr; i++) {
        float *row = pb + (size_t)i * n;
        int nv = causal ? r0 + i + 1 : n;
        float mx = rb_vmax(row, nv);
        double sum = rb_vexp_shift_sum(row, row, mx, nv);
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < nv; j++) row[j] *= inv;
        if (nv < n) memset(row + nv, 0, sizeof(float) * (size_t)(n - nv));
    }
    /* O = P V */
    rb_sgemm_st(0, 0, nr, d, nc, 1.0f, pb, n, vh, d, 0.0f, out + (size_t)r0 * d,
                d, gw);
}

static void naive_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    (void)flags;
    naive_attn *na = (naive_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal, rows = naive_rows(p);
    int nrb = (n + rows - 1) / rows;
    long bh_count = (long)p->batch * p->heads, tasks = bh_count * nrb;
    size_t hs = (size_t)n * d, nn = (size_t)n * n;
    float scale = 1.0f / sqrtf((float)d);
    rb_par_begin();
    /* blocks are independent: any schedule gives the same numbers; causal
     * blocks late in the sequence cost most, so they go first */
#pragma omp parallel for num_threads(naive_team(na)) schedule(dynamic, 1)
    for (long t = 0; t < tasks; t++) {
        long bh = t % bh_count;
        int rb = causal ? nrb - 1 - (int)(t / bh_count) : (int)(t / bh_count);
        int r0 = rb * rows;
        float *gw = na->ws + (size_t)omp_get_thread_num() * naive_ws_floats(p) + naive_gw_at(p);
        naive_forward_rows(out + bh * hs, na->p + bh * nn, q + bh * hs, k + bh * hs, v + bh * hs, r0,
                           RB_MIN(rows, n - r0), n, d, causal, scale, gw);
    }
    rb_par_end();
}

/* Backward share of query rows [r0, r0+nr) of one head: writes dQ rows,
 * adds into dk, dv (n, d) rows [0, nc). ds: (nr, nc) workspace. */
static void naive_backward_rows(float *dqh, float *dk, float *dv, float *ds, const float *ph, const float *gh,
                                const float *qh, const float *kh, const float *vh, const float *dd, int r0, int nr,
                                int n, int d, int causal, float scale, float *gw) {
    int nc = causal ? r0 + nr : n;
    const float *pb = ph + (size_t)r0 * n, *gb = gh + (size_t)r0 * d, *qb = qh + (size_t)r0 * d;
    /* dV += P^T dO */
    rb_sgemm_st(1, 0, nc, d, nr, 1.0f, pb, n, gb, d, 1.0f, dv, d, gw);
    /* dP = dO V^T, then dS = P * (dP - D) (zero where P is masked) */
    rb_sgemm_st(0, 1, nr, nc, d, 1.0f, gb, d, vh, d, 0.0f, ds, nc, gw);
    for (int i = 0; i < nr; i++) {
        const float *prow = pb + (size_t)i * n;
        float *row = ds + (size_t)i * nc, di = dd[r0 + i];
        for (int j = 0; j < nc; j++) row[j] = prow[j] * (row[j] - di);
    }
    /* dQ = dS K * scale; dK += dS^T Q * scale */
    rb_sgemm_st(0, 0, nr, d, nc, scale, ds, nc, kh, d, 0.0f,
                dqh + (size_t)r0 * d, d, gw);
    rb_sgemm_st(1, 0, nc, d, nr, scale, ds, nc, qb, d, 1.0f, dk, d, gw);
}

static void naive_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out) {
    naive_attn *na = (naive_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal, rows = naive_rows(p);
    int nrb = (n + rows - 1) / rows, team = naive_team(na);
    long bh_count = (long)p->batch * p->heads;
    size_t hs = (size_t)n * d, nn = (size_t)n * n, wsf = naive_ws_floats(p);
    float scale = 1.0f / sqrtf((float)d);
    /* D = rowsum(dO * O), in double */
#pragma omp parallel for num_threads(team) schedule(static)
    for (long r = 0; r < bh_count * n; r++) {
        double acc = 0.0;
        for (int c = 0; c < d; c++) acc += (double)out[(size_t)r * d + c] * dout[(size_t)r * d + c];
        na->dd[r] = (float)acc;
    }
    if (team == 1 || bh_count % team == 0 || bh_count >= 4L * team) {
        /* heads balance over threads: each thread owns whole heads, sums in
         * one order */
        memset(dk, 0, sizeof(float) * hs * (size_t)bh_count);
        memset(dv, 0, sizeof(float) * hs * (size_t)bh_count);
        rb_par_begin();
#pragma omp parallel for num_threads(team) schedule(dynamic, 1)
        for (long bh = 0; bh < bh_count; bh++) {
            float *ds = na->ws + (size_t)omp_get_thread_num() * wsf;
            size_t o = (size_t)bh * hs;
            for (int rb = 0; rb < nrb; rb++)
                naive_backward_rows(dq + o, dk + o, dv + o, ds, na->p + bh * nn, dout + o, q + o, k + o, v + o,
                                    na->dd + bh * n, rb * rows, RB_MIN(rows, n - rb * rows), n, d, causal, scale,
                                    ds + naive_gw_at(p));
        }
        rb_par_end();
        return;
    }
    /* heads do not balance: a head's row blocks are dealt to threads
     * statically, back and forth (0 1 1 0 ...) for causal balance; each
     * thread sums dK, dV into its own buffers, added up in thread order */
    for (long bh = 0; bh < bh_count; bh++) {
        size_t o = (size_t)bh * hs;
        int used = 1;
        rb_par_begin();
#pragma omp parallel num_threads(team)
        {
            int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            float *ds = na->ws + (size_t)tid * wsf, *pdk = ds + (size_t)rows * n, *pdv = pdk + hs;
#pragma omp single
            used = nt;
            memset(pdk, 0, sizeof(float) * 2 * hs);
            for (int rb = 0; rb < nrb; rb++) {
                int round = rb / nt, slot = rb % nt;
                if ((round % 2 == 0 ? slot : nt - 1 - slot) != tid) continue;
                naive_backward_rows(dq + o, pdk, pdv, ds, na->p + bh * nn, dout + o, q + o, k + o, v + o,
                                    na->dd + bh * n, rb * rows, RB_MIN(rows, n - rb * rows), n, d, causal, scale,
                                    ds + naive_gw_at(p));
            }
#pragma omp barrier
#pragma omp for schedule(static)
            for (size_t e = 0; e < hs; e++) {
                float sk = 0.0f, sv = 0.0f;
                for (int t = 0; t < used; t++) {
                    const float *w = na->ws + (size_t)t * wsf + (size_t)rows * n;
                    sk += w[e];
                    sv += w[hs + e];
                }
                dk[o + e] = sk;
                dv[o + e] = sv;
            }
        }
        rb_par_end();
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
