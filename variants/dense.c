/* dense.c: exact softmax attention, tiled with an online softmax
 * (FlashAttention's scheme on the CPU). Forward walks key tiles for a block
 * of queries, keeping a running row maximum and denominator, so the n x n
 * matrix never exists; it saves one log-sum-exp per query row. Backward
 * (FlashAttention-2) recomputes each tile's probabilities from the saved
 * log-sum-exp. Activation memory is O(n): this is the honest speed baseline
 * the sparse backends are measured against. Tile products go through
 * rb_sgemm_st (util/gemm.h: our AVX-512 kernel, single-threaded inside our
 * OpenMP regions, packing into each thread's workspace). */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/instance.h"
#include "util/common.h"
#include "util/gemm.h"
#include "util/threads.h"
#include "util/vexp.h"

/* Query rows per block and keys per tile. A 256 x 256 score tile (256 KiB)
 * and the block's output accumulator stay in L2; bigger query blocks pack
 * each K and V tile for more rows. Measured on the 2-core development VM
 * (per CPU-second, forward at seq 4096): 128..512 x 128..512 all within a few
 * per cent of each other, 256 x 256 among the best. Overridable at build time. */
#ifndef DENSE_BQ
#define DENSE_BQ 256
#endif
#ifndef DENSE_BK
#define DENSE_BK 256
#endif
/* Rows per sub-block on the causal diagonal: the key tile that crosses the
 * diagonal is done in row slices that stop at their last visible key, so
 * about DENSE_SUB/DENSE_BQ of the masked triangle is computed instead of all
 * of it (6% of the work at seq 4096 with 256-row blocks). */
#ifndef DENSE_SUB
#define DENSE_SUB 64
#endif

extern const attn_backend attn_backend_dense;

typedef struct {
    float *s;    /* (BQ, BK) scores, then probabilities */
    float *dp;   /* (BQ, BK) backward: dP, then dS */
    float *o;    /* (BQ, d) forward output accumulator */
    double *l;   /* (BQ) running softmax denominators */
    float *m;    /* (BQ) running row maxima */
    float *dq;   /* (n, d) backward: this thread's partial dQ (one head at a time), or NULL */
    float *gw;   /* the tile products' packing buffers (rb_sgemm_st) */
} dense_ws;

typedef struct {
    attn a;
    int nthr;      /* threads the workspaces were made for */
    float *lse;    /* (B, H, n) log-sum-exp of each query row's scores */
    float *dd;     /* (B, H, n) backward: D = rowsum(dO * O) */
    dense_ws *ws;  /* nthr per-thread workspaces */
    void *mem;     /* one allocation holding all of the above floats */
} dense_attn;

static int dense_validate(attn_params *p, rb_err *e) {
    (void)e;
    (void)p;
    return 0;
}

static double dense_pairs(const attn_params *p) {
    double n = p->seq;
    double per_head = p->causal ? n * (n + 1) / 2 : n * n;
    return (double)p->batch * p->heads * per_head;
}

static double dense_flops(const attn_params *p, int pass) {
    return dense_pairs(p) * (pass == ATTN_PASS_BWD ? 8.0 : 4.0) * p->head_dim;
}

/* Backward hands whole heads to threads when that balances (heads a
 * multiple of the threads, or many heads); otherwise it splits each head's
 * key tiles across threads, which needs a per-thread partial dQ. */
static int dense_split_heads(long heads, int nthr) { return nthr > 1 && heads % nthr != 0 && heads < 4L * nthr; }

static int dense_needs_dq_partial(const attn_params *p, int nthr) {
    return dense_split_heads((long)p->batch * p->heads, nthr);
}

/* Floats one thread's workspace holds, each piece rounded to 16 floats (64
 * bytes) so no two threads share a cache line. */
static size_t dense_round(size_t x) { return (x + 15) & ~(size_t)15; }

/* Tiles never exceed the sequence: short sequences get small workspaces. */
static size_t dense_bq(const attn_params *p) { return (size_t)RB_MIN(DENSE_BQ, p->seq); }
static size_t dense_tile(const attn_params *p) { return dense_round(dense_bq(p) * (size_t)RB_MIN(DENSE_BK, p->seq)); }

/* packing for the tile products: rows up to a query block or a key tile,
 * columns up to a key tile or head_dim */
static size_t dense_gemm_floats(const attn_params *p) {
    int bk = RB_MIN(DENSE_BK, p->seq), rows = RB_MAX((int)dense_bq(p), bk);
    return dense_round(rb_sgemm_st_floats(rows, RB_MAX(bk, p->head_dim), 0));
}

static size_t dense_ws_floats(const attn_params *p, int nthr) {
    size_t d = (size_t)p->head_dim, bq = dense_bq(p);
    size_t f = 2 * dense_tile(p) + dense_round(bq * d) + dense_round(2 * bq) /* doubles l */ + dense_round(bq) +
               dense_gemm_floats(p);
    if (dense_needs_dq_partial(p, nthr)) f += dense_round((size_t)p->seq * d);
    return f;
}

/* act_bytes counts what an instance holds: the saved log-sum-exp and the
 * backward's D (one float each per query row), and for each thread a score
 * tile, a dP tile, an output accumulator, row maxima and denominators, the
 * tile products' packing buffers, plus
 * (when batch*heads does not balance over the threads) a partial dQ of one
 * head. It does not
 * count q, k, v, out or their gradients, which the caller owns. */
static size_t dense_bytes_for(const attn_params *p, int nthr) {
    size_t rows = (size_t)p->batch * p->heads * p->seq;
    return sizeof(float) * (2 * dense_round(rows) + (size_t)nthr * dense_ws_floats(p, nthr)) +
           (size_t)nthr * sizeof(dense_ws);
}

static size_t dense_act_bytes(const attn_params *p) { return dense_bytes_for(p, rb_threads()); }

static attn *dense_create(const attn_params *p, char *err, size_t errlen) {
    dense_attn *da = attn_instance_new(sizeof *da, &attn_backend_dense, p, err, errlen);
    if (!da) return NULL;
    int nthr = RB_MAX(rb_threads(), omp_get_max_threads());
    size_t rows = (size_t)p->batch * p->heads * p->seq;
    size_t per = dense_ws_floats(p, nthr);
    size_t total = 2 * dense_round(rows) + (size_t)nthr * per;
    da->mem = rb_aligned_alloc(total * sizeof(float));
    da->ws = calloc((size_t)nthr, sizeof(dense_ws));
    if (!da->mem || !da->ws) {
        free(da->mem);
        free(da->ws);
        free(da);
        rb_fail(err, errlen, "out of memory: dense needs %.1f MiB of workspace",
                (double)total * sizeof(float) / (1 << 20));
        return NULL;
    }
    float *f = da->mem;
    da->lse = f;
    f += dense_round(rows);
    da->dd = f;
    f += dense_round(rows);
    size_t d = (size_t)p->head_dim;
    for (int t = 0; t < nthr; t++) {
        dense_ws *w = &da->ws[t];
        float *base = f + (size_t)t * per;
        w->s = base;
        base += dense_tile(p);
        w->dp = base;
        base += dense_tile(p);
        w->o = base;
        base += dense_round(dense_bq(p) * d);
        w->l = (double *)base;
        base += dense_round(2 * dense_bq(p));
        w->m = base;
        base += dense_round(dense_bq(p));
        w->gw = dense_gemm_floats(p) ? base : NULL;
        base += dense_gemm_floats(p);
        w->dq = dense_needs_dq_partial(p, nthr) ? base : NULL;
    }
    da->nthr = nthr;
    da->a.bytes = total * sizeof(float) + (size_t)nthr * sizeof(dense_ws);
    return &da->a;
}

static void dense_destroy(attn *a) {
    dense_attn *da = (dense_attn *)a;
    free(da->mem);
    free(da->ws);
    free(da);
}

/* Threads to use in a region: what OpenMP would give, capped by the number
 * of workspaces (rb_set_threads may have grown since create). */
static int dense_team(const dense_attn *da) { return RB_MIN(omp_get_max_threads(), da->nthr); }

/* y[0..n) *= s */
static inline void dense_scale_row(float *y, float s, int n) {
    int i = 0;
#ifdef __AVX2__
    __m256 vs = _mm256_set1_ps(s);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vs));
#endif
    for (; i < n; i++) y[i] *= s;
}

/* One tile of the online softmax: query rows [i0, i0+ni) of the block (at
 * sequence positions qpos..qpos+ni) against keys [k0, k0+nk). Updates those
 * rows' running max m, denominator l and unnormalised output o. q: (ni, d)
 * rows of the tile; k, v: (n, d) of the head. */
static void dense_forward_tile(dense_ws *w, const float *q, const float *k, const float *v, int i0, int ni, int qpos,
                               int k0, int nk, int d, int causal, float scale) {
    float *s = w->s, *o = w->o + (size_t)i0 * d, *m = w->m + i0;
    double *l = w->l + i0;
    /* S = Q K^T * scale: (ni, nk) with leading dimension nk */
    rb_sgemm_st(0, 1, ni, nk, d, scale, q, d, k + (size_t)k0 * d, d, 0.0f, s, nk, w->gw);
    for (int i = 0; i < ni; i++) {
        float *srow = s + (size_t)i * nk;
        /* causal: position qpos+i sees keys <= qpos+i, i.e. columns < qpos+i-k0+1 */
        int nv = causal ? RB_MIN(nk, qpos + i - k0 + 1) : nk;
        if (nv <= 0) {
            memset(srow, 0, sizeof(float) * (size_t)nk);
            continue;
        }
        float mx = rb_vmax(srow, nv);
        float mnew = mx > m[i] ? mx : m[i];
        double sum = rb_vexp_shift_sum(srow, srow, mnew, nv);
        if (nv < nk) memset(srow + nv, 0, sizeof(float) * (size_t)(nk - nv));
        if (mnew != m[i]) {
            /* the running max moved: rescale what was accumulated so far
             * (nothing yet while m is -inf: o is zero and l is 0) */
            if (m[i] != -INFINITY) {
                float alpha = rb_expf(m[i] - mnew);
                l[i] *= alpha;
                dense_scale_row(o + (size_t)i * d, alpha, d);
            }
            m[i] = mnew;
        }
        l[i] += sum;
    }
    /* O += P V */
    rb_sgemm_st(0, 0, ni, d, nk, 1.0f, s, nk, v + (size_t)k0 * d, d, 1.0f, o, d, w->gw);
}

/* One block of query rows [q0, q0+nq) of one head against all its visible
 * keys. out, q: (nq, d) slices; k, v: (n, d) of the head; lse: (nq). */
static void dense_forward_block(float *out, float *lse, const float *q, const float *k, const float *v, dense_ws *w,
                                int q0, int nq, int n, int d, int causal, float scale) {
    float *o = w->o, *m = w->m;
    double *l = w->l;
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0;
    }
    memset(o, 0, sizeof(float) * (size_t)nq * d);
    int kend = causal ? q0 + nq : n; /* keys this block can see: [0, kend) */
    for (int k0 = 0; k0 < kend; k0 += DENSE_BK) {
        int nk = RB_MIN(DENSE_BK, kend - k0);
        if (!causal || k0 + nk <= q0 + 1) {
            /* every row sees every key of the tile */
            dense_forward_tile(w, q, k, v, 0, nq, q0, k0, nk, d, causal, scale);
            continue;
        }
        for (int i0 = 0; i0 < nq; i0 += DENSE_SUB) {
            int ni = RB_MIN(DENSE_SUB, nq - i0);
            int nki = RB_MIN(nk, q0 + i0 + ni - k0); /* keys up to the slice's last row */
            if (nki <= 0) continue;
            dense_forward_tile(w, q + (size_t)i0 * d, k, v, i0, ni, q0 + i0, k0, nki, d, causal, scale);
        }
    }
    for (int i = 0; i < nq; i++) {
        float inv = (float)(1.0 / l[i]);
        const float *orow = o + (size_t)i * d;
        float *dst = out + (size_t)i * d;
        for (int c = 0; c < d; c++) dst[c] = orow[c] * inv;
        lse[i] = (float)(m[i] + log(l[i]));
    }
}

static void dense_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    (void)flags;
    dense_attn *da = (dense_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal;
    int nqb = (n + DENSE_BQ - 1) / DENSE_BQ;
    long bh_count = (long)p->batch * p->heads;
    long tasks = bh_count * nqb;
    float scale = 1.0f / sqrtf((float)d);
    size_t hs = (size_t)n * d;
    rb_par_begin();
#pragma omp parallel num_threads(dense_team(da))
    {
        dense_ws *w = &da->ws[omp_get_thread_num()];
        /* Each task is independent, so any schedule gives the same numbers.
         * Causal blocks late in the sequence cost most: hand them out first. */
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            long bh = t % bh_count;
            int qb = causal ? nqb - 1 - (int)(t / bh_count) : (int)(t / bh_count);
            int q0 = qb * DENSE_BQ, nq = RB_MIN(DENSE_BQ, n - q0);
            size_t off = (size_t)bh * hs;
            dense_forward_block(out + off + (size_t)q0 * d, da->lse + (size_t)bh * n + q0, q + off + (size_t)q0 * d,
                                k + off, v + off, w, q0, nq, n, d, causal, scale);
        }
    }
    rb_par_end();
}

/* Query rows [q0, q0+nq) against keys [k0, k0+nk) of one head (positions
 * in the sequence; causal masking by position). Adds this pair of tiles'
 * share into dK, dV rows [k0, k0+nk) and dqacc rows [q0, q0+nq). All
 * arrays are the head's: (n, d), lse and dd (n). */
static void dense_backward_pair(float *dqacc, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *lse, const float *dd, dense_ws *w, int q0, int nq, int k0,
                                int nk, int d, int causal, float scale) {
    float *s = w->s, *dp = w->dp;
    const float *qb = q + (size_t)q0 * d, *dob = dout + (size_t)q0 * d;
    const float *kt = k + (size_t)k0 * d, *vt = v + (size_t)k0 * d;
    /* S = Q K^T * scale; dP = dO V^T */
    rb_sgemm_st(0, 1, nq, nk, d, scale, qb, d, kt, d, 0.0f, s, nk, w->gw);
    rb_sgemm_st(0, 1, nq, nk, d, 1.0f, dob, d, vt, d, 0.0f, dp, nk, w->gw);
    /* P = exp(S - lse); dS = P * (dP - D); zero where masked */
    for (int i = 0; i < nq; i++) {
        float *srow = s + (size_t)i * nk, *dprow = dp + (size_t)i * nk;
        int nv = causal ? RB_MIN(nk, q0 + i - k0 + 1) : nk;
        if (nv < 0) nv = 0;
        rb_softmax_bwd_row(srow, dprow, nv, nk, lse[q0 + i], dd[q0 + i]);
    }
    /* dV += P^T dO; dK += dS^T Q * scale; dQ += dS K * scale */
    rb_sgemm_st(1, 0, nk, d, nq, 1.0f, s, nk, dob, d, 1.0f, dv + (size_t)k0 * d, d, w->gw);
    rb_sgemm_st(1, 0, nk, d, nq, scale, dp, nk, qb, d, 1.0f, dk + (size_t)k0 * d, d, w->gw);
    rb_sgemm_st(0, 0, nq, d, nk, scale, dp, nk, kt, d, 1.0f,
                dqacc + (size_t)q0 * d, d, w->gw);
}

/* One key tile [k0, k0+nk) of one head against every query block that sees
 * it: accumulates dK, dV of the tile (owned by the caller) and adds this
 * tile's share of dQ into dqacc (n, d). All pointers are the head's (n, d)
 * arrays; lse, dd: (n). Query blocks crossing the causal diagonal go in
 * DENSE_SUB-row slices that stop at their last visible key, as in forward. */
static void dense_backward_tile(float *dqacc, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *lse, const float *dd, dense_ws *w, int k0, int nk, int n,
                                int d, int causal, float scale) {
    /* causal: queries before k0 see none of the tile */
    int qstart = causal ? (k0 / DENSE_BQ) * DENSE_BQ : 0;
    for (int q0 = qstart; q0 < n; q0 += DENSE_BQ) {
        int nq = RB_MIN(DENSE_BQ, n - q0);
        if (!causal || q0 >= k0 + nk - 1) {
            dense_backward_pair(dqacc, dk, dv, dout, q, k, v, lse, dd, w, q0, nq, k0, nk, d, causal, scale);
            continue;
        }
        for (int r0 = q0; r0 < q0 + nq; r0 += DENSE_SUB) {
            int ni = RB_MIN(DENSE_SUB, q0 + nq - r0);
            int nki = RB_MIN(nk, r0 + ni - k0); /* keys up to the slice's last row */
            if (nki <= 0) continue;
            dense_backward_pair(dqacc, dk, dv, dout, q, k, v, lse, dd, w, r0, ni, k0, nki, d, causal, scale);
        }
    }
}

static void dense_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out) {
    dense_attn *da = (dense_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal;
    long bh_count = (long)p->batch * p->heads;
    size_t hs = (size_t)n * d, total = (size_t)bh_count * hs;
    float scale = 1.0f / sqrtf((float)d);
    int nkb = (n + DENSE_BK - 1) / DENSE_BK;
    int team = dense_team(da);
    memset(dk, 0, total * sizeof(float));
    memset(dv, 0, total * sizeof(float));
    /* D = rowsum(dO * O), in double */
#pragma omp parallel for num_threads(team) schedule(static)
    for (long r = 0; r < bh_count * n; r++) {
        const float *o = out + (size_t)r * d, *g = dout + (size_t)r * d;
        double acc = 0.0;
        for (int c = 0; c < d; c++) acc += (double)o[c] * g[c];
        da->dd[r] = (float)acc;
    }
    if (!dense_split_heads(bh_count, team) || da->ws[0].dq == NULL) {
        /* Heads balance over threads: each thread owns whole heads and
         * writes their dQ directly; each head's sums run in one fixed order. */
        memset(dq, 0, total * sizeof(float));
        rb_par_begin();
#pragma omp parallel num_threads(team)
        {
            dense_ws *w = &da->ws[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
            for (long bh = 0; bh < bh_count; bh++) {
                size_t off = (size_t)bh * hs;
                for (int kb = 0; kb < nkb; kb++) {
                    int k0 = kb * DENSE_BK, nk = RB_MIN(DENSE_BK, n - k0);
                    dense_backward_tile(dq + off, dk + off, dv + off, dout + off, q + off, k + off, v + off,
                                        da->lse + (size_t)bh * n, da->dd + (size_t)bh * n, w, k0, nk, n, d, causal,
                                        scale);
                }
            }
        }
        rb_par_end();
        return;
    }
    /* Heads do not balance: split each head's key tiles across threads
     * (static, so the split depends only on the thread count; dealt out
     * back and forth, 0 1 1 0 0 1 ..., because causal tiles near the start
     * see the most queries); each thread adds its dQ share into its own
     * buffer and the buffers are summed in thread order. */
    for (long bh = 0; bh < bh_count; bh++) {
        size_t off = (size_t)bh * hs;
        int used = 0;
        rb_par_begin();
#pragma omp parallel num_threads(team)
        {
            int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            dense_ws *w = &da->ws[tid];
#pragma omp single
            used = nt;
            memset(w->dq, 0, hs * sizeof(float));
            for (int kb = 0; kb < nkb; kb++) {
                int round = kb / nt, slot = kb % nt;
                if ((round % 2 == 0 ? slot : nt - 1 - slot) != tid) continue;
                int k0 = kb * DENSE_BK, nk = RB_MIN(DENSE_BK, n - k0);
                dense_backward_tile(w->dq, dk + off, dv + off, dout + off, q + off, k + off, v + off,
                                    da->lse + (size_t)bh * n, da->dd + (size_t)bh * n, w, k0, nk, n, d, causal, scale);
            }
#pragma omp barrier
#pragma omp for schedule(static)
            for (size_t e = 0; e < hs; e++) {
                float acc = 0.0f;
                for (int t = 0; t < used; t++) acc += da->ws[t].dq[e];
                dq[off + e] = acc;
            }
        }
        rb_par_end();
    }
}

const attn_backend attn_backend_dense = {
    .name = "dense",
    .description = "exact softmax attention, tiled online softmax (FlashAttention-2 on the CPU), O(n) memory",
    .uses = 0,
    .validate = dense_validate,
    .create = dense_create,
    .forward = dense_forward,
    .backward = dense_backward,
    .flops = dense_flops,
    .act_bytes = dense_act_bytes,
    .stats = NULL,
    .equals_dense = NULL,
    .destroy = dense_destroy,
};
