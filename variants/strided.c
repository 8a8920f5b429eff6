/* strided.c: the Sparse Transformer's strided attention (Child, Gray, Radford,
 * Sutskever 2019, "Generating Long Sequences with Sparse Transformers",
 * section 4.2, the "strided" pattern; not the "fixed" one), as a backend
 * ("strided"). With l = stride the paper factorises attention into
 *     A(1)_i = {j : max(0, i - l) <= j <= i}      (the previous l positions)
 *     A(2)_i = {j : (i - j) mod l = 0, j <= i}     (every l-th position)
 * and, in its "attention heads" form, gives each its own heads: here heads
 * [0, heads - strided_heads) attend A(1) and the last strided_heads heads
 * attend A(2) (auto: half of them, the authors' sparsity_strided_num_heads).
 * Not causal: the same sets mirrored, |i - j| <= l and (i - j) mod l = 0.
 *
 * A(2) heads split the sequence into its l residue classes: class r is rows
 * r, r + l, r + 2l, ... and is one dense (causal) attention of ceil(n / l)
 * rows, used in place through a leading dimension of l * d. A(1) heads run
 * on bands of max(l, 64) query rows against the keys within l of them. Both
 * go through core/attn/gattn.c (sgemm tiles, softmax on the visible run
 * only, flash-style backward from one log-sum-exp per row). Backward is
 * deterministic without atomics: residue classes write disjoint rows, and
 * band b of an A(1) head writes key rows of bands b-1..b (b-1..b+1 when not
 * causal), so bands run in 2 (3) phases by b mod 2 (3).
 *
 * Cost per head: A(1) about n (l + 1) pairs, A(2) about n^2 / (2 l); with
 * l = sqrt(n) (the default) O(n sqrt(n) d). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/gattn.h"
#include "attn/instance.h"
#include "util/common.h"
#include "util/threads.h"

extern const attn_backend attn_backend_strided;

typedef struct {
    attn a;
    int l, sh, lh;   /* stride, strided heads, local (A(1)) heads */
    int band;        /* query rows per A(1) band: max(l, 64), at most seq */
    int mk_max;      /* most keys one block can have */
    int nthr;
    float *lse;      /* (B, H, n) */
    int *pos;        /* (n) 0, 1, ..., n-1: positions of a band */
    int *rpos;       /* (nthr, ceil(n/l)) positions of a residue class */
    float *D;        /* (nthr, mk_max) backward: rowsum(dout * out) of a block's queries */
    gattn_ws *ws;    /* (nthr) */
    void *mem;
} strided_attn;

static int sd_stride(const attn_params *p) {
    return p->stride > 0 ? p->stride : RB_MAX(1, (int)lround(sqrt((double)p->seq)));
}

static int sd_validate(attn_params *p, rb_err *e) {
    if (p->seq <= 0) return rb_err_set(e, RB_EINVAL, "seq", "seq must be positive (got %d)", p->seq);
    if (p->stride < 0) return rb_err_set(e, RB_EINVAL, "stride", "stride must not be negative (got %d)", p->stride);
    if (p->strided_heads > p->heads)
        return rb_err_set(e, RB_EINVAL, "strided_heads", "strided_heads (%d) must not exceed heads (%d)",
                          p->strided_heads, p->heads);
    if (p->strided_heads < -1)
        return rb_err_set(e, RB_EINVAL, "strided_heads", "strided_heads must be auto or >= 0 (got %d)",
                          p->strided_heads);
    p->stride = sd_stride(p);
    if (p->strided_heads < 0) p->strided_heads = p->heads / 2;
    return 0;
}

/* Attended pairs of one A(1) head and of one A(2) head, from the definition. */
static void sd_pairs(const attn_params *p, double *local, double *strided) {
    long n = p->seq, l = sd_stride(p);
    double a = 0, s = 0;
    for (long i = 0; i < n; i++) {
        a += RB_MIN(i, l) + 1 + (p->causal ? 0 : RB_MIN(n - 1 - i, l));
        s += p->causal ? i / l + 1 : (n - 1 - i % l) / l + 1;
    }
    *local = a, *strided = s;
}

static double sd_flops(const attn_params *p, int pass) {
    double a, s;
    sd_pairs(p, &a, &s);
    int sh = p->strided_heads < 0 ? p->heads / 2 : p->strided_heads;
    double pairs = (double)p->batch * ((p->heads - sh) * a + sh * s);
    return pairs * (pass == ATTN_PASS_BWD ? 8.0 : 4.0) * p->head_dim;
}

static int sd_band(int l, int n) { return RB_MIN(RB_MAX(l, GATTN_TQ), n); }

/* Keys one block can have: a band and l on each side, or a residue class. */
static int sd_mk_max(const attn_params *p) {
    int n = p->seq, l = sd_stride(p), band = sd_band(l, n);
    long span = (long)band + l + (p->causal ? 0 : l);
    return (int)RB_MAX(RB_MIN(span, (long)n), (long)(n + l - 1) / l);
}

/* The one allocation: lse, positions, per-thread residue positions and
 * kernel workspaces. With base NULL only the size. */
static size_t sd_layout(void *inst, const attn_params *p, int nthr, char *base) {
    strided_attn *S = inst;
    gattn_arena ar = {base, 0};
    strided_attn tmp;
    strided_attn *T = base ? S : &tmp;
    size_t rows = (size_t)p->batch * p->heads * p->seq;
    int l = sd_stride(p), nres = (p->seq + l - 1) / l;
    T->lse = gattn_take(&ar, rows * sizeof(float));
    T->pos = gattn_take(&ar, (size_t)p->seq * sizeof(int));
    T->rpos = gattn_take(&ar, (size_t)nthr * nres * sizeof(int));
    T->D = gattn_take(&ar, (size_t)nthr * sd_mk_max(p) * sizeof(float));
    T->ws = gattn_take(&ar, (size_t)nthr * sizeof(gattn_ws));
    for (int t = 0; t < nthr; t++) {
        size_t b = gattn_ws_bytes(base ? &T->ws[t] : NULL, base ? base + ar.used : NULL, sd_mk_max(p), p->head_dim);
        gattn_take(&ar, b);
    }
    return ar.used;
}

static size_t sd_act_bytes(const attn_params *p) { return attn_block_bytes(sd_layout, p); }

static attn *sd_create(const attn_params *p, char *err, size_t errlen) {
    strided_attn *S = attn_instance_new(sizeof *S, &attn_backend_strided, p, err, errlen);
    if (!S || !(S->mem = attn_block_alloc(S, sd_layout, &S->nthr, err, errlen))) return NULL;
    for (int i = 0; i < p->seq; i++) S->pos[i] = i;
    S->l = sd_stride(p), S->sh = p->strided_heads, S->lh = p->heads - p->strided_heads;
    S->band = sd_band(S->l, p->seq);
    S->mk_max = sd_mk_max(p);
    return &S->a;
}

static void sd_destroy(attn *a) {
    strided_attn *S = (strided_attn *)a;
    free(S->mem);
    free(S);
}

/* Block of task (bh, idx): an A(1) band idx or an A(2) residue class idx of
 * head bh % H. Fills b's geometry for tensors whose head starts at offset. */
static void sd_block(const strided_attn *S, long bh, int idx, gattn_block *b, gattn_mask *m, int *rpos) {
    const attn_params *p = &S->a.p;
    int n = p->seq, d = p->head_dim, h = (int)(bh % p->heads), l = S->l;
    memset(b, 0, sizeof *b);
    b->d = d;
    if (h < S->lh) { /* A(1): rows [q0, q0 + band), keys within l of them */
        int q0 = idx * S->band, k0 = RB_MAX(0, q0 - l);
        b->mq = RB_MIN(S->band, n - q0);
        int k1 = p->causal ? q0 + b->mq : RB_MIN(n, q0 + b->mq + l);
        b->mk = k1 - k0;
        b->qpos = S->pos + q0, b->kpos = S->pos + k0;
        b->ldq = b->ldk = b->ldo = d;
        m->lo = -l, m->hi = p->causal ? 0 : l;
    } else { /* A(2): rows idx, idx + l, ... */
        b->mq = b->mk = (n - 1 - idx) / l + 1;
        for (int r = 0; r < b->mq; r++) rpos[r] = idx + r * l;
        b->qpos = b->kpos = rpos;
        b->ldq = b->ldk = b->ldo = l * d;
        m->lo = INT_MIN, m->hi = p->causal ? 0 : INT_MAX;
    }
    m->self_last = 0;
}

/* Where a block's log-sum-exps live in the head's n floats: a band at its
 * rows, residue class r after the classes before it (contiguous). */
static size_t sd_lse_off(const strided_attn *S, const gattn_block *b, int idx) {
    int n = S->a.p.seq, l = S->l;
    if (b->ldq == S->a.p.head_dim) return (size_t)b->qpos[0];
    return (size_t)idx * (n / l) + (size_t)RB_MIN(idx, n % l);
}

/* Row offset (in floats) of a block's first query and first key. */
static void sd_offsets(const gattn_block *b, long bh, int n, size_t *qo, size_t *ko) {
    size_t head = (size_t)bh * n * b->d;
    *qo = head + (size_t)b->qpos[0] * b->d;
    *ko = head + (size_t)b->kpos[0] * b->d;
}

typedef struct {
    const float *q, *k, *v, *out, *dout;
    float *dq, *dk, *dv;
} sd_tensors;

static int sd_tasks_per_head(const strided_attn *S, int h) {
    int n = S->a.p.seq;
    return h < S->lh ? (n + S->band - 1) / S->band : RB_MIN(S->l, n);
}

static void sd_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    (void)flags;
    strided_attn *S = (strided_attn *)a;
    const attn_params *p = &a->p;
    int n = p->seq, H = p->heads, per = RB_MAX(sd_tasks_per_head(S, 0), sd_tasks_per_head(S, H - 1));
    long tasks = (long)p->batch * H * per;
    float scale = 1.0f / sqrtf((float)p->head_dim);
    rb_par_begin();
#pragma omp parallel num_threads(RB_MIN(omp_get_max_threads(), S->nthr))
    {
        int t = omp_get_thread_num(), nres = (n + S->l - 1) / S->l;
#pragma omp for schedule(dynamic, 1)
        for (long i = 0; i < tasks; i++) {
            long bh = i / per;
            int idx = (int)(i % per);
            if (idx >= sd_tasks_per_head(S, (int)(bh % H))) continue;
            gattn_block b;
            gattn_mask m;
            size_t qo, ko;
            sd_block(S, bh, idx, &b, &m, S->rpos + (size_t)t * nres);
            sd_offsets(&b, bh, n, &qo, &ko);
            b.q = q + qo, b.k = k + ko, b.v = v + ko, b.o = out + qo;
            /* lse of a residue class is strided too: keep it per class, contiguous */
            b.lse = S->lse + (size_t)bh * n + sd_lse_off(S, &b, idx);
            gattn_forward(&b, &m, scale, &S->ws[t]);
        }
    }
    rb_par_end();
}

/* Backward of one block: D from dout and out, then the kernel. */
static void sd_backward_block(strided_attn *S, long bh, int idx, const sd_tensors *x, int t, float scale) {
    const attn_params *p = &S->a.p;
    int n = p->seq, d = p->head_dim, nres = (n + S->l - 1) / S->l;
    gattn_block b;
    gattn_mask m;
    size_t qo, ko;
    sd_block(S, bh, idx, &b, &m, S->rpos + (size_t)t * nres);
    sd_offsets(&b, bh, n, &qo, &ko);
    float *D = S->D + (size_t)t * S->mk_max;
    for (int r = 0; r < b.mq; r++) {
        const float *o = x->out + qo + (size_t)r * b.ldo, *g = x->dout + qo + (size_t)r * b.ldo;
        double acc = 0.0;
        for (int e = 0; e < d; e++) acc += (double)o[e] * g[e];
        D[r] = (float)acc;
    }
    b.q = x->q + qo, b.k = x->k + ko, b.v = x->v + ko, b.o = x->dq + qo;
    b.dout = x->dout + qo, b.D = D, b.dk = x->dk + ko, b.dv = x->dv + ko;
    b.lse = S->lse + (size_t)bh * n + sd_lse_off(S, &b, idx);
    gattn_backward(&b, &m, scale, &S->ws[t]);
}

static void sd_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *out) {
    strided_attn *S = (strided_attn *)a;
    const attn_params *p = &a->p;
    int H = p->heads, per = RB_MAX(sd_tasks_per_head(S, 0), sd_tasks_per_head(S, H - 1));
    int phases = p->causal ? 2 : 3;
    size_t total = (size_t)p->batch * H * p->seq * p->head_dim;
    /* dq rows are written by their one band or class; dk, dv accumulate */
    memset(dk, 0, total * sizeof(float));
    memset(dv, 0, total * sizeof(float));
    sd_tensors x = {q, k, v, out, dout, dq, dk, dv};
    long tasks = (long)p->batch * H * per;
    float scale = 1.0f / sqrtf((float)p->head_dim);
    /* bands b and b + phases never share key rows; residue classes never do */
    for (int ph = 0; ph < phases; ph++) {
        rb_par_begin();
#pragma omp parallel num_threads(RB_MIN(omp_get_max_threads(), S->nthr))
        {
            int t = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
            for (long i = 0; i < tasks; i++) {
                long bh = i / per;
                int idx = (int)(i % per), h = (int)(bh % H);
                if (idx >= sd_tasks_per_head(S, h)) continue;
                if (h < S->lh ? idx % phases != ph : ph != 0) continue;
                sd_backward_block(S, bh, idx, &x, t, scale);
            }
        }
        rb_par_end();
    }
}

/* Every head attends every earlier key: A(1) heads when l >= seq - 1, A(2)
 * heads when l = 1. */
static int sd_equals_dense(const attn_params *p) {
    int l = sd_stride(p), sh = p->strided_heads < 0 ? p->heads / 2 : p->strided_heads;
    return (sh == 0 || l == 1) && (sh == p->heads || l >= p->seq - 1);
}

const attn_backend attn_backend_strided = {
    .name = "strided",
    .description = "Sparse Transformer strided heads (Child et al. 2019): heads on the previous `stride` positions "
                   "and strided_heads on every stride-th one, O(n (l + n/l) d)",
    .uses = ATTN_USES_STRIDE,
    .validate = sd_validate,
    .create = sd_create,
    .forward = sd_forward,
    .backward = sd_backward,
    .flops = sd_flops,
    .act_bytes = sd_act_bytes,
    .stats = NULL,
    .equals_dense = sd_equals_dense,
    .destroy = sd_destroy,
};
