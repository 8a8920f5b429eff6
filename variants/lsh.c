/* lsh.c: the Reformer's LSH attention (Kitaev, Kaiser, Levskaya 2020,
 * "Reformer: The Efficient Transformer", section 2) as a backend ("lsh").
 *
 * Per (batch, head) and hash round: the shared query-key vectors are hashed
 * by a random rotation into `buckets` buckets (core/attn/lsh_hash.c), sorted
 * by bucket and then position, and the sorted order is cut into chunks of
 * `window`; the queries of a chunk attend the keys of their chunk and of the
 * chunk before it (chunk 0 has none: no wrap-around), causally by true
 * position when causal. Keys are the queries normalised to unit length
 * (shared QK, as the paper and lucidrains/reformer-pytorch); queries stay
 * raw; a token attends to itself only when nothing else is visible. With
 * --hashes > 1 the rounds' outputs are combined with their log-sum-exp
 * weights, out = sum_r exp(lse_r - L) o_r with L = log sum_r exp(lse_r),
 * i.e. one softmax over the rounds' keys together (a key found by two rounds
 * counts twice, as in lucidrains' default). Rotations are drawn from the
 * seed once per instance (fixed for a run; the Reformer redraws them every
 * pass). No gradient flows through the bucket choice.
 *
 * share_qk 0 (not the paper's) hashes queries and keys separately with the
 * same rotations; chunk c of the sorted queries attends chunks c-1 and c of
 * the sorted keys (raw k), self included; a query may see no key, and then
 * gets zero from that round (weight 0 in the combination).
 *
 * routes() reports, as "clusters" c = round * chunks + chunk, the chunk's
 * query positions (keys = 0) and its visible window, chunk c-1 and c of the
 * key order (keys = 1), each ascending: the sets one softmax runs over.
 *
 * Work: chunk tasks gather their rows and run core/attn/gattn.c (sgemm
 * tiles, flash-style backward from one log-sum-exp per row). Rounds run one
 * after another; in backward, chunks of even then odd index, since chunk c
 * writes key rows of windows c and c+1: results do not depend on threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/gattn.h"
#include "attn/instance.h"
#include "attn/lsh_hash.h"
#include "util/common.h"
#include "util/threads.h"

#define LSH_DEFAULT_WINDOW 64

extern const attn_backend attn_backend_lsh;

typedef struct {
    float *Qc, *Oc, *dOc;   /* (w, d) gathered queries; output (backward: dQ); dout */
    float *Kc, *Vc;         /* (2w, d) gathered keys, values */
    float *dKc, *dVc;       /* (2w, d) */
    float *L, *D;           /* (w) log-sum-exp; rowsum(dout * out) */
    float *proj;            /* (LSH_ROWS, nb2) hashing */
    int *bucket;            /* (n) hashing */
    gattn_ws g;
} lsh_ws;

typedef struct {
    attn a;
    int B, H, n, d, BH, w, nck, nb, nb2, hashes, nsets, shared, causal, nthr, have_routes;
    float scale;
    float *R;       /* (H, hashes, d, nb2) rotations */
    float *xk;      /* (BH, n, d) shared: the normalised queries (the keys) */
    float *xs;      /* (BH, n) shared: 1 / |q| */
    float *dkey;    /* (BH, n, d) shared: gradient of the normalised keys */
    float *lse;     /* (BH, n) combined log-sum-exp of each query */
    int *ord;       /* (BH, hashes, nsets, n) sorted positions, each chunk ascending */
    int *start;     /* (BH, hashes, nsets, nb + 1) bucket starts in the sorted order */
    int *win;       /* (BH, hashes, nck, 2w) each chunk's key window */
    int *wlen;      /* (BH, hashes, nck) */
    double *part;   /* (BH, hashes, 2) lonely queries, attended pairs */
    double *cpairs; /* (BH, nck) attended pairs of each chunk in the current round */
    lsh_ws *ws;     /* (nthr) */
    void *mem;
    double bmin, bmax, bmean, lonely, ppq; /* statistics of the last forward */
} lsh_attn;

/* ---- parameters ----------------------------------------------------------- */

static int lsh_window(const attn_params *p) {
    return RB_MIN(p->window > 0 ? p->window : LSH_DEFAULT_WINDOW, p->seq);
}

static int lsh_nbuckets(const attn_params *p) {
    if (p->buckets > 0) return p->buckets;
    int b = p->seq / lsh_window(p);
    return b < 2 ? 1 : b - (b & 1);
}

static int lsh_shared(const attn_params *p) { return p->share_qk < 0 ? 1 : p->share_qk; }
/* rounds of hashing (0: auto, one round) */
static int lsh_hashes(const attn_params *p) { return p->hashes > 0 ? p->hashes : 1; }

static int lsh_validate(attn_params *p, rb_err *e) {
    if (p->seq <= 0) return rb_err_set(e, RB_EINVAL, "seq", "seq must be positive (got %d)", p->seq);
    if (p->window < 0) return rb_err_set(e, RB_EINVAL, "window", "window must not be negative (got %d)", p->window);
    if (p->buckets < 0) return rb_err_set(e, RB_EINVAL, "buckets", "buckets must not be negative (got %d)", p->buckets);
    if (p->buckets > 1 && p->buckets % 2)
        return rb_err_set(e, RB_EINVAL, "buckets", "buckets must be 1 or even (angular LSH: argmax of [xR, -xR]); got %d",
                          p->buckets);
    if (p->buckets > p->seq)
        return rb_err_set(e, RB_EINVAL, "buckets", "buckets (%d) must not exceed seq (%d)", p->buckets, p->seq);
    if (p->hashes < 0 || p->hashes > 64)
        return rb_err_set(e, RB_EINVAL, "hashes", "hashes must be auto or in [1, 64] (got %d)", p->hashes);
    p->hashes = lsh_hashes(p);
    if (p->share_qk < -1 || p->share_qk > 1)
        return rb_err_set(e, RB_EINVAL, "share_qk", "share_qk must be auto, 0 or 1 (got %d)", p->share_qk);
    int w = lsh_window(p);
    p->window = w;
    p->buckets = lsh_nbuckets(p);
    p->share_qk = lsh_shared(p);
    p->norm = ATTN_NORM_L2;
    /* routes() numbers the (round, chunk) pairs as clusters */
    p->clusters = lsh_hashes(p) * ((p->seq + w - 1) / w);
    return 0;
}

static int lsh_equals_dense(const attn_params *p) {
    return lsh_nbuckets(p) == 1 && lsh_window(p) >= p->seq && !lsh_shared(p);
}

/* Attended pairs of one round of one head. Exact unless causal with more
 * than one bucket: then the keys of the previous chunk are counted as
 * visible half of the time (they precede the query by position about half
 * the time); inside a chunk exactly one of each two members precedes the
 * other, so that part is exact for shared keys. */
static double lsh_round_pairs(const attn_params *p) {
    int n = p->seq, w = lsh_window(p), shared = lsh_shared(p), one = lsh_nbuckets(p) == 1;
    double pairs = 0;
    for (int c0 = 0, prev = 0; c0 < n; prev = RB_MIN(w, n - c0), c0 += w) {
        double m = RB_MIN(w, n - c0);
        if (!p->causal) pairs += shared ? m * fmax(1.0, m + prev - 1) : m * (m + prev);
        else if (one)
            for (int r = 0; r < m; r++) pairs += shared ? RB_MAX(1, prev + r) : prev + r + 1;
        else pairs += shared ? m * (m - 1) / 2 + m * prev / 2.0 + (c0 == 0) : m * (m + prev) / 2;
    }
    return pairs;
}

static double lsh_flops(const attn_params *p, int pass) {
    double bh = (double)p->batch * p->heads, per = lsh_round_pairs(p) * lsh_hashes(p);
    if (pass == ATTN_PASS_BWD) return bh * per * 8.0 * p->head_dim;
    int nb = lsh_nbuckets(p);
    double hash = nb > 1 ? (double)lsh_hashes(p) * (lsh_shared(p) ? 1 : 2) * p->seq * p->head_dim * nb : 0;
    return bh * (per * 4.0 * p->head_dim + hash);
}

/* ---- buffers: one allocation --------------------------------------------- */

/* Bytes of every buffer for p with nthr threads; with base, points L's
 * buffers into it. */
static size_t lsh_layout(void *inst, const attn_params *p, int nthr, char *base) {
    lsh_attn *L = inst;
    gattn_arena ar = {base, 0};
    lsh_attn tmp;
    lsh_attn *T = base ? L : &tmp;
    size_t BH = (size_t)p->batch * p->heads, n = p->seq, d = p->head_dim, w = lsh_window(p);
    size_t hs = lsh_hashes(p), nb = lsh_nbuckets(p), nb2 = nb / 2, nck = (n + w - 1) / w;
    size_t nsets = lsh_shared(p) ? 1 : 2, F = sizeof(float), I = sizeof(int);
    T->R = gattn_take(&ar, (size_t)p->heads * hs * d * nb2 * F);
    T->xk = gattn_take(&ar, nsets == 1 ? BH * n * d * F : 0);
    T->xs = gattn_take(&ar, nsets == 1 ? BH * n * F : 0);
    T->dkey = gattn_take(&ar, nsets == 1 ? BH * n * d * F : 0);
    T->lse = gattn_take(&ar, BH * n * F);
    T->ord = gattn_take(&ar, BH * hs * nsets * n * I);
    T->start = gattn_take(&ar, BH * hs * nsets * (nb + 1) * I);
    T->win = gattn_take(&ar, BH * hs * nck * 2 * w * I);
    T->wlen = gattn_take(&ar, BH * hs * nck * I);
    T->part = gattn_take(&ar, BH * hs * 2 * sizeof(double));
    T->cpairs = gattn_take(&ar, BH * nck * sizeof(double));
    T->ws = gattn_take(&ar, (size_t)nthr * sizeof(lsh_ws));
    for (int t = 0; t < nthr; t++) {
        lsh_ws scratch, *W = base ? &T->ws[t] : &scratch;
        W->Qc = gattn_take(&ar, w * d * F);
        W->Oc = gattn_take(&ar, w * d * F);
        W->dOc = gattn_take(&ar, w * d * F);
        W->Kc = gattn_take(&ar, 2 * w * d * F);
        W->Vc = gattn_take(&ar, 2 * w * d * F);
        W->dKc = gattn_take(&ar, 2 * w * d * F);
        W->dVc = gattn_take(&ar, 2 * w * d * F);
        W->L = gattn_take(&ar, w * F);
        W->D = gattn_take(&ar, w * F);
        W->proj = gattn_take(&ar, (size_t)LSH_ROWS * nb2 * F);
        W->bucket = gattn_take(&ar, n * I);
        gattn_take(&ar, gattn_ws_bytes(&W->g, base ? base + ar.used : NULL, (int)(2 * w), p->head_dim));
    }
    return ar.used;
}

static size_t lsh_act_bytes(const attn_params *p) { return attn_block_bytes(lsh_layout, p); }

static attn *lsh_create(const attn_params *p, char *err, size_t errlen) {
    lsh_attn *L = attn_instance_new(sizeof *L, &attn_backend_lsh, p, err, errlen);
    if (!L || !(L->mem = attn_block_alloc(L, lsh_layout, &L->nthr, err, errlen))) return NULL;
    L->B = p->batch, L->H = p->heads, L->n = p->seq, L->d = p->head_dim, L->BH = p->batch * p->heads;
    L->w = lsh_window(p), L->nck = (L->n + L->w - 1) / L->w;
    L->nb = lsh_nbuckets(p), L->nb2 = L->nb / 2, L->hashes = lsh_hashes(p);
    L->shared = lsh_shared(p), L->nsets = L->shared ? 1 : 2, L->causal = p->causal;
    L->scale = 1.0f / sqrtf((float)L->d);
    lsh_rotations(L->R, p->seed, L->H, L->hashes, L->d, L->nb2);
    return &L->a;
}

static void lsh_destroy(attn *a) {
    lsh_attn *L = (lsh_attn *)a;
    free(L->mem);
    free(L);
}

/* ---- hashing ------------------------------------------------------------- */

static int *lsh_ord(const lsh_attn *L, long bh, int r, int s) {
    return L->ord + (((size_t)bh * L->hashes + r) * L->nsets + s) * L->n;
}
static int *lsh_start(const lsh_attn *L, long bh, int r, int s) {
    return L->start + (((size_t)bh * L->hashes + r) * L->nsets + s) * (L->nb + 1);
}
static size_t lsh_wslot(const lsh_attn *L, long bh, int r, int c) {
    return ((size_t)bh * L->hashes + r) * L->nck + c;
}

/* Queries (set 0) whose window holds no other key of their own bucket, in
 * round r of head bh: bucket b's keys are sorted positions kst[b]..kst[b+1]
 * of the key order, the window of chunk c is [(c-1) w, (c+1) w) of it. */
static long lsh_lonely(const lsh_attn *L, long bh, int r) {
    const int *qst = lsh_start(L, bh, r, 0), *kst = lsh_start(L, bh, r, L->nsets - 1);
    long lonely = 0;
    for (int b = 0; b < L->nb; b++)
        for (int s = qst[b]; s < qst[b + 1]; s++) {
            int c = s / L->w, lo = RB_MAX(0, (c - 1) * L->w), hi = RB_MIN(L->n, (c + 1) * L->w);
            int inter = RB_MIN(hi, kst[b + 1]) - RB_MAX(lo, kst[b]);
            lonely += inter - L->shared <= 0; /* shared: the query itself is one of them */
        }
    return lonely;
}

/* Hash, sort and window one (bh, round); W is the calling thread's scratch. */
static void lsh_route_one(lsh_attn *L, long bh, int r, const float *q, const float *k, lsh_ws *W) {
    size_t nd = (size_t)L->n * L->d;
    const float *R = L->R + ((size_t)(bh % L->H) * L->hashes + r) * L->d * L->nb2;
    for (int s = 0; s < L->nsets; s++) {
        const float *x = (s == 0 ? q : k) + bh * nd;
        int *ord = lsh_ord(L, bh, r, s);
        lsh_hash(W->bucket, x, L->n, L->d, R, L->nb2, W->proj);
        lsh_sort(ord, lsh_start(L, bh, r, s), W->bucket, L->n, L->nb);
    }
    L->part[((size_t)bh * L->hashes + r) * 2] = (double)lsh_lonely(L, bh, r);
    for (int s = 0; s < L->nsets; s++) lsh_chunks_ascending(lsh_ord(L, bh, r, s), L->n, L->w);
    size_t slot = lsh_wslot(L, bh, r, 0);
    lsh_windows(L->win + slot * 2 * L->w, L->wlen + slot, lsh_ord(L, bh, r, L->nsets - 1), L->n, L->w);
}

static void lsh_route(lsh_attn *L, const float *q, const float *k) {
    long jobs = (long)L->BH * L->hashes;
    rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(L->nthr)
    for (long j = 0; j < jobs; j++) lsh_route_one(L, j / L->hashes, (int)(j % L->hashes), q, k, &L->ws[omp_get_thread_num()]);
    rb_par_end();
    long smin = L->n, smax = 0;
    for (long bh = 0; bh < L->BH; bh++)
        for (int r = 0; r < L->hashes; r++) {
            const int *st = lsh_start(L, bh, r, 0);
            for (int b = 0; b < L->nb; b++) smin = RB_MIN(smin, st[b + 1] - st[b]), smax = RB_MAX(smax, st[b + 1] - st[b]);
        }
    L->bmin = smin, L->bmax = smax, L->bmean = (double)L->n / L->nb;
    L->have_routes = 1;
}

/* x (rows, d) = v / |v|, s (rows) = 1 / |v| */
static void lsh_normalise(float *x, float *s, const float *v, size_t rows, int d) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < rows; i++) {
        const float *vi = v + i * d;
        double ss = 0;
        for (int e = 0; e < d; e++) ss += (double)vi[e] * vi[e];
        float inv = (float)(1.0 / sqrt(ss + 1e-12));
        for (int e = 0; e < d; e++) x[i * d + e] = vi[e] * inv;
        s[i] = inv;
    }
}

/* ---- attention ----------------------------------------------------------- */

typedef struct {
    const float *q, *keys, *v, *out, *dout;
    float *dq, *dkey, *dv;
} lsh_io;

static void lsh_gather(float *dst, const float *src, const int *rows, int m, int d) {
    for (int r = 0; r < m; r++) memcpy(dst + (size_t)r * d, src + (size_t)rows[r] * d, sizeof(float) * (size_t)d);
}

/* The block of chunk c of round r of head bh over gathered rows in W. */
static void lsh_block(const lsh_attn *L, long bh, int r, int c, lsh_ws *W, gattn_block *b, gattn_mask *m) {
    size_t slot = lsh_wslot(L, bh, r, c);
    memset(b, 0, sizeof *b);
    b->d = L->d;
    b->mq = RB_MIN(L->w, L->n - c * L->w);
    b->mk = L->wlen[slot];
    b->qpos = lsh_ord(L, bh, r, 0) + (size_t)c * L->w;
    b->kpos = L->win + slot * 2 * L->w;
    b->q = W->Qc, b->k = W->Kc, b->v = W->Vc, b->o = W->Oc, b->lse = W->L;
    b->ldq = b->ldk = b->ldo = L->d;
    m->lo = INT_MIN, m->hi = L->causal ? 0 : INT_MAX, m->self_last = L->shared;
}

/* Fold a round's output row (o, lse l) into the running one (acc, *lacc). */
static void lsh_combine(float *acc, float *lacc, const float *o, float l, int d, int first) {
    if (first || (*lacc == -INFINITY && l > -INFINITY)) {
        memcpy(acc, o, sizeof(float) * (size_t)d);
        *lacc = l;
        return;
    }
    if (!(l > -INFINITY)) return;
    float mx = fmaxf(*lacc, l), a = expf(*lacc - mx), b = expf(l - mx), inv = 1.0f / (a + b);
    for (int e = 0; e < d; e++) acc[e] = (acc[e] * a + o[e] * b) * inv;
    *lacc = mx + logf(a + b);
}

static void lsh_chunk_forward(lsh_attn *L, long bh, int r, int c, float *out, const float *q, const float *keys,
                              const float *v, lsh_ws *W) {
    size_t nd = (size_t)L->n * L->d;
    gattn_block b;
    gattn_mask m;
    lsh_block(L, bh, r, c, W, &b, &m);
    lsh_gather(W->Qc, q + bh * nd, b.qpos, b.mq, L->d);
    lsh_gather(W->Kc, keys + bh * nd, b.kpos, b.mk, L->d);
    lsh_gather(W->Vc, v + bh * nd, b.kpos, b.mk, L->d);
    L->cpairs[(size_t)bh * L->nck + c] = (double)gattn_forward(&b, &m, L->scale, &W->g);
    for (int i = 0; i < b.mq; i++) {
        size_t row = (size_t)bh * L->n + b.qpos[i];
        lsh_combine(out + row * L->d, L->lse + row, W->Oc + (size_t)i * L->d, W->L[i], L->d, r == 0);
    }
}

static void lsh_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    lsh_attn *L = (lsh_attn *)a;
    size_t rows = (size_t)L->BH * L->n;
    if (L->shared) lsh_normalise(L->xk, L->xs, q, rows, L->d);
    if (!((flags & ATTN_KEEP_ROUTES) && L->have_routes)) lsh_route(L, q, k);
    const float *keys = L->shared ? L->xk : k;
    long tasks = (long)L->BH * L->nck;
    for (int r = 0; r < L->hashes; r++) {
        rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(L->nthr)
        for (long t = 0; t < tasks; t++)
            lsh_chunk_forward(L, t / L->nck, r, (int)(t % L->nck), out, q, keys, v, &L->ws[omp_get_thread_num()]);
        rb_par_end();
        for (long bh = 0; bh < L->BH; bh++) { /* in chunk order: the sum does not depend on threads */
            double pr = 0;
            for (int c = 0; c < L->nck; c++) pr += L->cpairs[(size_t)bh * L->nck + c];
            L->part[((size_t)bh * L->hashes + r) * 2 + 1] = pr;
        }
    }
    double lonely = 0, pairs = 0;
    for (size_t i = 0; i < (size_t)L->BH * L->hashes; i++) lonely += L->part[2 * i], pairs += L->part[2 * i + 1];
    double queries = (double)L->BH * L->hashes * L->n;
    L->lonely = lonely / queries, L->ppq = pairs / queries;
}

/* Backward of chunk c of round r of head bh: gathers, the kernel with the
 * combined log-sum-exp and D of the final output, then scatter-adds. */
static void lsh_chunk_backward(lsh_attn *L, long bh, int r, int c, const lsh_io *x, lsh_ws *W) {
    size_t nd = (size_t)L->n * L->d, d = L->d;
    gattn_block b;
    gattn_mask m;
    lsh_block(L, bh, r, c, W, &b, &m);
    lsh_gather(W->Qc, x->q + bh * nd, b.qpos, b.mq, L->d);
    lsh_gather(W->dOc, x->dout + bh * nd, b.qpos, b.mq, L->d);
    lsh_gather(W->Kc, x->keys + bh * nd, b.kpos, b.mk, L->d);
    lsh_gather(W->Vc, x->v + bh * nd, b.kpos, b.mk, L->d);
    for (int i = 0; i < b.mq; i++) {
        const float *o = x->out + bh * nd + (size_t)b.qpos[i] * d, *g = W->dOc + (size_t)i * d;
        double acc = 0;
        for (size_t e = 0; e < d; e++) acc += (double)o[e] * g[e];
        W->D[i] = (float)acc;
        W->L[i] = L->lse[(size_t)bh * L->n + b.qpos[i]];
    }
    memset(W->dKc, 0, sizeof(float) * (size_t)b.mk * d);
    memset(W->dVc, 0, sizeof(float) * (size_t)b.mk * d);
    b.dout = W->dOc, b.D = W->D, b.dk = W->dKc, b.dv = W->dVc;
    gattn_backward(&b, &m, L->scale, &W->g);
    for (int i = 0; i < b.mq; i++) {
        float *dst = x->dq + bh * nd + (size_t)b.qpos[i] * d;
        const float *src = W->Oc + (size_t)i * d;
        for (size_t e = 0; e < d; e++) dst[e] += src[e];
    }
    for (int j = 0; j < b.mk; j++) {
        float *dk = x->dkey + bh * nd + (size_t)b.kpos[j] * d, *dv = x->dv + bh * nd + (size_t)b.kpos[j] * d;
        const float *sk = W->dKc + (size_t)j * d, *sv = W->dVc + (size_t)j * d;
        for (size_t e = 0; e < d; e++) dk[e] += sk[e], dv[e] += sv[e];
    }
}

static void lsh_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                         const float *v, const float *out) {
    lsh_attn *L = (lsh_attn *)a;
    size_t nd = (size_t)L->n * L->d, total = (size_t)L->BH * nd;
    float *dkey = L->shared ? L->dkey : dk;
    memset(dq, 0, total * sizeof(float));
    memset(dv, 0, total * sizeof(float));
    memset(dkey, 0, total * sizeof(float));
    lsh_io x = {q, L->shared ? L->xk : k, v, out, dout, dq, dkey, dv};
    /* chunk c writes the key rows of chunks c-1 and c: even chunks, then odd */
    for (int r = 0; r < L->hashes; r++)
        for (int ph = 0; ph < 2; ph++) {
            long per = (L->nck - ph + 1) / 2, tasks = (long)L->BH * per;
            rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(L->nthr)
            for (long t = 0; t < tasks; t++)
                lsh_chunk_backward(L, t / per, r, ph + 2 * (int)(t % per), &x, &L->ws[omp_get_thread_num()]);
            rb_par_end();
        }
    if (!L->shared) return;
    /* the keys were q / |q|: their gradient goes back into dq */
#pragma omp parallel for schedule(static) num_threads(L->nthr)
    for (size_t i = 0; i < (size_t)L->BH * L->n; i++) {
        const float *x = L->xk + i * L->d, *g = L->dkey + i * L->d;
        float *o = dq + i * L->d, s = L->xs[i];
        double gx = 0;
        for (int e = 0; e < L->d; e++) gx += (double)g[e] * x[e];
        for (int e = 0; e < L->d; e++) o[e] += s * (g[e] - x[e] * (float)gx);
    }
    memset(dk, 0, total * sizeof(float));
}

static int lsh_stats(const attn *a, attn_stat *out, int max) {
    const lsh_attn *L = (const lsh_attn *)a;
    attn_stat all[] = {
        {"bucket_size_min", L->bmin}, {"bucket_size_max", L->bmax}, {"bucket_size_mean", L->bmean},
        {"lonely_share", L->lonely},  {"pairs_per_query", L->ppq},
    };
    int n = RB_MIN((int)(sizeof all / sizeof all[0]), max);
    for (int i = 0; i < n; i++) out[i] = all[i];
    return n;
}

static int lsh_routes(const attn *a, int b, int h, int c, int keys, const int **members) {
    const lsh_attn *L = (const lsh_attn *)a;
    if (!L->have_routes || b < 0 || b >= L->B || h < 0 || h >= L->H || c < 0 || c >= L->hashes * L->nck || keys < 0 ||
        keys > 1)
        return -1;
    long bh = (long)b * L->H + h;
    int r = c / L->nck, ch = c % L->nck;
    if (keys) {
        size_t slot = lsh_wslot(L, bh, r, ch);
        *members = L->win + slot * 2 * L->w;
        return L->wlen[slot];
    }
    *members = lsh_ord(L, bh, r, 0) + (size_t)ch * L->w;
    return RB_MIN(L->w, L->n - ch * L->w);
}

const attn_backend attn_backend_lsh = {
    .name = "lsh",
    .description = "Reformer LSH attention (Kitaev et al. 2020): shared QK hashed by random rotations into buckets, "
                   "sorted, chunks of `window` attend themselves and the previous chunk; --hashes rounds",
    .uses = ATTN_USES_WINDOW | ATTN_USES_SHARE_QK | ATTN_USES_HASH,
    .validate = lsh_validate,
    .create = lsh_create,
    .forward = lsh_forward,
    .backward = lsh_backward,
    .flops = lsh_flops,
    .act_bytes = lsh_act_bytes,
    .stats = lsh_stats,
    .equals_dense = lsh_equals_dense,
    .destroy = lsh_destroy,
    .routes = lsh_routes,
};
