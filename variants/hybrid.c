/* hybrid.c: the Routing Transformer paper's headline layer ("hybrid"): of
 * the H heads, the first local_heads (L) use local attention and the other
 * H-L use routing attention, with the same window (default seq / clusters,
 * rounded up as routing does, clusters auto = round(sqrt(seq))) and every
 * other parameter shared. It is built by composition: one `local` instance
 * for [batch, L, seq, d] and one `routing` instance for [batch, H-L, seq, d],
 * through their backend structs, so neither backend knows about the other.
 *
 * In the [B, H, n, d] layout the two head subsets of one batch entry are
 * contiguous, so with batch 1 the halves are plain sub-arrays and nothing is
 * copied. With batch > 1 the inputs are gathered into per-half buffers held
 * by the instance (kept from forward for backward, which the interface
 * guarantees sees the same q, k, v, out) and results scattered back.
 *
 * Routing's centroids are [H-L, K, d] inside the routing instance; centroids()
 * presents them as [H, K, d] (the interface's shape, so checkpoints and .npy
 * export work unchanged) in a buffer of the hybrid's whose local-head rows
 * read as zero (writes to them are dropped); writes to the other rows reach
 * routing before the next forward or centroids() call. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"

extern const attn_backend attn_backend_local;
extern const attn_backend attn_backend_routing;
extern const attn_backend attn_backend_hybrid;

typedef struct {
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv; /* (B, heads of the half, n, d) gathered copies */
} hybrid_half_bufs;

typedef struct {
    attn a;
    int L, R;           /* local heads, routing heads */
    attn *loc, *rt;     /* sub-instances, NULL when that half has no heads */
    hybrid_half_bufs g[2]; /* [0] local, [1] routing; NULL pointers when batch == 1 */
    float *cen;         /* (H, K, d) centroids as presented by centroids() */
    int cen_exposed;    /* cen was handed out: it may hold writes routing has not seen */
    void *mem;          /* one allocation for the gather buffers and cen */
} hybrid_attn;

/* The two halves' parameters: same as p except heads. */
static void hybrid_split(const attn_params *p, attn_params *pl, attn_params *pr) {
    *pl = *p;
    *pr = *p;
    pl->heads = p->local_heads;
    pr->heads = p->heads - p->local_heads;
    pl->local_heads = pr->local_heads = -1;
}

static int hybrid_validate(attn_params *p, rb_err *e) {
    if (p->heads <= 0) return rb_err_set(e, RB_EINVAL, "heads", "heads must be positive (got %d)", p->heads);
    if (p->seq <= 0) return rb_err_set(e, RB_EINVAL, "seq", "seq must be positive (got %d)", p->seq);
    if (p->local_heads == -1) p->local_heads = p->heads / 2;
    if (p->local_heads < 0 || p->local_heads > p->heads)
        return rb_err_set(e, RB_EINVAL, "local_heads",
                          "local_heads must be between 0 and heads (%d), or auto for heads/2 (got %d)", p->heads,
                          p->local_heads);
    if (p->clusters < 0)
        return rb_err_set(e, RB_EINVAL, "clusters", "clusters must not be negative (got %d)", p->clusters);
    if (p->window < 0) return rb_err_set(e, RB_EINVAL, "window", "window must not be negative (got %d)", p->window);
    if (p->clusters > p->seq)
        return rb_err_set(e, RB_EINVAL, "clusters", "clusters (%d) must not exceed seq (%d)", p->clusters, p->seq);
    int K = p->clusters > 0 ? p->clusters : (int)lround(sqrt((double)p->seq));
    if (K < 1) K = 1;
    p->clusters = K;
    /* one window for both halves: the local block equals the cluster size */
    if (p->window == 0) p->window = (p->seq + K - 1) / K;
    attn_params pl, pr;
    hybrid_split(p, &pl, &pr);
    rb_err sub;
    if (pl.heads > 0 && attn_backend_local.validate(&pl, &sub) != 0)
        return rb_err_set(e, sub.code, sub.key, "local heads: %s", sub.msg);
    if (pr.heads > 0) {
        if (attn_backend_routing.validate(&pr, &sub) != 0)
            return rb_err_set(e, sub.code, sub.key, "routing heads: %s", sub.msg);
        /* what routing resolved (share_qk's default) is the layer's */
        p->clusters = pr.clusters;
        p->window = pr.window;
        p->share_qk = pr.share_qk;
    }
    return 0;
}

static double hybrid_flops(const attn_params *p, int pass) {
    attn_params pl, pr;
    hybrid_split(p, &pl, &pr);
    double f = 0.0;
    if (pl.heads > 0) f += attn_backend_local.flops(&pl, pass);
    if (pr.heads > 0) f += attn_backend_routing.flops(&pr, pass);
    return f;
}

/* Floats of the hybrid's own buffers: 8 gathered tensors when batch > 1
 * (the two halves together are the size of one full tensor each), plus the
 * [H, K, d] centroid view. */
static size_t hybrid_own_floats(const attn_params *p) {
    size_t full = (size_t)p->batch * p->heads * p->seq * p->head_dim;
    size_t gather = p->batch > 1 ? 8 * full : 0;
    return gather + (size_t)p->heads * p->clusters * p->head_dim;
}

static size_t hybrid_act_bytes(const attn_params *p) {
    attn_params pl, pr;
    hybrid_split(p, &pl, &pr);
    size_t b = hybrid_own_floats(p) * sizeof(float);
    if (pl.heads > 0) b += attn_backend_local.act_bytes(&pl);
    if (pr.heads > 0) b += attn_backend_routing.act_bytes(&pr);
    return b;
}

static void hybrid_destroy(attn *a) {
    hybrid_attn *ha = (hybrid_attn *)a;
    if (ha->loc) ha->loc->be->destroy(ha->loc);
    if (ha->rt) ha->rt->be->destroy(ha->rt);
    free(ha->mem);
    free(ha);
}

static attn *hybrid_create(const attn_params *p, char *err, size_t errlen) {
    hybrid_attn *ha = calloc(1, sizeof *ha);
    if (!ha) {
        rb_fail(err, errlen, "out of memory");
        return NULL;
    }
    ha->a.be = &attn_backend_hybrid;
    ha->a.p = *p;
    attn_params pl, pr;
    hybrid_split(p, &pl, &pr);
    ha->L = pl.heads;
    ha->R = pr.heads;
    char msg[400];
    if (ha->L > 0 && !(ha->loc = attn_backend_local.create(&pl, msg, sizeof msg))) {
        hybrid_destroy(&ha->a);
        rb_fail(err, errlen, "local heads: %s", msg);
        return NULL;
    }
    if (ha->R > 0 && !(ha->rt = attn_backend_routing.create(&pr, msg, sizeof msg))) {
        hybrid_destroy(&ha->a);
        rb_fail(err, errlen, "routing heads: %s", msg);
        return NULL;
    }
    size_t own = hybrid_own_floats(p);
    ha->mem = rb_aligned_alloc(own * sizeof(float));
    if (!ha->mem) {
        hybrid_destroy(&ha->a);
        rb_fail(err, errlen, "out of memory: hybrid needs %.1f MiB of buffers", (double)own * 4 / (1 << 20));
        return NULL;
    }
    float *f = ha->mem;
    if (p->batch > 1) {
        size_t hsz = (size_t)p->seq * p->head_dim;
        for (int s = 0; s < 2; s++) {
            size_t n = (size_t)p->batch * (s == 0 ? ha->L : ha->R) * hsz;
            float **bufs[] = {&ha->g[s].q,    &ha->g[s].k,  &ha->g[s].v,  &ha->g[s].out,
                              &ha->g[s].dout, &ha->g[s].dq, &ha->g[s].dk, &ha->g[s].dv};
            for (int t = 0; t < 8; t++) *bufs[t] = f, f += n;
        }
    }
    ha->cen = f;
    memset(ha->cen, 0, (size_t)p->heads * p->clusters * p->head_dim * sizeof(float));
    ha->a.bytes = own * sizeof(float) + (ha->loc ? ha->loc->bytes : 0) + (ha->rt ? ha->rt->bytes : 0);
    return &ha->a;
}

/* Gather the full [B, H, n, d] tensor into the halves [B, L, n, d] and
 * [B, R, n, d] (a half with no heads is skipped). */
static void hybrid_gather(float *loc, float *rt, const float *full, int B, int L, int R, size_t hsz) {
    for (int b = 0; b < B; b++) {
        const float *src = full + (size_t)b * (L + R) * hsz;
        if (L) memcpy(loc + (size_t)b * L * hsz, src, (size_t)L * hsz * sizeof(float));
        if (R) memcpy(rt + (size_t)b * R * hsz, src + (size_t)L * hsz, (size_t)R * hsz * sizeof(float));
    }
}

/* The inverse: the halves back into the full tensor. */
static void hybrid_scatter(float *full, const float *loc, const float *rt, int B, int L, int R, size_t hsz) {
    for (int b = 0; b < B; b++) {
        float *dst = full + (size_t)b * (L + R) * hsz;
        if (L) memcpy(dst, loc + (size_t)b * L * hsz, (size_t)L * hsz * sizeof(float));
        if (R) memcpy(dst + (size_t)L * hsz, rt + (size_t)b * R * hsz, (size_t)R * hsz * sizeof(float));
    }
}

/* Writes made through centroids() reach routing before it runs again. */
static void hybrid_push_centroids(hybrid_attn *ha) {
    if (!ha->cen_exposed || !ha->rt) return;
    size_t per = (size_t)ha->a.p.clusters * ha->a.p.head_dim;
    memcpy(ha->rt->be->centroids(ha->rt), ha->cen + (size_t)ha->L * per, (size_t)ha->R * per * sizeof(float));
}

static void hybrid_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    hybrid_attn *ha = (hybrid_attn *)a;
    const attn_params *p = &a->p;
    int B = p->batch, L = ha->L, R = ha->R;
    size_t hsz = (size_t)p->seq * p->head_dim;
    hybrid_push_centroids(ha);
    ha->cen_exposed = 0;
    if (B == 1) {
        if (L) ha->loc->be->forward(ha->loc, out, q, k, v, flags);
        if (R) ha->rt->be->forward(ha->rt, out + L * hsz, q + L * hsz, k + L * hsz, v + L * hsz, flags);
        return;
    }
    hybrid_half_bufs *gl = &ha->g[0], *gr = &ha->g[1];
    hybrid_gather(gl->q, gr->q, q, B, L, R, hsz);
    hybrid_gather(gl->k, gr->k, k, B, L, R, hsz);
    hybrid_gather(gl->v, gr->v, v, B, L, R, hsz);
    if (L) ha->loc->be->forward(ha->loc, gl->out, gl->q, gl->k, gl->v, flags);
    if (R) ha->rt->be->forward(ha->rt, gr->out, gr->q, gr->k, gr->v, flags);
    hybrid_scatter(out, gl->out, gr->out, B, L, R, hsz);
}

static void hybrid_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out) {
    hybrid_attn *ha = (hybrid_attn *)a;
    const attn_params *p = &a->p;
    int B = p->batch, L = ha->L, R = ha->R;
    size_t hsz = (size_t)p->seq * p->head_dim;
    if (B == 1) {
        if (L) ha->loc->be->backward(ha->loc, dq, dk, dv, dout, q, k, v, out);
        if (R) {
            size_t o = (size_t)L * hsz;
            ha->rt->be->backward(ha->rt, dq + o, dk + o, dv + o, dout + o, q + o, k + o, v + o, out + o);
        }
        return;
    }
    /* q, k, v, out are the arrays the last forward saw: their gathered
     * halves are still in the buffers */
    hybrid_half_bufs *gl = &ha->g[0], *gr = &ha->g[1];
    hybrid_gather(gl->dout, gr->dout, dout, B, L, R, hsz);
    if (L) ha->loc->be->backward(ha->loc, gl->dq, gl->dk, gl->dv, gl->dout, gl->q, gl->k, gl->v, gl->out);
    if (R) ha->rt->be->backward(ha->rt, gr->dq, gr->dk, gr->dv, gr->dout, gr->q, gr->k, gr->v, gr->out);
    hybrid_scatter(dq, gl->dq, gr->dq, B, L, R, hsz);
    hybrid_scatter(dk, gl->dk, gr->dk, B, L, R, hsz);
    hybrid_scatter(dv, gl->dv, gr->dv, B, L, R, hsz);
}

static int hybrid_stats(const attn *a, attn_stat *out, int max) {
    const hybrid_attn *ha = (const hybrid_attn *)a;
    if (!ha->rt || !ha->rt->be->stats) return 0;
    return ha->rt->be->stats(ha->rt, out, max);
}

static int hybrid_equals_dense(const attn_params *p) {
    return p->local_heads == p->heads && p->window >= p->seq;
}

/* Routes of routing head h (h >= L); local heads have no clusters: -1. */
static int hybrid_routes(const attn *a, int b, int h, int c, int keys, const int **members) {
    const hybrid_attn *ha = (const hybrid_attn *)a;
    if (!ha->rt || h < ha->L || !ha->rt->be->routes) return -1;
    return ha->rt->be->routes(ha->rt, b, h - ha->L, c, keys, members);
}

static float *hybrid_centroids(attn *a) {
    hybrid_attn *ha = (hybrid_attn *)a;
    size_t per = (size_t)a->p.clusters * a->p.head_dim;
    if (ha->rt) {
        hybrid_push_centroids(ha); /* earlier writes first, then read back */
        memcpy(ha->cen + (size_t)ha->L * per, ha->rt->be->centroids(ha->rt), (size_t)ha->R * per * sizeof(float));
    }
    memset(ha->cen, 0, (size_t)ha->L * per * sizeof(float)); /* local heads have none */
    ha->cen_exposed = 1;
    return ha->cen;
}

const attn_backend attn_backend_hybrid = {
    .name = "hybrid",
    .description = "local_heads heads local attention, the rest routing (default half and half), one window",
    .uses = ATTN_USES_WINDOW | ATTN_USES_CLUSTERS | ATTN_USES_LOCAL_HEADS | ATTN_USES_SHARE_QK | ATTN_USES_ASSIGN |
            ATTN_USES_NORM | ATTN_USES_KMEANS,
    .validate = hybrid_validate,
    .create = hybrid_create,
    .forward = hybrid_forward,
    .backward = hybrid_backward,
    .flops = hybrid_flops,
    .act_bytes = hybrid_act_bytes,
    .stats = hybrid_stats,
    .equals_dense = hybrid_equals_dense,
    .destroy = hybrid_destroy,
    .routes = hybrid_routes,
    .centroids = hybrid_centroids,
};
