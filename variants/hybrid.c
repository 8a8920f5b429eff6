/* hybrid.c: the Routing Transformer paper's headline layer ("hybrid"): the H
 * heads of one layer split into head groups, each computed by a registered
 * backend with its own parameters. The groups are the rows of hybrid_kinds
 * below, in head order: the first local_heads (L) heads are `local` with
 * block local_window (auto: window), the next lsh_heads (default 0) `lsh`
 * with chunk window and the layer's hashes and buckets, the rest `routing`
 * with clusters and window (default seq / clusters, rounded up as routing
 * does; clusters auto = round(sqrt(seq))). Every other parameter is the
 * layer's. This is the authors' local_num_heads /
 * sparsity_cluster_num_heads split with query_shape (local block) and
 * sparsity_cluster_attention_window (cluster size) set apart; local heads
 * beside lsh heads and no routing ones is their wikitext103_local_hash.
 *
 * Adding a kind of head (strided, say) is one row of hybrid_kinds (its
 * backend's name, how many heads it takes, how its parameters differ from
 * the layer's) plus, in params.def, the parameter that counts its heads:
 * nothing else here changes, and neither backend knows about the other.
 *
 * In the [B, H, n, d] layout the groups of one batch entry are contiguous,
 * so with batch 1 each group is a plain sub-array and nothing is copied.
 * With batch > 1 the inputs are gathered into per-group buffers held by the
 * instance (kept from forward for backward, which the interface guarantees
 * sees the same q, k, v, out) and results scattered back.
 *
 * Centroids of the groups that have them (routing) are presented by
 * centroids() as [H, K, d] (the interface's shape, so checkpoints and .npy
 * export work unchanged) in a buffer of the hybrid's whose other rows read
 * as zero (writes to them are dropped); writes to a group's rows reach it
 * before the next forward or centroids() call. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/instance.h"
#include "util/common.h"

extern const attn_backend attn_backend_hybrid;

/* ---- the kinds of head, in head order ---- */

typedef struct {
    const char *backend; /* registered name */
    /* heads of the layer this kind takes; -1 = the heads no other row takes
     * (at most one row) */
    int (*heads)(const attn_params *p);
    /* the group's parameters from the layer's (heads already set); NULL = the layer's */
    void (*params)(attn_params *g, const attn_params *layer);
    /* after the group validated: what it resolved that is the layer's too; NULL = nothing */
    void (*resolved)(attn_params *layer, const attn_params *g);
} hybrid_kind;

static int local_heads_of(const attn_params *p) { return p->local_heads; }
static int lsh_heads_of(const attn_params *p) { return p->lsh_heads; }
static int rest_of(const attn_params *p) { (void)p; return -1; }

static void local_params(attn_params *g, const attn_params *p) {
    if (p->local_window > 0) g->window = p->local_window;
}

/* routing's clusters, window and share_qk defaults are the layer's */
static void routing_resolved(attn_params *p, const attn_params *g) {
    p->clusters = g->clusters;
    p->window = g->window;
    p->share_qk = g->share_qk;
}

static const hybrid_kind hybrid_kinds[] = {
    {"local", local_heads_of, local_params, NULL},
    {"lsh", lsh_heads_of, NULL, NULL},
    {"routing", rest_of, NULL, routing_resolved},
};
#define HYBRID_NKINDS ((int)(sizeof hybrid_kinds / sizeof hybrid_kinds[0]))

typedef struct {
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv; /* (B, heads of the group, n, d) gathered copies */
} hybrid_bufs;

typedef struct {
    attn_head_group g; /* backend, first head, heads, parameters */
    attn *inst;        /* NULL when the group has no heads */
    hybrid_bufs buf;   /* NULL pointers when batch == 1 */
} hybrid_group;

typedef struct {
    attn a;
    hybrid_group grp[HYBRID_NKINDS];
    float *cen;      /* (H, K, d) centroids as presented by centroids() */
    int cen_exposed; /* cen was handed out: it may hold writes the groups have not seen */
    void *mem;       /* one allocation for the gather buffers and cen */
} hybrid_attn;

/* The groups of layer p (validated or not): backends, head ranges and
 * parameters. -1 with e filled when the heads do not add up. */
static int hybrid_groups(const attn_params *p, attn_head_group *out, rb_err *e) {
    int taken = 0, rest = -1;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        int n = hybrid_kinds[i].heads(p);
        if (n < 0) rest = i;
        else taken += n;
        out[i].heads = n;
    }
    if (taken > p->heads)
        return rb_err_set(e, RB_EINVAL, p->lsh_heads > 0 ? "lsh_heads" : "local_heads",
                          "local_heads (%d) and lsh_heads (%d) take more than the layer's %d heads", p->local_heads,
                          p->lsh_heads, p->heads);
    for (int i = 0, h = 0; i < HYBRID_NKINDS; i++) {
        const hybrid_kind *k = &hybrid_kinds[i];
        attn_head_group *g = &out[i];
        g->be = attn_find(k->backend);
        if (!g->be) return rb_err_set(e, RB_EINVAL, "", "hybrid: backend %s is not registered", k->backend);
        if (i == rest) g->heads = p->heads - taken;
        g->first = h;
        h += g->heads;
        g->p = *p;
        g->p.heads = g->heads;
        g->p.local_heads = -1;
        g->p.local_window = 0;
        g->p.lsh_heads = 0;
        if (k->params) k->params(&g->p, p);
    }
    return 0;
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
    /* the layer's window defaults to the cluster size (local heads use it too unless local_window is set) */
    if (p->window == 0) p->window = (p->seq + K - 1) / K;
    attn_head_group g[HYBRID_NKINDS];
    if (hybrid_groups(p, g, e) != 0) return -1;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        if (g[i].heads == 0) continue;
        rb_err sub;
        if (g[i].be->validate(&g[i].p, &sub) != 0) {
            /* the local heads' window is local_window when that is set */
            const char *key = !strcmp(sub.key, "window") && hybrid_kinds[i].params == local_params && p->local_window
                                  ? "local_window" : sub.key;
            return rb_err_set(e, sub.code, key, "%s heads: %s", g[i].be->name, sub.msg);
        }
        if (hybrid_kinds[i].resolved) hybrid_kinds[i].resolved(p, &g[i].p);
    }
    return 0;
}

/* The groups of a validated p (whose heads add up). */
static void hybrid_groups_of(const attn_params *p, attn_head_group *g) {
    rb_err e;
    if (hybrid_groups(p, g, &e) != 0) memset(g, 0, HYBRID_NKINDS * sizeof *g);
    for (int i = 0; i < HYBRID_NKINDS; i++)
        if (g[i].heads > 0) g[i].be->validate(&g[i].p, &e);
}

static double hybrid_flops(const attn_params *p, int pass) {
    attn_head_group g[HYBRID_NKINDS];
    hybrid_groups_of(p, g);
    double f = 0.0;
    for (int i = 0; i < HYBRID_NKINDS; i++)
        if (g[i].heads > 0) f += g[i].be->flops(&g[i].p, pass);
    return f;
}

/* Floats of the hybrid's own buffers: 8 gathered tensors when batch > 1
 * (the groups together are the size of one full tensor each), plus the
 * [H, K, d] centroid view. */
static size_t hybrid_own_floats(const attn_params *p) {
    size_t full = (size_t)p->batch * p->heads * p->seq * p->head_dim;
    size_t gather = p->batch > 1 ? 8 * full : 0;
    return gather + (size_t)p->heads * p->clusters * p->head_dim;
}

static size_t hybrid_act_bytes(const attn_params *p) {
    attn_head_group g[HYBRID_NKINDS];
    hybrid_groups_of(p, g);
    size_t b = hybrid_own_floats(p) * sizeof(float);
    for (int i = 0; i < HYBRID_NKINDS; i++)
        if (g[i].heads > 0) b += g[i].be->act_bytes(&g[i].p);
    return b;
}

static void hybrid_destroy(attn *a) {
    hybrid_attn *ha = (hybrid_attn *)a;
    for (int i = 0; i < HYBRID_NKINDS; i++)
        if (ha->grp[i].inst) ha->grp[i].inst->be->destroy(ha->grp[i].inst);
    free(ha->mem);
    free(ha);
}

/* Carve the gather buffers (batch > 1) and the centroid view from ha->mem. */
static void hybrid_carve(hybrid_attn *ha, const attn_params *p) {
    float *f = ha->mem;
    size_t hsz = (size_t)p->seq * p->head_dim;
    for (int i = 0; i < HYBRID_NKINDS && p->batch > 1; i++) {
        hybrid_bufs *b = &ha->grp[i].buf;
        size_t n = (size_t)p->batch * ha->grp[i].g.heads * hsz;
        float **bufs[] = {&b->q, &b->k, &b->v, &b->out, &b->dout, &b->dq, &b->dk, &b->dv};
        for (int t = 0; t < 8; t++) *bufs[t] = f, f += n;
    }
    ha->cen = f;
    memset(ha->cen, 0, (size_t)p->heads * p->clusters * p->head_dim * sizeof(float));
}

static attn *hybrid_create(const attn_params *p, char *err, size_t errlen) {
    hybrid_attn *ha = attn_instance_new(sizeof *ha, &attn_backend_hybrid, p, err, errlen);
    if (!ha) return NULL;
    attn_head_group g[HYBRID_NKINDS];
    hybrid_groups_of(p, g);
    size_t own = hybrid_own_floats(p), bytes = own * sizeof(float);
    char msg[400];
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        ha->grp[i].g = g[i];
        if (g[i].heads == 0) continue;
        if (!(ha->grp[i].inst = g[i].be->create(&g[i].p, msg, sizeof msg))) {
            hybrid_destroy(&ha->a);
            rb_fail(err, errlen, "%s heads: %s", g[i].be->name, msg);
            return NULL;
        }
        bytes += ha->grp[i].inst->bytes;
    }
    ha->mem = rb_aligned_alloc(own * sizeof(float));
    if (!ha->mem) {
        hybrid_destroy(&ha->a);
        rb_fail(err, errlen, "out of memory: hybrid needs %.1f MiB of buffers", (double)own * 4 / (1 << 20));
        return NULL;
    }
    hybrid_carve(ha, p);
    ha->a.bytes = bytes;
    return &ha->a;
}

/* Copy heads [h0, h0 + nh) of every batch entry between the full
 * [B, H, n, d] tensor and the group's [B, nh, n, d] (to_group: full -> group). */
static void hybrid_copy(float *full, float *grp, int B, int H, int h0, int nh, size_t hsz, int to_group) {
    size_t bytes = (size_t)nh * hsz * sizeof(float);
    for (int b = 0; b < B && nh > 0; b++) {
        float *f = full + ((size_t)b * H + h0) * hsz, *g = grp + (size_t)b * nh * hsz;
        if (to_group) memcpy(g, f, bytes);
        else memcpy(f, g, bytes);
    }
}

static void hybrid_gather(float *grp, const float *full, const attn *a, const attn_head_group *g) {
    hybrid_copy((float *)full, grp, a->p.batch, a->p.heads, g->first, g->heads, (size_t)a->p.seq * a->p.head_dim, 1);
}

static void hybrid_scatter(float *full, float *grp, const attn *a, const attn_head_group *g) {
    hybrid_copy(full, grp, a->p.batch, a->p.heads, g->first, g->heads, (size_t)a->p.seq * a->p.head_dim, 0);
}

/* Floats of one group's rows in the [H, K, d] centroid view. */
static size_t hybrid_cen_rows(const hybrid_attn *ha, const hybrid_group *gr, size_t *off) {
    size_t per = (size_t)ha->a.p.clusters * ha->a.p.head_dim;
    *off = (size_t)gr->g.first * per;
    return (size_t)gr->g.heads * per;
}

/* Whether group gr's centroids are shown in the view (same cluster count). */
static int hybrid_has_cen(const hybrid_attn *ha, const hybrid_group *gr) {
    return gr->inst && gr->inst->be->centroids && gr->g.p.clusters == ha->a.p.clusters;
}

/* Writes made through centroids() reach the groups before they run again. */
static void hybrid_push_centroids(hybrid_attn *ha) {
    if (!ha->cen_exposed) return;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        hybrid_group *gr = &ha->grp[i];
        if (!hybrid_has_cen(ha, gr)) continue;
        size_t off, n = hybrid_cen_rows(ha, gr, &off);
        memcpy(gr->inst->be->centroids(gr->inst), ha->cen + off, n * sizeof(float));
    }
}

static void hybrid_forward(attn *a, float *out, const float *q, const float *k, const float *v, int flags) {
    hybrid_attn *ha = (hybrid_attn *)a;
    size_t hsz = (size_t)a->p.seq * a->p.head_dim;
    hybrid_push_centroids(ha);
    ha->cen_exposed = 0;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        hybrid_group *gr = &ha->grp[i];
        attn *s = gr->inst;
        if (!s) continue;
        if (a->p.batch == 1) {
            size_t o = (size_t)gr->g.first * hsz;
            s->be->forward(s, out + o, q + o, k + o, v + o, flags);
            continue;
        }
        hybrid_bufs *b = &gr->buf;
        hybrid_gather(b->q, q, a, &gr->g);
        hybrid_gather(b->k, k, a, &gr->g);
        hybrid_gather(b->v, v, a, &gr->g);
        s->be->forward(s, b->out, b->q, b->k, b->v, flags);
        hybrid_scatter(out, b->out, a, &gr->g);
    }
}

static void hybrid_backward(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out) {
    hybrid_attn *ha = (hybrid_attn *)a;
    size_t hsz = (size_t)a->p.seq * a->p.head_dim;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        hybrid_group *gr = &ha->grp[i];
        attn *s = gr->inst;
        if (!s) continue;
        if (a->p.batch == 1) {
            size_t o = (size_t)gr->g.first * hsz;
            s->be->backward(s, dq + o, dk + o, dv + o, dout + o, q + o, k + o, v + o, out + o);
            continue;
        }
        /* q, k, v, out are the arrays the last forward saw: their gathered
         * copies are still in the buffers */
        hybrid_bufs *b = &gr->buf;
        hybrid_gather(b->dout, dout, a, &gr->g);
        s->be->backward(s, b->dq, b->dk, b->dv, b->dout, b->q, b->k, b->v, b->out);
        hybrid_scatter(dq, b->dq, a, &gr->g);
        hybrid_scatter(dk, b->dk, a, &gr->g);
        hybrid_scatter(dv, b->dv, a, &gr->g);
    }
}

/* The groups' statistics, one after the other. */
static int hybrid_stats(const attn *a, attn_stat *out, int max) {
    const hybrid_attn *ha = (const hybrid_attn *)a;
    int n = 0;
    for (int i = 0; i < HYBRID_NKINDS && n < max; i++) {
        const attn *s = ha->grp[i].inst;
        if (s && s->be->stats) n += s->be->stats(s, out + n, max - n);
    }
    return n;
}

/* Dense when every group with heads computes dense attention. */
static int hybrid_equals_dense(const attn_params *p) {
    attn_head_group g[HYBRID_NKINDS];
    hybrid_groups_of(p, g);
    for (int i = 0; i < HYBRID_NKINDS; i++)
        if (g[i].heads > 0 && !(g[i].be->equals_dense && g[i].be->equals_dense(&g[i].p))) return 0;
    return 1;
}

/* Routes of head h: its group's (h relative to the group's first head); -1
 * for groups without clusters. */
static int hybrid_routes(const attn *a, int b, int h, int c, int keys, const int **members) {
    const hybrid_attn *ha = (const hybrid_attn *)a;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        const hybrid_group *gr = &ha->grp[i];
        if (h < gr->g.first || h >= gr->g.first + gr->g.heads) continue;
        if (!gr->inst || !gr->inst->be->routes) return -1;
        return gr->inst->be->routes(gr->inst, b, h - gr->g.first, c, keys, members);
    }
    return -1;
}

static float *hybrid_centroids(attn *a) {
    hybrid_attn *ha = (hybrid_attn *)a;
    hybrid_push_centroids(ha); /* earlier writes first, then read back */
    memset(ha->cen, 0, (size_t)a->p.heads * a->p.clusters * a->p.head_dim * sizeof(float));
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        hybrid_group *gr = &ha->grp[i];
        if (!hybrid_has_cen(ha, gr)) continue;
        size_t off, n = hybrid_cen_rows(ha, gr, &off);
        memcpy(ha->cen + off, gr->inst->be->centroids(gr->inst), n * sizeof(float));
    }
    ha->cen_exposed = 1;
    return ha->cen;
}

static int hybrid_head_groups(const attn_params *p, attn_head_group *out, int max) {
    attn_head_group g[HYBRID_NKINDS];
    hybrid_groups_of(p, g);
    int n = 0;
    for (int i = 0; i < HYBRID_NKINDS; i++) {
        if (g[i].heads == 0) continue;
        if (n < max) out[n] = g[i];
        n++;
    }
    return n;
}

const attn_backend attn_backend_hybrid = {
    .name = "hybrid",
    .description = "local_heads heads local (block local_window, auto: window), lsh_heads lsh (default 0), the rest "
                   "routing (clusters x window); default half local, half routing",
    .uses = ATTN_USES_WINDOW | ATTN_USES_CLUSTERS | ATTN_USES_LOCAL_HEADS | ATTN_USES_LOCAL_WINDOW |
            ATTN_USES_SHARE_QK | ATTN_USES_ASSIGN | ATTN_USES_NORM | ATTN_USES_KMEANS | ATTN_USES_LSH_HEADS |
            ATTN_USES_HASH,
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
    .head_groups = hybrid_head_groups,
};
