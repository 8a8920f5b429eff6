/* local.c: the Routing Transformer paper's local attention ("local"). The
 * sequence is cut into blocks of `window` tokens; the queries of a block
 * attend to the keys of their own block (causally when causal) and to all
 * keys of the previous block. Cost O(n * window * d), memory O(n).
 *
 * When seq is not a multiple of the window the LAST block is shorter (seq %
 * window tokens): nothing is padded, so no padding can reach any output, and
 * the last block still sees the whole previous block.
 *
 * Work is done on chunks of up to LOCAL_QB query rows inside one block: the
 * keys a chunk can see are one contiguous range of rows in the [B,H,n,d]
 * layout (previous block start .. end of the chunk, or of the block when not
 * causal), so S = Q K^T and O = P V are one sgemm each; exponentials go
 * through the vectorised rb_vexp_shift_sum with denominators in double.
 * Forward keeps only one log-sum-exp per query row; backward recomputes the
 * probabilities from it (flash style: one extra sgemm per chunk, instead of
 * holding n * 2w probabilities per head). Backward is deterministic without
 * atomics: the dK/dV rows of block j receive contributions from blocks j and
 * j+1, so even blocks run in parallel first and odd blocks after, and every
 * task accumulates its chunks in a fixed order. */
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

/* Query rows per chunk. 64 rows x up to 2*256 keys keeps a thread's score
 * and dP tiles (2 x 128 KiB) within L2 at the default window; overridable at
 * build time for tuning. */
#ifndef LOCAL_QB
#define LOCAL_QB 64
#endif

#define LOCAL_DEFAULT_WINDOW 256

extern const attn_backend attn_backend_local;

typedef struct {
    float *s;  /* (QB, 2w) scores, then probabilities */
    float *dp; /* (QB, 2w) backward: dP, then dS */
    float *r;  /* (QB) forward: 1 / denominator; backward: D = rowsum(dO * O) */
    float *gw; /* the chunk products' packing buffers (rb_sgemm_st), or NULL */
} local_ws;

typedef struct {
    attn a;
    int w;        /* effective block size: min(window, seq) */
    int qb;       /* query rows per chunk: min(LOCAL_QB, w) */
    int nthr;     /* threads the workspaces were made for */
    float *lse;   /* (B, H, n) log-sum-exp of each query row's scores */
    local_ws *ws; /* nthr per-thread workspaces */
    void *mem;    /* one allocation holding all of the floats above */
} local_attn;

static int local_eff_window(const attn_params *p) { return p->window < p->seq ? p->window : p->seq; }

static int local_validate(attn_params *p, rb_err *e) {
    if (p->seq <= 0) return rb_err_set(e, RB_EINVAL, "seq", "seq must be positive (got %d)", p->seq);
    if (p->window < 0) return rb_err_set(e, RB_EINVAL, "window", "window must not be negative (got %d)", p->window);
    if (p->window == 0) p->window = RB_MIN(LOCAL_DEFAULT_WINDOW, p->seq);
    /* window > seq is allowed: one block, i.e. dense attention */
    return 0;
}

/* Attended query-key pairs of one (batch, head). */
static double local_pairs_head(const attn_params *p) {
    int n = p->seq, w = local_eff_window(p);
    double pairs = 0.0;
    for (int j0 = 0; j0 < n; j0 += w) {
        double len = RB_MIN(w, n - j0), prev = j0 > 0 ? w : 0;
        pairs += p->causal ? len * prev + len * (len + 1) / 2 : len * (prev + len);
    }
    return pairs;
}

static double local_flops(const attn_params *p, int pass) {
    return (double)p->batch * p->heads * local_pairs_head(p) * (pass == ATTN_PASS_BWD ? 8.0 : 4.0) * p->head_dim;
}

/* Floats rounded to 16 (64 bytes) so threads never share a cache line. */
static size_t local_round(size_t x) { return (x + 15) & ~(size_t)15; }

/* packing for the chunk products: rows up to a chunk or its 2w keys,
 * columns up to 2w keys or head_dim */
static size_t local_gemm_floats(const attn_params *p) {
    int w = local_eff_window(p), qb = RB_MIN(LOCAL_QB, w);
    return local_round(rb_sgemm_st_floats(RB_MAX(qb, 2 * w), RB_MAX(2 * w, p->head_dim), 0));
}

static size_t local_ws_floats(const attn_params *p) {
    size_t w = (size_t)local_eff_window(p), qb = (size_t)RB_MIN(LOCAL_QB, (int)w);
    return 2 * local_round(qb * 2 * w) + local_round(qb) + local_gemm_floats(p);
}

/* What an instance holds: the saved log-sum-exp (one float per query row)
 * and per thread a score tile, a dP tile, one float per chunk row and the
 * products' packing buffers. q, k,
 * v, out and gradients belong to the caller and are not counted. */
static size_t local_bytes_for(const attn_params *p, int nthr) {
    size_t rows = (size_t)p->batch * p->heads * p->seq;
    return sizeof(float) * (local_round(rows) + (size_t)nthr * local_ws_floats(p)) + (size_t)nthr * sizeof(local_ws);
}

/* Threads an instance makes workspaces for (create and act_bytes agree). */
static int local_threads(void) { return RB_MAX(rb_threads(), omp_get_max_threads()); }

static size_t local_act_bytes(const attn_params *p) { return local_bytes_for(p, local_threads()); }

static attn *local_create(const attn_params *p, char *err, size_t errlen) {
    local_attn *la = attn_instance_new(sizeof *la, &attn_backend_local, p, err, errlen);
    if (!la) return NULL;
    int nthr = local_threads();
    size_t rows = (size_t)p->batch * p->heads * p->seq;
    size_t per = local_ws_floats(p);
    size_t total = local_round(rows) + (size_t)nthr * per;
    la->mem = rb_aligned_alloc(total * sizeof(float));
    la->ws = calloc((size_t)nthr, sizeof(local_ws));
    if (!la->mem || !la->ws) {
        free(la->mem);
        free(la->ws);
        free(la);
        rb_fail(err, errlen, "out of memory: local needs %.1f MiB of workspace",
                (double)total * sizeof(float) / (1 << 20));
        return NULL;
    }
    la->w = local_eff_window(p);
    la->qb = RB_MIN(LOCAL_QB, la->w);
    float *f = la->mem;
    la->lse = f;
    f += local_round(rows);
    size_t tile = local_round((size_t)la->qb * 2 * la->w);
    for (int t = 0; t < nthr; t++) {
        float *base = f + (size_t)t * per;
        la->ws[t].s = base;
        la->ws[t].dp = base + tile;
        la->ws[t].r = base + 2 * tile;
        la->ws[t].gw = local_gemm_floats(p) ? base + 2 * tile + local_round((size_t)la->qb) : NULL;
    }
    la->nthr = nthr;
    la->a.bytes = local_bytes_for(p, nthr);
    return &la->a;
}

static void local_destroy(attn *a) {
    local_attn *la = (local_attn *)a;
    free(la->mem);
    free(la->ws);
    free(la);
}

/* Threads for a region: what OpenMP would give, capped by the workspaces
 * (rb_set_threads may have grown since create). */
static int local_team(const local_attn *la) { return RB_MIN(omp_get_max_threads(), la->nthr); }

/* The keys visible to query rows [q0, q0+nq) of block j (block start j*w):
 * rows [*k0, *k1) of the head. Causal: row q0+i sees keys [k0, q0+i]. */
static void local_key_range(int *k0, int *k1, int q0, int nq, int j, int w, int n, int causal) {
    *k0 = j > 0 ? (j - 1) * w : 0;
    *k1 = causal ? q0 + nq : RB_MIN(n, (j + 1) * w);
}

/* Forward of one chunk: nq query rows against nk keys. out, q: (nq, d);
 * k, v: (nk, d) starting at the chunk's first visible key; lse: (nq). When
 * causal, row i sees the first vis0 + i keys, else all nk. */
static void local_forward_chunk(float *out, float *lse, const float *q, const float *k, const float *v, local_ws *w,
                                int nq, int nk, int vis0, int causal, int d, float scale) {
    float *s = w->s, *inv = w->r;
    /* S = Q K^T * scale: (nq, nk) with leading dimension nk */
    rb_sgemm_st(0, 1, nq, nk, d, scale, q, d, k, d, 0.0f, s, nk, w->gw);
    for (int i = 0; i < nq; i++) {
        float *srow = s + (size_t)i * nk;
        int nv = causal ? vis0 + i : nk;
        float mx = rb_vmax(srow, nv);
        double sum = rb_vexp_shift_sum(srow, srow, mx, nv);
        if (nv < nk) memset(srow + nv, 0, sizeof(float) * (size_t)(nk - nv));
        inv[i] = (float)(1.0 / sum);
        lse[i] = (float)(mx + log(sum));
    }
    /* O = P V, then each row divided by its denominator (d multiplies a row
     * instead of nk) */
    rb_sgemm_st(0, 0, nq, d, nk, 1.0f, s, nk, v, d, 0.0f, out, d, w->gw);
    for (int i = 0; i < nq; i++) {
        float *orow = out + (size_t)i * d, c = inv[i];
        for (int e = 0; e < d; e++) orow[e] *= c;
    }
}

static void local_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    (void)flags;
    local_attn *la = (local_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal, w = la->w, qb = la->qb;
    int nb = (n + w - 1) / w, cpb = (w + qb - 1) / qb; /* blocks; chunks per block */
    long bh_count = (long)p->batch * p->heads;
    long tasks = bh_count * nb * cpb;
    float scale = 1.0f / sqrtf((float)d);
    size_t hs = (size_t)n * d;
    rb_par_begin();
#pragma omp parallel num_threads(local_team(la))
    {
        local_ws *ws = &la->ws[omp_get_thread_num()];
        /* chunks are independent: any schedule gives the same numbers */
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            long bh = t / ((long)nb * cpb);
            int j = (int)(t / cpb % nb), r = (int)(t % cpb);
            int q0 = j * w + r * qb, bend = RB_MIN(n, (j + 1) * w);
            if (q0 >= bend) continue; /* past the end of a short last block */
            int nq = RB_MIN(qb, bend - q0), k0, k1;
            local_key_range(&k0, &k1, q0, nq, j, w, n, causal);
            size_t off = (size_t)bh * hs;
            local_forward_chunk(out + off + (size_t)q0 * d, la->lse + (size_t)bh * n + q0, q + off + (size_t)q0 * d,
                                k + off + (size_t)k0 * d, v + off + (size_t)k0 * d, ws, nq, k1 - k0, q0 - k0 + 1,
                                causal, d, scale);
        }
    }
    rb_par_end();
}

/* Backward of one chunk (same geometry as local_forward_chunk): overwrites
 * dq (nq, d) and adds into dk, dv (nk, d) from the chunk's first key. */
static void local_backward_chunk(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *q,
                                 const float *k, const float *v, const float *lse, local_ws *w, int nq, int nk,
                                 int vis0, int causal, int d, float scale) {
    float *s = w->s, *dp = w->dp, *dd = w->r;
    for (int i = 0; i < nq; i++) {
        const float *o = out + (size_t)i * d, *g = dout + (size_t)i * d;
        double acc = 0.0;
        for (int e = 0; e < d; e++) acc += (double)o[e] * g[e];
        dd[i] = (float)acc;
    }
    /* S = Q K^T * scale; dP = dO V^T */
    rb_sgemm_st(0, 1, nq, nk, d, scale, q, d, k, d, 0.0f, s, nk, w->gw);
    rb_sgemm_st(0, 1, nq, nk, d, 1.0f, dout, d, v, d, 0.0f, dp, nk, w->gw);
    /* P = exp(S - lse); dS = P * (dP - D); masked entries 0 */
    for (int i = 0; i < nq; i++) {
        float *srow = s + (size_t)i * nk, *dprow = dp + (size_t)i * nk;
        int nv = causal ? vis0 + i : nk;
        rb_softmax_bwd_row(srow, dprow, nv, nk, lse[i], dd[i]);
    }
    /* dV += P^T dO; dK += dS^T Q * scale; dQ = dS K * scale */
    rb_sgemm_st(1, 0, nk, d, nq, 1.0f, s, nk, dout, d, 1.0f, dv, d, w->gw);
    rb_sgemm_st(1, 0, nk, d, nq, scale, dp, nk, q, d, 1.0f, dk, d, w->gw);
    rb_sgemm_st(0, 0, nq, d, nk, scale, dp, nk, k, d, 0.0f, dq, d, w->gw);
}

static void local_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out) {
    local_attn *la = (local_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, causal = p->causal, w = la->w, qb = la->qb;
    int nb = (n + w - 1) / w;
    long bh_count = (long)p->batch * p->heads;
    size_t hs = (size_t)n * d, total = (size_t)bh_count * hs;
    float scale = 1.0f / sqrtf((float)d);
    int team = local_team(la);
    /* dq is overwritten chunk by chunk; dk, dv are accumulated */
    memset(dk, 0, total * sizeof(float));
    memset(dv, 0, total * sizeof(float));
    /* A task is one (batch, head, block) and writes dK/dV rows of its own
     * block and the previous one. Tasks of even blocks never share rows, nor
     * do tasks of odd blocks: two phases with a barrier between them, and
     * each row's contributions arrive in an order fixed by the block index. */
    for (int phase = 0; phase < 2; phase++) {
        long per_bh = (nb - phase + 1) / 2; /* blocks phase, phase+2, ... */
        long tasks = bh_count * per_bh;
        if (tasks == 0) continue;
        rb_par_begin();
#pragma omp parallel num_threads(team)
        {
            local_ws *ws = &la->ws[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < tasks; t++) {
                long bh = t % bh_count;
                int j = phase + 2 * (int)(t / bh_count);
                size_t off = (size_t)bh * hs;
                const float *lse = la->lse + (size_t)bh * n;
                int bend = RB_MIN(n, (j + 1) * w);
                for (int q0 = j * w; q0 < bend; q0 += qb) {
                    int nq = RB_MIN(qb, bend - q0), k0, k1;
                    local_key_range(&k0, &k1, q0, nq, j, w, n, causal);
                    size_t qo = off + (size_t)q0 * d, ko = off + (size_t)k0 * d;
                    local_backward_chunk(dq + qo, dk + ko, dv + ko, dout + qo, out + qo, q + qo, k + ko, v + ko,
                                         lse + q0, ws, nq, k1 - k0, q0 - k0 + 1, causal, d, scale);
                }
            }
        }
        rb_par_end();
    }
}

static int local_equals_dense(const attn_params *p) { return p->window >= p->seq; }

const attn_backend attn_backend_local = {
    .name = "local",
    .description = "blocks of `window` tokens attend to their own block (causally) and the previous one, "
                   "O(n w d); a seq not divisible by window gets a shorter last block (no padding)",
    .uses = ATTN_USES_WINDOW,
    .validate = local_validate,
    .create = local_create,
    .forward = local_forward,
    .backward = local_backward,
    .flops = local_flops,
    .act_bytes = local_act_bytes,
    .stats = NULL,
    .equals_dense = local_equals_dense,
    .destroy = local_destroy,
};
