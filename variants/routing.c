/* routing.c: the Routing Transformer's clustered attention (Roy et al., TACL
 * 2021) as an attention backend ("routing").
 *
 * Per (batch, head): the routing vectors (queries, and keys unless shared)
 * are normalised (unit L2 length, or layer norm without gain) and matched to
 * K centroids. With assign = topk every centroid takes its `window` nearest
 * tokens (balanced clusters, a token may be in several clusters or none);
 * with argmax every token joins its nearest centroid. Members keep position
 * order and attend, inside their cluster, causally by true position. Outputs
 * are scattered back and averaged over the clusters that picked the token.
 *
 * Decisions (the references differ or are silent):
 * - Centroids start from k-means++ seeds (seeded from p->seed; candidates a
 *   strided subsample of at most max(4096, 8K) vectors) on the first batch,
 *   then kmeans_iters Lloyd iterations over all its vectors.
 * - Shared Q = K (default when causal, as both public implementations): the
 *   keys the attention uses are the NORMALISED shared vectors (as lucidrains'
 *   routing_transformer does with F.normalize(k)); queries stay raw. A token
 *   does not attend to itself unless it sees nothing else. Unshared: raw q
 *   and raw k for attention, normalised ones only for routing.
 * - window defaults to ceil(seq / clusters), so clusters * window >= seq.
 * - Unshared and causal, a query may see no key of a cluster that picked it:
 *   that cluster contributes zero to its average (and still counts in it).
 * - Distances are squared Euclidean to unnormalised centroids; the centroid
 *   EMA averages the normalised vectors nearest to it (no renormalisation),
 *   decay per training pass, over the whole batch of the head.
 * - commit_loss = mean over routing vectors (queries, plus keys when not
 *   shared) of |x - mu_nearest|^2 with the centroids this pass routed with;
 *   kmeans_objective = the same squared distances summed over one sequence's
 *   routing vectors (the classic k-means objective), averaged over batch and
 *   heads.
 *
 * Work: distances per (b,h) and set (K x n x d) on cluster.c's AVX-512
 * kernel in blocks of centroids and tokens, top-k per centroid by bisection
 * over the keys' order; each cluster's members are gathered into contiguous
 * blocks and attention runs on query tiles through the same kernel (scores
 * and softmax in one pass up to 64 keys), keeping only the row log-sum-exp
 * unless forward keeps P (rt_keep_p); otherwise backward recomputes the
 * scores (flash style), so memory is O(n d) even when argmax makes a cluster
 * large. Clusters run in
 * parallel and write disjoint per-member rows; the scatter back to positions
 * runs per (b,h) in fixed cluster order, so results do not depend on the
 * schedule. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/cluster.h"
#include "attn/instance.h"
#include "util/common.h"
#include "attn/kmeans.h"
#include "util/threads.h"
#include "util/vexp.h"

extern const attn_backend attn_backend_routing;

enum { RT_TQ = 64 }; /* query rows per score tile */
enum { RT_TB = 64 }; /* tokens per block of distances (cl_gemm's column block) */
/* centroids per block of distances: a thread holds RT_KB x n dots, not K x n
 * (at seq 2^20 and 1024 clusters that was 4 GiB a thread) */
enum { RT_KB = 32 };
/* ... or more while a block stays within RT_DOTS floats (one packing of the
 * tokens for all the centroids at training sizes) */
enum { RT_DOTS = 1 << 17 };
static int rt_kb(int K, int n) { return RB_MIN(K, RB_MAX((int)RT_KB, RT_DOTS / n)); }

typedef struct {
    kmeans_pair *pairs;         /* (n) top-k selection scratch */
    float *dots;                /* (rt_kb,n) centroid . token, one block of centroids */
    float *best;                /* (n) nearest distance so far (up to |x|^2) */
    float *xn2;                 /* (n) |x|^2 */
    float *Qc, *Kc, *Vc, *dOc;  /* (maxm, d) gathered cluster blocks */
    float *Kt, *Vt;             /* (d, ldt) the keys and values transposed */
    float *Xt;                  /* (d, RT_TB) a block of routing vectors transposed */
    float *S, *dP;              /* (RT_TQ, maxm) score / probability tiles */
    int *L;                     /* (maxm) keys visible to each query row */
    int *F;                     /* (maxm) first tile row that sees key j */
    float *D;                   /* (maxm) rowsum(dO * O) */
    unsigned char *seen;        /* (n) positions a scatter has written */
} rt_ws;

typedef struct {
    attn base;
    int B, H, n, d, K, w, BH;
    int shared, causal, assign, norm, nsets;
    int cap;  /* member slots per (b,h) and set: K*w (topk) or n (argmax) */
    int maxm; /* most members one cluster can hold */
    int ldt;  /* row length of the transposed blocks: maxm rounded up to 16 */
    int keep_p; /* forward keeps each cluster's probabilities for backward */
    int nthr;
    float scale, commit_weight, decay;
    int init_iters;
    uint64_t seed;
    int initted, have_routes;
    void *block; /* the one allocation everything below is carved from */
    float *mu, *mu_used;    /* (H,K,d) centroids; the ones the last routing used */
    float *mun2;            /* (H,K) |mu_used|^2 */
    float *x[2];            /* (BH,n,d) normalised routing vectors: queries, keys */
    float *xs[2];           /* (BH,n) per-token normaliser: L2 1/|v|, layer norm rstd */
    int *near[2];           /* (BH,n) nearest centroid */
    int *off[2];            /* (BH,K+1) cluster c's members are mem[off[c]..off[c+1]) */
    int *mem[2];            /* (BH,cap) member positions, by cluster, ascending inside */
    int *cnt;               /* (BH,n) clusters whose query set holds the token */
    float *lse;             /* (BH,cap) log-sum-exp per query member row */
    float *pm;              /* (BH,K,w,w) probabilities per cluster, when keep_p */
    float *om;              /* (BH,cap,d) per-member outputs */
    float *dqm, *dkm, *dvm; /* (BH,cap,d) per-member gradients; dqm is om's memory */
    double *sums;           /* (H,K,d) k-means sums */
    int64_t *counts;        /* (H,K) */
    double *partial;        /* (BH) per-(b,h) squared-distance sums */
    float *mind;            /* (rt_pp_candidates) k-means++ scratch */
    const float **blocks;   /* (B*nsets) */
    rt_ws *ws;              /* (nthr) */
    /* statistics of the last forward */
    double commit_loss, objective;
    double size_min, size_max, size_mean, unrouted, multi;
} routing;

/* ---- parameters -------------------------------------------------------- */

static void rt_resolve(const attn_params *p, int *K, int *w, int *shared) {
    int k = p->clusters > 0 ? p->clusters : (int)lround(sqrt((double)p->seq));
    if (k < 1) k = 1;
    *K = k;
    *w = p->window > 0 ? p->window : (p->seq + k - 1) / k;
    *shared = p->share_qk < 0 ? (p->causal != 0) : p->share_qk;
}

/* k-means++ candidates: a strided subsample keeps the seeding cheap
 * (S*K*d); Lloyd iterations then see every vector. */
static int64_t rt_pp_candidates(int64_t B, int64_t nsets, int64_t n, int64_t K) {
    int64_t S = RB_MAX((int64_t)4096, 8 * K);
    return RB_MIN(S, B * nsets * n);
}

/* Ranges of single parameters are attn_params_check_sizes' (the table's);
 * here what depends on several. */
static int rt_validate(attn_params *p, rb_err *e) {
    if (p->batch <= 0 || p->heads <= 0 || p->seq <= 0 || p->head_dim <= 0)
        return rb_err_set(e, RB_EINVAL, "seq", "batch, heads, seq and head_dim must be positive");
    if (p->clusters < 0)
        return rb_err_set(e, RB_EINVAL, "clusters", "clusters must not be negative (got %d)", p->clusters);
    if (p->window < 0) return rb_err_set(e, RB_EINVAL, "window", "window must not be negative (got %d)", p->window);
    if (p->clusters > p->seq)
        return rb_err_set(e, RB_EINVAL, "clusters", "clusters (%d) must not exceed seq (%d)", p->clusters, p->seq);
    if (p->window > p->seq)
        return rb_err_set(e, RB_EINVAL, "window", "window (%d) must not exceed seq (%d)", p->window, p->seq);
    if (p->share_qk < -1 || p->share_qk > 1)
        return rb_err_set(e, RB_EINVAL, "share_qk", "share_qk must be auto, 0 or 1 (got %d)", p->share_qk);
    if (p->assign != ATTN_ASSIGN_TOPK && p->assign != ATTN_ASSIGN_ARGMAX)
        return rb_err_set(e, RB_EINVAL, "assign", "assign must be topk or argmax (got %d)", p->assign);
    if (p->norm != ATTN_NORM_L2 && p->norm != ATTN_NORM_LAYERNORM)
        return rb_err_set(e, RB_EINVAL, "norm", "norm must be l2 or layernorm (got %d)", p->norm);
    if (!(p->decay > 0.0f && p->decay < 1.0f))
        return rb_err_set(e, RB_EINVAL, "decay", "decay must be in (0, 1) (got %g)", (double)p->decay);
    if (!(p->commit_weight >= 0.0f) || isinf(p->commit_weight))
        return rb_err_set(e, RB_EINVAL, "commit_weight", "commit_weight must be finite and >= 0 (got %g)",
                          (double)p->commit_weight);
    if (p->kmeans_iters < 0 || p->kmeans_iters > 1000)
        return rb_err_set(e, RB_EINVAL, "kmeans_iters", "kmeans_iters must be in [0, 1000] (got %d)",
                          p->kmeans_iters);
    if (p->causal != 0 && p->causal != 1) return rb_err_set(e, RB_EINVAL, "causal", "causal must be 0 or 1");
    int K, w, shared;
    rt_resolve(p, &K, &w, &shared);
    if ((double)K * w < 1) return rb_err_set(e, RB_EINVAL, "window", "window * clusters must be at least 1");
    if ((double)p->batch * p->heads * K * w * p->head_dim > (double)(1ull << 40))
        return rb_err_set(e, RB_EINVAL, "seq", "batch*heads*clusters*window*head_dim too large");
    p->clusters = K;
    p->window = w;
    p->share_qk = shared;
    return 0;
}

static int rt_equals_dense(const attn_params *p) {
    int K, w, shared;
    rt_resolve(p, &K, &w, &shared);
    return K == 1 && (w >= p->seq || p->assign == ATTN_ASSIGN_ARGMAX) && !shared;
}

/* Query-key pairs one head attends, at balanced clusters (topk: exactly
 * window members; argmax: seq / clusters on average). */
static double rt_pairs(const attn_params *p) {
    int K, w, shared;
    rt_resolve(p, &K, &w, &shared);
    double m = p->assign == ATTN_ASSIGN_TOPK ? (double)w : (double)p->seq / K;
    double per;
    if (p->causal)
        per = shared ? (m <= 1 ? 1.0 : m * (m - 1) / 2 + 1) : m * (m + 1) / 2;
    else
        per = shared ? (m <= 1 ? 1.0 : m * (m - 1)) : m * m;
    return per * K;
}

static double rt_flops(const attn_params *p, int pass) {
    int K, w, shared;
    rt_resolve(p, &K, &w, &shared);
    double bh = (double)p->batch * p->heads, d = p->head_dim;
    if (pass == ATTN_PASS_BWD) return bh * rt_pairs(p) * 8.0 * d;
    double route = 2.0 * p->seq * (double)K * d * (shared ? 1 : 2);
    return bh * (rt_pairs(p) * 4.0 * d + route);
}

/* Backward needs each cluster's probabilities. With topk every cluster has
 * exactly w query members, so forward can keep them in K*w*w floats per
 * head; it does when that is no more than the per-member outputs (w <=
 * head_dim), saving backward one of its five products and the exponentials.
 * Otherwise (argmax clusters are unbounded, or a wider window) backward
 * recomputes them tile by tile and memory stays O(n d). (Up to 4 head_dim,
 * as it was, P was the largest buffer of a model's routing layer: 8.4 of
 * its 32.9 MB at head_dim 32, window 64, 4 heads, seq 8192, where making it
 * again costs the layer's forward and backward 4%, 9.58 -> 9.93 ms.) */
static int rt_keep_p(const attn_params *p, int w) {
    return p->assign == ATTN_ASSIGN_TOPK && w <= p->head_dim;
}

/* ---- buffers: one allocation, carved in one place (llm.c style) -------- */

static size_t rt_ldt(size_t maxm) { return (maxm + 15) & ~(size_t)15; }

/* Bytes every buffer needs for p with nthr threads; when blk is not NULL,
 * also points R's buffers into blk. */
static size_t rt_layout(void *inst, const attn_params *p, int nthr, char *blk) {
    routing *R = inst;
    int K, w, shared;
    rt_resolve(p, &K, &w, &shared);
    size_t B = p->batch, H = p->heads, n = p->seq, d = p->head_dim, BH = B * H;
    size_t nsets = shared ? 1 : 2;
    size_t cap = p->assign == ATTN_ASSIGN_TOPK ? (size_t)K * w : n;
    size_t maxm = p->assign == ATTN_ASSIGN_TOPK ? (size_t)w : n;
    size_t used = 0;
    routing tmp;
    routing *T = blk ? R : &tmp;
#define CARVE(ptr, count)                                                        \
    do {                                                                         \
        size_t b_ = ((size_t)(count) * sizeof *(ptr) + 63) & ~(size_t)63;       \
        if (blk) (ptr) = (void *)(blk + used);                                   \
        used += b_;                                                              \
    } while (0)
    CARVE(T->mu, H * K * d);
    CARVE(T->mu_used, H * K * d);
    CARVE(T->mun2, H * K);
    for (size_t s = 0; s < nsets; s++) {
        CARVE(T->x[s], BH * n * d);
        CARVE(T->xs[s], BH * n);
        CARVE(T->near[s], BH * n);
        CARVE(T->off[s], BH * (K + 1));
        CARVE(T->mem[s], BH * cap);
    }
    CARVE(T->cnt, BH * n);
    CARVE(T->lse, BH * cap);
    CARVE(T->pm, rt_keep_p(p, w) ? BH * cap * w : 0);
    CARVE(T->om, BH * cap * d);
    if (blk) T->dqm = T->om; /* see rt_cluster_backward: a cluster's dQ rows overwrite its dead outputs */
    CARVE(T->dkm, BH * cap * d);
    CARVE(T->dvm, BH * cap * d);
    CARVE(T->sums, H * K * d);
    CARVE(T->counts, H * K);
    CARVE(T->partial, BH);
    CARVE(T->mind, rt_pp_candidates(B, nsets, n, K));
    CARVE(T->blocks, B * nsets);
    CARVE(T->ws, nthr);
    for (int t = 0; t < nthr; t++) {
        rt_ws *W = blk ? &T->ws[t] : &(rt_ws){0};
        CARVE(W->pairs, n);
        CARVE(W->dots, (size_t)rt_kb(K, (int)n) * n);
        CARVE(W->best, n);
        CARVE(W->xn2, n);
        CARVE(W->Qc, maxm * d);
        CARVE(W->Kc, maxm * d);
        CARVE(W->Vc, maxm * d);
        CARVE(W->dOc, maxm * d);
        CARVE(W->Kt, d * rt_ldt(maxm));
        CARVE(W->Vt, d * rt_ldt(maxm));
        CARVE(W->Xt, d * RT_TB);
        CARVE(W->S, RT_TQ * maxm);
        CARVE(W->dP, RT_TQ * maxm);
        CARVE(W->L, maxm);
        CARVE(W->F, maxm);
        CARVE(W->D, maxm);
        CARVE(W->seen, n);
    }
#undef CARVE
    if (blk && shared) {
        T->x[1] = T->x[0], T->xs[1] = T->xs[0], T->near[1] = T->near[0];
        T->off[1] = T->off[0], T->mem[1] = T->mem[0];
    }
    return used;
}

static size_t rt_act_bytes(const attn_params *p) { return attn_block_bytes(rt_layout, p); }

static attn *rt_create(const attn_params *p, char *err, size_t errlen) {
    routing *R = attn_instance_new(sizeof *R, &attn_backend_routing, p, err, errlen);
    if (!R) return NULL;
    rt_resolve(p, &R->K, &R->w, &R->shared);
    R->B = p->batch, R->H = p->heads, R->n = p->seq, R->d = p->head_dim, R->BH = p->batch * p->heads;
    R->causal = p->causal, R->assign = p->assign, R->norm = p->norm;
    R->nsets = R->shared ? 1 : 2;
    R->cap = R->assign == ATTN_ASSIGN_TOPK ? R->K * R->w : R->n;
    R->maxm = R->assign == ATTN_ASSIGN_TOPK ? R->w : R->n;
    R->ldt = (int)rt_ldt((size_t)R->maxm);
    R->keep_p = rt_keep_p(p, R->w);
    R->scale = 1.0f / sqrtf((float)R->d);
    R->commit_weight = p->commit_weight, R->decay = p->decay, R->init_iters = p->kmeans_iters;
    R->seed = p->seed;
    if (!(R->block = attn_block_alloc(R, rt_layout, &R->nthr, err, errlen))) return NULL;
    return &R->base;
}

static void rt_destroy(attn *a) {
    routing *R = (routing *)a;
    if (!R) return;
    free(R->block);
    free(R);
}

/* ---- normalisation of routing vectors ---------------------------------- */

/* x (rows,d) = normalised v; s (rows) keeps what backward needs. */
static void rt_normalise(float *x, float *s, const float *v, size_t rows, int d, int norm) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *vi = v + r * d;
        float *xi = x + r * d;
        if (norm == ATTN_NORM_L2) {
            float ss = 0.0f; /* head_dim-long */
#pragma omp simd reduction(+ : ss)
            for (int j = 0; j < d; j++) ss += vi[j] * vi[j];
            float inv = (float)(1.0 / sqrt((double)ss + 1e-12));
            for (int j = 0; j < d; j++) xi[j] = vi[j] * inv;
            s[r] = inv;
        } else {
            double m = 0.0, var = 0.0;
            for (int j = 0; j < d; j++) m += vi[j];
            m /= d;
            for (int j = 0; j < d; j++) var += ((double)vi[j] - m) * ((double)vi[j] - m);
            var /= d;
            float rstd = (float)(1.0 / sqrt(var + 1e-5));
            for (int j = 0; j < d; j++) xi[j] = (float)((vi[j] - m) * rstd);
            s[r] = rstd;
        }
    }
}

/* dv += d(normalised)/dv^T g for one row (x the normalised row, s its scalar) */
static void rt_norm_backward(float *dv, const float *g, const float *x, float s, int d, int norm) {
    float gx = 0.0f, gm = 0.0f; /* head_dim-long sums */
#pragma omp simd reduction(+ : gx, gm)
    for (int j = 0; j < d; j++) gx += g[j] * x[j], gm += g[j];
    if (norm == ATTN_NORM_L2) {
        float a = gx;
        for (int j = 0; j < d; j++) dv[j] += s * (g[j] - x[j] * a);
    } else {
        float mg = (float)(gm / d), mgx = (float)(gx / d);
        for (int j = 0; j < d; j++) dv[j] += s * (g[j] - mg - x[j] * mgx);
    }
}

/* ---- centroids --------------------------------------------------------- */

/* dots (kb, n) = mu (kb, d) X^T (X: n x d): per block of RT_TB tokens, the
 * block transposed in L1 and one cl_gemm (AVX-512, no packing; OpenBLAS's
 * sgemm took twice as long on these shapes). par: the blocks as a parallel
 * loop, each thread with its own transpose buffer. */
static void rt_dots(const routing *R, float *dots, const float *mu, const float *X, int kb, rt_ws *W, int par) {
    int n = R->n, d = R->d;
    int nb = (n + RT_TB - 1) / RT_TB;
#pragma omp parallel for if (par) schedule(static) num_threads(R->nthr)
    for (int b = 0; b < nb; b++) {
        int t0 = b * RT_TB, m = RB_MIN(RT_TB, n - t0);
        float *Xt = (par ? &R->ws[omp_get_thread_num()] : W)->Xt;
        cl_transpose(Xt, RT_TB, X + (size_t)t0 * d, m, d, NULL, NULL);
        cl_prod P = {.a = mu, .ars = d, .acs = 1, .b = Xt, .ldb = RT_TB, .c = dots + t0, .ldc = n, .alpha = 1.0f,
                     .acc = 0};
        cl_gemm(&P, kb, m, d, NULL, NULL, NULL);
    }
}

/* near (n) = the nearest of K centroids mu (K,d; mun2 their |mu|^2) for each
 * row of X (n,d; xn2 its |x|^2), through distances in blocks of rt_kb
 * centroids; with mem (topk) also each centroid's w nearest rows, in
 * position order, at mem + c*w. par: selection and assignment as parallel
 * loops (called outside a parallel region). */
static void rt_nearest(const routing *R, int *near, int *mem, const float *X, const float *mu, const float *mun2,
                       rt_ws *W, int par) {
    int K = R->K, n = R->n, d = R->d, w = R->w;
    int kbs = rt_kb(K, n);
    for (int c0 = 0; c0 < K; c0 += kbs) {
        int kb = RB_MIN(kbs, K - c0);
        rt_dots(R, W->dots, mu + (size_t)c0 * d, X, kb, W, par);
        kmeans_nearest_fold(near, W->best, W->dots, mun2 + c0, n, c0, kb);
        if (!mem) continue;
#pragma omp parallel for if (par) schedule(dynamic, 1) num_threads(R->nthr)
        for (int c = 0; c < kb; c++)
            kmeans_topk(mem + (size_t)(c0 + c) * w, W->dots + (size_t)c * n, W->xn2, n, w,
                        (par ? &R->ws[omp_get_thread_num()] : W)->pairs);
    }
}

/* k-means++ seeds from the head's routing vectors in this first batch, then
 * Lloyd iterations over all of them. Serial over heads (the distance
 * blocks run in parallel inside). */
static void rt_init_centroids(routing *R) {
    int K = R->K, d = R->d, n = R->n;
    size_t nd = (size_t)n * d;
    rb_rng rng;
    rb_rng_seed(&rng, R->seed ^ 0x6b6d65616e73ull);
    int *tmp = R->near[0]; /* overwritten by routing right after */
    for (int h = 0; h < R->H; h++) {
        float *mu = R->mu + (size_t)h * K * d;
        int nb = 0;
        for (int b = 0; b < R->B; b++)
            for (int s = 0; s < R->nsets; s++) R->blocks[nb++] = R->x[s] + (size_t)(b * R->H + h) * nd;
        kmeans_plusplus(mu, R->blocks, nb, n, rt_pp_candidates(R->B, R->nsets, n, K), K, d, &rng, R->mind);
        double *sums = R->sums + (size_t)h * K * d;
        int64_t *counts = R->counts + (size_t)h * K;
        float *mun2 = R->mun2 + (size_t)h * K;
        for (int it = 0; it < R->init_iters; it++) {
            memset(sums, 0, (size_t)K * d * sizeof *sums);
            memset(counts, 0, (size_t)K * sizeof *counts);
            kmeans_norm2(mun2, mu, K, d);
            rt_ws *W = &R->ws[0];
            for (int i = 0; i < nb; i++) {
                rt_nearest(R, tmp, NULL, R->blocks[i], mu, mun2, W, 1);
                kmeans_accumulate(sums, counts, R->blocks[i], tmp, n, d);
            }
            kmeans_lloyd(mu, sums, counts, K, d);
        }
    }
}

/* EMA of the vectors nearest each centroid (as routed this pass), per head. */
static void rt_update_centroids(routing *R) {
    int K = R->K, d = R->d, n = R->n;
    size_t nd = (size_t)n * d;
#pragma omp parallel for schedule(static) num_threads(R->nthr)
    for (int h = 0; h < R->H; h++) {
        double *sums = R->sums + (size_t)h * K * d;
        int64_t *counts = R->counts + (size_t)h * K;
        memset(sums, 0, (size_t)K * d * sizeof *sums);
        memset(counts, 0, (size_t)K * sizeof *counts);
        for (int b = 0; b < R->B; b++)
            for (int s = 0; s < R->nsets; s++) {
                size_t bh = (size_t)b * R->H + h;
                kmeans_accumulate(sums, counts, R->x[s] + bh * nd, R->near[s] + bh * n, n, d);
            }
        kmeans_ema(R->mu + (size_t)h * K * d, sums, counts, K, d, R->decay);
    }
}

/* ---- routing ------------------------------------------------------------ */

/* Route one (b,h) and set: nearest centroid of every vector and the
 * clusters' members. par: run the per-centroid selection as a parallel loop
 * (when there are fewer (b,h,set) jobs than threads); otherwise all of it
 * runs on the calling thread with W as scratch. */
static void rt_route_one(routing *R, int bh, int s, rt_ws *W, int par) {
    int K = R->K, d = R->d, n = R->n, w = R->w, h = bh % R->H;
    const float *mu = R->mu_used + (size_t)h * K * d;
    const float *X = R->x[s] + (size_t)bh * n * d;
    int *mem = R->mem[s] + (size_t)bh * R->cap, *off = R->off[s] + (size_t)bh * (K + 1);
    int *near = R->near[s] + (size_t)bh * n;
    kmeans_norm2(W->xn2, X, n, d);
    int topk = R->assign == ATTN_ASSIGN_TOPK;
    rt_nearest(R, near, topk ? mem : NULL, X, mu, R->mun2 + (size_t)h * K, W, par);
    if (topk) {
        for (int c = 0; c <= K; c++) off[c] = c * w;
    } else {
        /* counting sort by centroid; scanning positions in order keeps members ascending */
        for (int c = 0; c <= K; c++) off[c] = 0;
        for (int i = 0; i < n; i++) off[near[i] + 1]++;
        for (int c = 0; c < K; c++) off[c + 1] += off[c];
        int *fill = (int *)W->pairs; /* n >= K ints of scratch */
        for (int c = 0; c < K; c++) fill[c] = off[c];
        for (int i = 0; i < n; i++) mem[fill[near[i]]++] = i;
    }
}

static void rt_route(routing *R) {
    int K = R->K, d = R->d, n = R->n;
    memcpy(R->mu_used, R->mu, (size_t)R->H * K * d * sizeof(float));
    kmeans_norm2(R->mun2, R->mu_used, R->H * K, d);
    int jobs = R->BH * R->nsets;
    if (jobs >= R->nthr) {
        /* one job per thread at a time: one parallel region, single-threaded BLAS inside */
        rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(R->nthr)
        for (int j = 0; j < jobs; j++) rt_route_one(R, j / R->nsets, j % R->nsets, &R->ws[omp_get_thread_num()], 0);
        rb_par_end();
    } else {
        for (int j = 0; j < jobs; j++) rt_route_one(R, j / R->nsets, j % R->nsets, &R->ws[0], 1);
    }
    /* how many clusters picked each token, and the statistics of the choice */
    long unrouted = 0, multi = 0;
    int smin = R->n + 1, smax = 0;
    double ssum = 0.0;
#pragma omp parallel for schedule(static) num_threads(R->nthr) reduction(+ : unrouted, multi, ssum) \
    reduction(min : smin) reduction(max : smax)
    for (int bh = 0; bh < R->BH; bh++) {
        int *cnt = R->cnt + (size_t)bh * n;
        const int *off = R->off[0] + (size_t)bh * (K + 1), *mem = R->mem[0] + (size_t)bh * R->cap;
        memset(cnt, 0, (size_t)n * sizeof *cnt);
        for (int r = 0; r < off[K]; r++) cnt[mem[r]]++;
        for (int i = 0; i < n; i++) unrouted += cnt[i] == 0, multi += cnt[i] > 1;
        for (int c = 0; c < K; c++) {
            int m = off[c + 1] - off[c];
            smin = m < smin ? m : smin, smax = m > smax ? m : smax;
            ssum += m; /* integer-valued: exact in any order */
        }
    }
    double tokens = (double)R->BH * n;
    R->size_min = smin, R->size_max = smax, R->size_mean = ssum / ((double)R->BH * K);
    R->unrouted = unrouted / tokens, R->multi = multi / tokens;
    R->have_routes = 1;
}

/* Sum over one (b,h) of |x - mu_used[nearest]|^2 for every routing vector. */
static double rt_sqdist(const routing *R, int bh) {
    int d = R->d, n = R->n, h = bh % R->H;
    double t = 0.0;
    for (int s = 0; s < R->nsets; s++) {
        const float *X = R->x[s] + (size_t)bh * n * d;
        const int *near = R->near[s] + (size_t)bh * n;
        for (int i = 0; i < n; i++) {
            const float *xi = X + (size_t)i * d, *m = R->mu_used + ((size_t)h * R->K + near[i]) * d;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int j = 0; j < d; j++) acc += (xi[j] - m[j]) * (xi[j] - m[j]);
            t += acc;
        }
    }
    return t;
}

/* ---- attention inside clusters ----------------------------------------- */

/* L[r] = how many of the cluster's keys (a prefix, by position) query r sees. */
static void rt_visible(int *L, const int *qm, int mq, const int *km, int mk, int causal, int shared) {
    if (!causal) {
        for (int r = 0; r < mq; r++) L[r] = mk;
    } else if (shared) {
        for (int r = 0; r < mq; r++) L[r] = r + 1;
    } else {
        int j = 0;
        for (int r = 0; r < mq; r++) {
            while (j < mk && km[j] <= qm[r]) j++;
            L[r] = j;
        }
    }
}

/* Self is masked when shared, unless it is the only key the row sees. */
static inline int rt_self_masked(int shared, int r, int Lr) { return shared && r < Lr && Lr > 1; }

/* Shared and L2: a key row is its query row times the token's 1/|q| (the
 * same float product rt_normalise made), so a cluster's keys come from its
 * gathered queries. */
static int rt_keys_from_queries(const routing *R) { return R->shared && R->norm == ATTN_NORM_L2; }

typedef struct {
    int mq, mk;
    const int *qm, *km;
    size_t qrow, krow; /* first member row of the cluster in the (b,h)-major member arrays */
} rt_cluster;

static rt_cluster rt_get_cluster(const routing *R, int bh, int c) {
    rt_cluster C;
    const int *qo = R->off[0] + (size_t)bh * (R->K + 1), *ko = R->off[1] + (size_t)bh * (R->K + 1);
    C.mq = qo[c + 1] - qo[c];
    C.mk = ko[c + 1] - ko[c];
    C.qm = R->mem[0] + (size_t)bh * R->cap + qo[c];
    C.km = R->mem[1] + (size_t)bh * R->cap + ko[c];
    C.qrow = (size_t)bh * R->cap + qo[c];
    C.krow = (size_t)bh * R->cap + ko[c];
    return C;
}

/* The softmax of one tile's score rows in place (rows x Lmax, self masked
 * when shared), zero beyond each row's visible keys; lse per row. */
static void rt_softmax_rows(const routing *R, float *S, float *lse, const int *L, int r0, int rows, int Lmax) {
    /* phase by phase over the tile's rows, not row by row: each row's steps
     * (maximum, exponentials and their sum, 1 / sum) are a chain of
     * latencies, and rows 46 long are too short to hide them; separate
     * loops let the rows' chains overlap */
    float mx[RT_TQ];
    double l[RT_TQ];
    for (int rr = 0; rr < rows; rr++) {
        int r = r0 + rr, Lr = L[r];
        float *s = S + (size_t)rr * Lmax;
        if (rt_self_masked(R->shared, r, Lr)) s[r] = -INFINITY;
        mx[rr] = rb_vmax(s, Lr);
    }
    for (int rr = 0; rr < rows; rr++) {
        float *s = S + (size_t)rr * Lmax;
        l[rr] = rb_vexp_shift_sum(s, s, mx[rr], L[r0 + rr]);
    }
    for (int rr = 0; rr < rows; rr++) {
        int r = r0 + rr, Lr = L[r];
        float *s = S + (size_t)rr * Lmax;
        if (Lr == 0) { /* nothing visible: this cluster gives the row zero */
            memset(s, 0, (size_t)Lmax * sizeof(float));
            lse[r] = INFINITY;
            continue;
        }
        float inv = (float)(1.0 / l[rr]);
        for (int j = 0; j < Lr; j++) s[j] *= inv;
        for (int j = Lr; j < Lmax; j++) s[j] = 0.0f;
        /* backward reads the log-sum-exp only to make P again */
        if (!R->keep_p) lse[r] = mx[rr] + (float)log(l[rr]);
    }
}

/* A tile of query rows [r0, r0+rows) of a gathered cluster: its widest
 * visible key range and, per key j < Lmax, the first tile row that sees it
 * (F, for the products that run over keys: rows before it have zeros). */
static int rt_tile(const int *L, int *F, int r0, int rows) {
    int Lmax = 0;
    for (int r = r0; r < r0 + rows; r++) Lmax = RB_MAX(Lmax, L[r]);
    for (int j = 0, rr = 0; j < Lmax; j++) { /* L is nondecreasing along the rows */
        while (L[r0 + rr] <= j) rr++;
        F[j] = rr;
    }
    return Lmax;
}

/* S (rows x Lmax) = scale Q_tile K^T, row r up to its visible keys */
static void rt_scores(const routing *R, float *S, const float *Qt, const rt_ws *W, int r0, int rows, int Lmax) {
    cl_prod P = {.a = Qt, .ars = R->d, .acs = 1, .b = W->Kt, .ldb = R->ldt, .c = S, .ldc = Lmax,
                 .alpha = R->scale, .acc = 0};
    cl_gemm(&P, rows, Lmax, R->d, NULL, NULL, W->L + r0);
}

static void rt_cluster_forward(routing *R, int bh, int c, const float *q, const float *keys, const float *v,
                               rt_ws *W) {
    int d = R->d;
    size_t nd = (size_t)R->n * d;
    rt_cluster C = rt_get_cluster(R, bh, c);
    if (C.mq == 0) return;
    float *O = R->om + C.qrow * d, *lse = R->lse + C.qrow;
    cl_gather(W->Qc, NULL, 0, q + bh * nd, C.qm, C.mq, d);
    if (rt_keys_from_queries(R))
        cl_scale_rows(NULL, W->Kt, R->ldt, W->Qc, R->xs[0] + (size_t)bh * R->n, C.km, C.mk, d);
    else
        cl_gather(W->Kc, W->Kt, R->ldt, keys + bh * nd, C.km, C.mk, d);
    cl_gather(W->Vc, NULL, 0, v + bh * nd, C.km, C.mk, d);
    rt_visible(W->L, C.qm, C.mq, C.km, C.mk, R->causal, R->shared);
    for (int r0 = 0; r0 < C.mq; r0 += RT_TQ) {
        int rows = RB_MIN(RT_TQ, C.mq - r0), Lmax = rt_tile(W->L, W->F, r0, rows);
        if (Lmax == 0) {
            memset(O + (size_t)r0 * d, 0, (size_t)rows * d * sizeof(float));
            for (int r = r0; r < r0 + rows; r++) lse[r] = INFINITY;
            continue;
        }
        /* kept probabilities: the tile of rows r0.. sits at r0*w of the cluster's w*w floats */
        float *S = R->keep_p ? R->pm + (C.qrow + r0) * R->w : W->S;
        cl_prod QK = {.a = W->Qc + (size_t)r0 * d, .ars = d, .acs = 1, .b = W->Kt, .ldb = R->ldt, .c = S,
                      .ldc = Lmax, .alpha = R->scale, .acc = 0};
        /* backward reads the log-sum-exp only to make P again */
        if (cl_softmax_scores(&QK, rows, Lmax, d, W->L + r0, R->shared ? r0 : -1, R->keep_p ? NULL : lse + r0)) {
            rt_scores(R, S, W->Qc + (size_t)r0 * d, W, r0, rows, Lmax);
            rt_softmax_rows(R, S, lse, W->L, r0, rows, Lmax);
        }
        cl_prod PV = {.a = S, .ars = Lmax, .acs = 1, .b = W->Vc, .ldb = d, .c = O + (size_t)r0 * d, .ldc = d,
                      .alpha = 1.0f, .acc = 0};
        cl_gemm(&PV, rows, d, Lmax, NULL, W->L + r0, NULL);
    }
}

/* dO of the cluster's query rows (the output is the mean over the cnt
 * clusters that picked a token) into W->dOc, and D = rowsum(dO * O). */
static void rt_cluster_dout(const routing *R, const rt_cluster *C, int bh, const float *dout, rt_ws *W) {
    int d = R->d;
    const float *O = R->om + C->qrow * d;
    const int *cnt = R->cnt + (size_t)bh * R->n;
    cl_gather(W->dOc, NULL, 0, dout + (size_t)bh * R->n * d, C->qm, C->mq, d);
    for (int r = 0; r < C->mq; r++) {
        float *o = W->dOc + (size_t)r * d, inv = 1.0f / (float)cnt[C->qm[r]];
        const float *orow = O + (size_t)r * d;
        /* a head_dim-long dot product: float lanes, not a serial chain of double adds */
        float D = 0.0f;
#pragma omp simd reduction(+ : D)
        for (int j = 0; j < d; j++) o[j] *= inv, D += o[j] * orow[j];
        W->D[r] = D;
    }
}

/* P of one tile again from the saved log-sum-exp (when forward did not keep it) */
static void rt_probs_again(const routing *R, float *P, const rt_ws *W, const float *lse, int r0, int rows,
                           int Lmax) {
    rt_scores(R, P, W->Qc + (size_t)r0 * R->d, W, r0, rows, Lmax);
    for (int rr = 0; rr < rows; rr++) {
        int r = r0 + rr, Lr = W->L[r];
        float *p = P + (size_t)rr * Lmax;
        if (Lr > 0) rb_vexp_shift_sum(p, p, lse[r], Lr);
        if (rt_self_masked(R->shared, r, Lr)) p[r] = 0.0f;
        for (int j = Lr; j < Lmax; j++) p[j] = 0.0f;
    }
}

/* dS = P (dP - D) scale in place of dP, zero beyond each row's keys and
 * wholly zero for a row with one visible key (its softmax is constant) */
static void rt_dscores(const routing *R, float *dS, const float *P, const rt_ws *W, int r0, int rows, int Lmax) {
    for (int rr = 0; rr < rows; rr++) {
        int r = r0 + rr, Lr = W->L[r];
        const float *p = P + (size_t)rr * Lmax;
        float *g = dS + (size_t)rr * Lmax, Dr = W->D[r];
        int j = 0;
        if (Lr - rt_self_masked(R->shared, r, Lr) > 1)
            for (; j < Lr; j++) g[j] = p[j] * (g[j] - Dr) * R->scale;
        for (; j < Lmax; j++) g[j] = 0.0f;
    }
}

/* The four products of one tile's backward: dV += P^T dO, dP = dO V^T,
 * dQ = dS K, dK += dS^T Q. The products over keys start each key at the
 * first row that sees it (F). */
static void rt_tile_backward(const routing *R, const rt_cluster *C, rt_ws *W, const float *P, int r0, int rows,
                             int Lmax) {
    int acc = r0 > 0; /* the first tile writes dK and dV rows [0, Lmax), later ones add */
    int d = R->d;
    float *dS = W->dP, *dK = R->dkm + C->krow * d, *dV = R->dvm + C->krow * d, *dQ = R->dqm + C->qrow * d;
    const float *Qt = W->Qc + (size_t)r0 * d, *dOt = W->dOc + (size_t)r0 * d;
    cl_prod dv = {.a = P, .ars = 1, .acs = Lmax, .b = dOt, .ldb = d, .c = dV, .ldc = d, .alpha = 1.0f, .acc = acc};
    cl_gemm(&dv, Lmax, d, rows, W->F, NULL, NULL);
    cl_prod dp = {.a = dOt, .ars = d, .acs = 1, .b = W->Vt, .ldb = R->ldt, .c = dS, .ldc = Lmax, .alpha = 1.0f};
    cl_gemm(&dp, rows, Lmax, d, NULL, NULL, W->L + r0);
    rt_dscores(R, dS, P, W, r0, rows, Lmax);
    cl_prod dq = {.a = dS, .ars = Lmax, .acs = 1, .b = W->Kc, .ldb = d, .c = dQ + (size_t)r0 * d, .ldc = d,
                  .alpha = 1.0f, .acc = 0};
    cl_gemm(&dq, rows, d, Lmax, NULL, W->L + r0, NULL);
    cl_prod dk = {.a = dS, .ars = 1, .acs = Lmax, .b = Qt, .ldb = d, .c = dK, .ldc = d, .alpha = 1.0f, .acc = acc};
    cl_gemm(&dk, Lmax, d, rows, W->F, NULL, NULL);
}

/* Backward of one cluster. Its dQ rows are the memory of its outputs (dqm
 * is om): rt_cluster_dout reads the outputs (into D) before any tile writes
 * dQ, and clusters own disjoint member rows; so one backward per forward, as
 * every caller does. */
static void rt_cluster_backward(routing *R, int bh, int c, const float *dout, const float *q, const float *keys,
                                const float *v, rt_ws *W) {
    int d = R->d;
    size_t nd = (size_t)R->n * d;
    rt_cluster C = rt_get_cluster(R, bh, c);
    float *dK = R->dkm + C.krow * d, *dV = R->dvm + C.krow * d;
    if (C.mq == 0) {
        memset(dK, 0, (size_t)C.mk * d * sizeof(float));
        memset(dV, 0, (size_t)C.mk * d * sizeof(float));
        return;
    }
    const float *lse = R->lse + C.qrow;
    cl_gather(W->Qc, NULL, 0, q + bh * nd, C.qm, C.mq, d);
    if (rt_keys_from_queries(R))
        cl_scale_rows(W->Kc, R->keep_p ? NULL : W->Kt, R->ldt, W->Qc, R->xs[0] + (size_t)bh * R->n, C.km, C.mk, d);
    else
        cl_gather(W->Kc, R->keep_p ? NULL : W->Kt, R->ldt, keys + bh * nd, C.km, C.mk, d);
    cl_gather(W->Vc, W->Vt, R->ldt, v + bh * nd, C.km, C.mk, d);
    rt_cluster_dout(R, &C, bh, dout, W);
    rt_visible(W->L, C.qm, C.mq, C.km, C.mk, R->causal, R->shared);
    /* the first tile writes (not adds) the key rows it sees; zero the rest */
    int seen0 = 0;
    for (int r = 0; r < RB_MIN(RT_TQ, C.mq); r++) seen0 = RB_MAX(seen0, W->L[r]);
    memset(dK + (size_t)seen0 * d, 0, (size_t)(C.mk - seen0) * d * sizeof(float));
    memset(dV + (size_t)seen0 * d, 0, (size_t)(C.mk - seen0) * d * sizeof(float));
    for (int r0 = 0; r0 < C.mq; r0 += RT_TQ) {
        int rows = RB_MIN(RT_TQ, C.mq - r0), Lmax = rt_tile(W->L, W->F, r0, rows);
        if (Lmax == 0) {
            memset(R->dqm + (C.qrow + r0) * d, 0, (size_t)rows * d * sizeof(float));
            continue;
        }
        float *P = R->keep_p ? R->pm + (C.qrow + r0) * R->w : W->S;
        if (!R->keep_p) rt_probs_again(R, P, W, lse, r0, rows, Lmax);
        rt_tile_backward(R, &C, W, P, r0, rows, Lmax);
    }
}

/* dst (n,d) row p = the sum, in member order, of the rows r of src whose
 * member position mem[r] is p; rows no member names are zero. The first
 * contribution is copied, not added to a zeroed row: one pass over dst
 * instead of two. seen: n bytes of scratch. */
static void rt_scatter(float *dst, const float *src, const int *mem, int total, int n, int d, unsigned char *seen) {
    memset(seen, 0, (size_t)n);
    for (int r = 0; r < total; r++) {
        if (r + 8 < total) cl_prefetch_rows(dst, mem + r + 8, 1, d);
        float *o = dst + (size_t)mem[r] * d;
        const float *sr = src + (size_t)r * d;
        if (seen[mem[r]]) {
            for (int j = 0; j < d; j++) o[j] += sr[j];
        } else {
            memcpy(o, sr, (size_t)d * sizeof(float));
            seen[mem[r]] = 1;
        }
    }
    for (int i = 0; i < n; i++)
        if (!seen[i]) memset(dst + (size_t)i * d, 0, (size_t)d * sizeof(float));
}

/* Shared keys: dst (n,d) row p = the sum over the member rows r naming p of
 * dqm row r plus, through the normalisation's backward, dkm row r (the
 * normalised queries were the keys). That backward is linear in the
 * gradient, so each member row goes through it on its own and no scattered
 * dk is written and read back. Rows no member names are zero. */
static void rt_scatter_shared(const routing *R, float *dst, const float *dqm, const float *dkm, const int *mem,
                              int total, const float *X, const float *xs, unsigned char *seen) {
    int n = R->n, d = R->d;
    memset(seen, 0, (size_t)n);
    for (int r = 0; r < total; r++) {
        if (r + 8 < total) {
            cl_prefetch_rows(dst, mem + r + 8, 1, d);
            cl_prefetch_rows(X, mem + r + 8, 1, d);
        }
        int p = mem[r];
        float *o = dst + (size_t)p * d;
        const float *sr = dqm + (size_t)r * d;
        if (seen[p]) {
            for (int j = 0; j < d; j++) o[j] += sr[j];
        } else {
            memcpy(o, sr, (size_t)d * sizeof(float));
            seen[p] = 1;
        }
        rt_norm_backward(o, dkm + (size_t)r * d, X + (size_t)p * d, xs[p], d, R->norm);
    }
    for (int i = 0; i < n; i++)
        if (!seen[i]) memset(dst + (size_t)i * d, 0, (size_t)d * sizeof(float));
}

/* ---- the backend -------------------------------------------------------- */

static void rt_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    routing *R = (routing *)a;
    int n = R->n, d = R->d, K = R->K;
    size_t nd = (size_t)n * d, rows = (size_t)R->BH * n;
    int keep = (flags & ATTN_KEEP_ROUTES) && R->have_routes;
    int train = (flags & ATTN_TRAIN) && !(flags & ATTN_KEEP_ROUTES);

    rt_normalise(R->x[0], R->xs[0], q, rows, d, R->norm);
    if (!R->shared) rt_normalise(R->x[1], R->xs[1], k, rows, d, R->norm);
    if (!R->initted) {
        rt_init_centroids(R);
        R->initted = 1;
    }
    if (!keep) rt_route(R);

    const float *keys = R->shared ? R->x[0] : k;
    int tasks = R->BH * K;
    rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(R->nthr)
    for (int t = 0; t < tasks; t++) rt_cluster_forward(R, t / K, t % K, q, keys, v, &R->ws[omp_get_thread_num()]);
    rb_par_end();

    /* scatter back in fixed cluster order, then average */
#pragma omp parallel for schedule(static) num_threads(R->nthr)
    for (int bh = 0; bh < R->BH; bh++) {
        float *ob = out + (size_t)bh * nd;
        const int *mem = R->mem[0] + (size_t)bh * R->cap, *cnt = R->cnt + (size_t)bh * n;
        int total = R->off[0][(size_t)bh * (K + 1) + K];
        rt_scatter(ob, R->om + (size_t)bh * R->cap * d, mem, total, n, d, R->ws[omp_get_thread_num()].seen);
        for (int i = 0; i < n; i++)
            if (cnt[i] > 1) {
                float inv = 1.0f / (float)cnt[i];
                for (int j = 0; j < d; j++) ob[(size_t)i * d + j] *= inv;
            }
        R->partial[bh] = rt_sqdist(R, bh);
    }
    double tot = 0.0;
    for (int bh = 0; bh < R->BH; bh++) tot += R->partial[bh];
    R->commit_loss = tot / ((double)R->BH * n * R->nsets);
    R->objective = tot / R->BH;

    if (train) rt_update_centroids(R);
}

static void rt_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *out) {
    (void)out;
    routing *R = (routing *)a;
    int n = R->n, d = R->d, K = R->K;
    size_t nd = (size_t)n * d;
    const float *keys = R->shared ? R->x[0] : k;
    int tasks = R->BH * K;
    rb_par_begin();
#pragma omp parallel for schedule(dynamic, 1) num_threads(R->nthr)
    for (int t = 0; t < tasks; t++)
        rt_cluster_backward(R, t / K, t % K, dout, q, keys, v, &R->ws[omp_get_thread_num()]);
    rb_par_end();

    /* commitment loss gradient factor: d/dx of cw * mean |x - mu|^2 */
    float cg = (float)(2.0 * R->commit_weight / ((double)R->BH * n * R->nsets));
#pragma omp parallel for schedule(static) num_threads(R->nthr)
    for (int bh = 0; bh < R->BH; bh++) {
        int h = bh % R->H;
        float *dqb = dq + (size_t)bh * nd, *dkb = dk + (size_t)bh * nd, *dvb = dv + (size_t)bh * nd;
        const int *qmem = R->mem[0] + (size_t)bh * R->cap, *kmem = R->mem[1] + (size_t)bh * R->cap;
        int qtot = R->off[0][(size_t)bh * (K + 1) + K], ktot = R->off[1][(size_t)bh * (K + 1) + K];
        unsigned char *seen = R->ws[omp_get_thread_num()].seen;
        size_t mrow = (size_t)bh * R->cap * d;
        if (R->shared)
            rt_scatter_shared(R, dqb, R->dqm + mrow, R->dkm + mrow, qmem, qtot, R->x[0] + (size_t)bh * nd,
                              R->xs[0] + (size_t)bh * n, seen);
        else {
            rt_scatter(dqb, R->dqm + mrow, qmem, qtot, n, d, seen);
            rt_scatter(dkb, R->dkm + mrow, kmem, ktot, n, d, seen);
        }
        rt_scatter(dvb, R->dvm + mrow, kmem, ktot, n, d, seen);
        float *g = R->ws[omp_get_thread_num()].Qc; /* a row of scratch */
        for (int s = 0; s < R->nsets && cg != 0.0f; s++) {
            const float *X = R->x[s] + (size_t)bh * nd, *xs = R->xs[s] + (size_t)bh * n;
            const int *near = R->near[s] + (size_t)bh * n;
            float *dst = s == 0 ? dqb : dkb;
            for (int i = 0; i < n; i++) {
                const float *xi = X + (size_t)i * d, *m = R->mu_used + ((size_t)h * K + near[i]) * d;
                for (int j = 0; j < d; j++) g[j] = cg * (xi[j] - m[j]);
                rt_norm_backward(dst + (size_t)i * d, g, xi, xs[i], d, R->norm);
            }
        }
        if (R->shared) memset(dkb, 0, nd * sizeof(float));
    }
}

static int rt_stats(const attn *a, attn_stat *out, int max) {
    const routing *R = (const routing *)a;
    attn_stat all[] = {
        {"cluster_size_min", R->size_min},     {"cluster_size_max", R->size_max},
        {"cluster_size_mean", R->size_mean},   {"unrouted_share", R->unrouted},
        {"multi_routed_share", R->multi},      {"kmeans_objective", R->objective},
        {"commit_loss", R->commit_loss},
    };
    int n = (int)(sizeof all / sizeof all[0]);
    if (n > max) n = max;
    for (int i = 0; i < n; i++) out[i] = all[i];
    return n;
}

static int rt_routes(const attn *a, int b, int h, int c, int keys, const int **members) {
    const routing *R = (const routing *)a;
    if (!R->have_routes || b < 0 || b >= R->B || h < 0 || h >= R->H || c < 0 || c >= R->K || keys < 0 || keys > 1)
        return -1;
    size_t bh = (size_t)b * R->H + h;
    const int *off = R->off[keys] + bh * (R->K + 1);
    *members = R->mem[keys] + bh * R->cap + off[c];
    return off[c + 1] - off[c];
}

static float *rt_centroids(attn *a) {
    routing *R = (routing *)a;
    R->initted = 1;
    return R->mu;
}

const attn_backend attn_backend_routing = {
    .name = "routing",
    .description = "Routing Transformer: online k-means clusters, attention inside clusters",
    .uses = ATTN_USES_WINDOW | ATTN_USES_CLUSTERS | ATTN_USES_SHARE_QK | ATTN_USES_ASSIGN | ATTN_USES_NORM |
            ATTN_USES_KMEANS,
    .validate = rt_validate,
    .create = rt_create,
    .forward = rt_forward,
    .backward = rt_backward,
    .flops = rt_flops,
    .act_bytes = rt_act_bytes,
    .stats = rt_stats,
    .equals_dense = rt_equals_dense,
    .destroy = rt_destroy,
    .routes = rt_routes,
    .centroids = rt_centroids,
};
