/* test_analytic.c: every registered backend's analytic FLOP count and
 * activation bytes against an independent count, for every causal / share_qk
 * / assign combination the backend takes and several sizes (the registry is
 * looped over, so a new backend is covered without edits).
 *
 * FLOPs (attn.h's convention): 4 d per attended query-key pair forward, 8 d
 * backward, plus 2 d per (routing vector, centroid) distance forward, where a
 * routed head has n routing vectors when keys are shared and 2n (queries and
 * keys) otherwise. The attended pairs are counted by brute force on the
 * pattern the backend actually computes (tests/attn_ref.h: routes() for
 * routed heads, one term per cluster a token is in; a one-hot-value probe
 * for the rest). Routing's count is exact for top-k on any input and, as
 * documented, assumes balanced clusters for argmax and keys clustered like
 * the queries when unshared: those are checked on inputs where that holds
 * (centroids set to basis vectors, token i near centroid i mod K, k = q).
 *
 * Activation bytes: an instance holds what act_bytes says, and the growth of
 * act_bytes from batch B to 2B is the per-sequence state each backend's
 * definition names (dense: the log-sum-exp and D of every query row;
 * dense-naive: the n x n probabilities and D; local: the log-sum-exp;
 * routing: the buffers its instance struct lists per (batch, head); hybrid:
 * its gathered copies and the parts), counted here from the definition, with
 * 64 bytes of alignment allowed per buffer where a backend aligns them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/kmeans.h"
#include "attn_ref.h"
#include "tap.h"
#include "util/common.h"
#include "util/threads.h"
#include "testutil.h"

static const char *desc(const attn_backend *be, const attn_params *p) {
    static char buf[200];
    snprintf(buf, sizeof buf, "%s B%d H%d n%d d%d w%d K%d %s%s%s", be->name, p->batch, p->heads, p->seq,
             p->head_dim, p->window, p->clusters, p->causal ? "causal" : "full",
             (be->uses & ATTN_USES_SHARE_QK) ? (p->share_qk ? " shared" : " unshared") : "",
             (be->uses & ATTN_USES_ASSIGN) ? (p->assign ? " argmax" : " topk") : "");
    return buf;
}

/* Balanced routing: centroid c of every head is the basis vector e_c and
 * token i lies near e_{i mod K}, so every centroid's nearest tokens are
 * exactly n / K; k = q, so unshared keys route like the queries. */
static void balanced_inputs(attn *a, float *q, float *k, rb_rng *r) {
    const attn_params *p = &a->p;
    int K = p->clusters > 0 ? p->clusters : 1, d = p->head_dim, n = p->seq;
    size_t nd = (size_t)n * d;
    if (a->be->centroids) {
        float *mu = a->be->centroids(a);
        memset(mu, 0, sizeof(float) * (size_t)p->heads * K * d);
        for (int h = 0; h < p->heads; h++)
            for (int c = 0; c < K; c++) mu[((size_t)h * K + c) * d + c % d] = 1.0f;
    }
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++)
        for (int i = 0; i < n; i++) {
            float *x = q + bh * nd + (size_t)i * d;
            for (int e = 0; e < d; e++) x[e] = 0.05f * rb_rng_normal(r);
            x[(i % K) % d] += 3.0f;
        }
    memcpy(k, q, sizeof(float) * (size_t)p->batch * p->heads * nd);
}

/* Forward FLOPs of choosing one routed head's routes: routing compares
 * every routing vector with every centroid (2 d each); lsh projects every
 * hashed vector on buckets/2 rotation columns per round (2 d each, nothing
 * with one bucket). */
static double route_flops(const char *name, const ref_pattern *pt, const attn_params *p) {
    double vectors = (double)p->seq * (pt->shared ? 1 : 2);
    if (!strcmp(name, "lsh")) return p->buckets > 1 ? 2.0 * p->head_dim * vectors * p->hashes * (p->buckets / 2) : 0;
    return 2.0 * p->head_dim * vectors * p->clusters;
}

/* 1 when a backend's count is exact on any input: lsh's causal count with
 * several buckets is an expectation (the previous chunk's keys precede a
 * query half of the time; tests/test_lsh.c measures it on random input). */
static int flops_exact(const char *name, const attn_params *p) {
    return !(!strcmp(name, "lsh") && p->causal && p->buckets > 1);
}

/* Expected flops of one pass from the pattern. */
static void count_flops(const char *name, const ref_pattern *pats, const attn_params *p, double *fwd, double *bwd,
                        double *pairs_out) {
    double pairs = 0, route = 0;
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++) {
        pairs += ref_pairs(&pats[bh]);
        if (pats[bh].routed) route += route_flops(name, &pats[bh], p);
    }
    *fwd = 4.0 * p->head_dim * pairs + route;
    *bwd = 8.0 * p->head_dim * pairs;
    *pairs_out = pairs;
}

/* One configuration: 1 when flops() matches the brute-force count. */
static int check_flops(const attn_backend *be, attn_params p, int balanced, int assert_it) {
    char err[256];
    attn *a = attn_make(be->name, &p, err, sizeof err);
    if (!a) {
        ok(0, "%s: %s", desc(be, &p), err);
        return 0;
    }
    size_t total = (size_t)p.batch * p.heads * p.seq * p.head_dim;
    float *q = mallocCheck(total * sizeof(float)), *k = mallocCheck(total * sizeof(float));
    rb_rng r;
    rb_rng_seed(&r, 77 + (uint64_t)p.seq);
    if (balanced) balanced_inputs(a, q, k, &r);
    else
        for (size_t i = 0; i < total; i++) q[i] = rb_rng_normal(&r), k[i] = rb_rng_normal(&r);
    ref_pattern *pats = mallocCheck(sizeof(ref_pattern) * (size_t)p.batch * p.heads);
    ref_probe(pats, a, q, k);
    double fwd, bwd, pairs;
    count_flops(be->name, pats, &a->p, &fwd, &bwd, &pairs);
    assert_it = assert_it && flops_exact(be->name, &a->p);
    double af = be->flops(&a->p, ATTN_PASS_FWD), ab = be->flops(&a->p, ATTN_PASS_BWD);
    int good = fabs(af - fwd) <= 1e-9 * fwd && fabs(ab - bwd) <= 1e-9 * bwd;
    if (assert_it)
        ok(good, "%s%s: flops fwd %.0f bwd %.0f, counted %.0f and %.0f (%.0f attended pairs)", desc(be, &a->p),
           balanced ? " balanced" : "", af, ab, fwd, bwd, pairs);
    else
        diag("%s on random input: flops fwd %.0f bwd %.0f; this input's clusters give %.0f and %.0f (the count "
             "assumes balanced clusters)",
             desc(be, &a->p), af, ab, fwd, bwd);
    for (size_t bh = 0; bh < (size_t)p.batch * p.heads; bh++) ref_pattern_free(&pats[bh]);
    free(pats), free(q), free(k);
    attn_free(a);
    return good;
}

/* Every combination of causal, share_qk and assign the backend takes, at
 * several sizes: windows that divide seq, leave a short last block, equal
 * and exceed it; clusters x window equal to, above and below seq. */
static void flops_combos(const attn_backend *be, const attn_params *base) {
    int wins[4] = {16, 20, 48, 64}, nw = (be->uses & ATTN_USES_WINDOW) ? 4 : 1;
    const int kw[4][2] = {{4, 0}, {3, 0}, {4, 8}, {6, 0}};
    int nshare = (be->uses & ATTN_USES_SHARE_QK) ? 2 : 1, nassign = (be->uses & ATTN_USES_ASSIGN) ? 2 : 1;
    int nsize = (be->uses & ATTN_USES_CLUSTERS) ? 4 : nw;
    if (nw == 1) wins[0] = 0;
    for (int sz = 0; sz < nsize; sz++)
        for (int causal = 1; causal >= 0; causal--)
            for (int sh = 0; sh < nshare; sh++)
                for (int as = 0; as < nassign; as++) {
                    attn_params p = *base;
                    p.causal = causal;
                    p.share_qk = nshare > 1 ? sh : -1;
                    p.assign = as ? ATTN_ASSIGN_ARGMAX : ATTN_ASSIGN_TOPK;
                    if (be->uses & ATTN_USES_CLUSTERS) p.clusters = kw[sz][0], p.window = kw[sz][1];
                    else p.window = wins[sz];
                    check_flops(be, p, 1, 1);
                    /* top-k's count holds on any input (every cluster has
                     * exactly window members); argmax's is an average */
                    if (be->uses & ATTN_USES_CLUSTERS) {
                        attn_params p2 = p;
                        p2.seq = 37, p2.share_qk = 1; /* shared: keys route with the queries */
                        check_flops(be, p2, 0, p.assign == ATTN_ASSIGN_TOPK && sh == 1);
                    }
                }
}

static void test_flops(void) {
    for (int bi = 0; bi < attn_count(); bi++) {
        const attn_backend *be = attn_get(bi);
        attn_params base = tu_params(2, 2, 48, 16, 3);
        flops_combos(be, &base);
        if (be->uses & ATTN_USES_LOCAL_HEADS) /* besides the default split, all heads of one kind */
            for (base.local_heads = 0; base.local_heads <= base.heads; base.local_heads += base.heads)
                flops_combos(be, &base);
    }
}

/* ---- activation bytes ---------------------------------------------------- */

/* The batch-dependent bytes an instance for p holds by each backend's
 * definition, buffers rounded as the backend documents (dense and local: to
 * 16 floats; routing: each buffer of its one allocation to 64 bytes); -1 for
 * a backend this test does not know. */
static double r64(double bytes) { return ceil(bytes / 64.0) * 64.0; }

static double def_batch_bytes(const char *name, const attn_params *p) {
    double B = p->batch, n = p->seq, d = p->head_dim, H = p->heads, F = 4, I = 4, rows = B * H * n;
    if (!strcmp(name, "dense")) return 2 * r64(rows * F);              /* lse, D per query row */
    if (!strcmp(name, "dense-naive")) return (rows * n + rows) * F;    /* P (n x n per head), D */
    if (!strcmp(name, "local")) return r64(rows * F);                  /* lse per query row */
    if (!strcmp(name, "routing")) {
        int K = p->clusters, w = p->window, nsets = p->share_qk == 1 ? 1 : 2;
        double BH = B * H, cap = p->assign == ATTN_ASSIGN_TOPK ? (double)K * w : n;
        int keep = p->assign == ATTN_ASSIGN_TOPK && w <= p->head_dim;
        double b = 0;
        for (int s = 0; s < nsets; s++) /* x, xs, near, off, mem */
            b += r64(BH * n * d * F) + r64(BH * n * F) + r64(BH * n * I) + r64(BH * (K + 1) * I) + r64(BH * cap * I);
        b += r64(BH * n * I) + r64(BH * cap * F);        /* cnt, lse */
        b += keep ? r64(BH * cap * w * F) : 0;           /* pm: K w^2 kept probabilities per head */
        b += 3 * r64(BH * cap * d * F);                  /* om (dqm in backward), dkm, dvm */
        b += r64(BH * 8) + r64(B * nsets * sizeof(float *)); /* partial, blocks */
        /* k-means++ candidates: the routing vectors, at most max(4096, 8K) */
        b += r64(fmin(fmax(4096, 8.0 * K), B * nsets * n) * F);
        return b;
    }
    if (!strcmp(name, "strided")) return r64(rows * F); /* lse per query row */
    if (!strcmp(name, "lsh")) {
        double BH = B * H, hs = p->hashes, sets = p->share_qk == 1 ? 1 : 2, w = p->window, nck = ceil(n / w);
        double b = p->share_qk == 1 ? 2 * r64(BH * n * d * F) + r64(BH * n * F) : 0; /* normalised keys, their
                                                                                        gradient, 1/|q| */
        b += r64(rows * F) + r64(BH * hs * sets * n * I);                    /* lse; sorted order */
        b += r64(BH * hs * sets * (p->buckets + 1) * I);                    /* bucket starts */
        b += r64(BH * hs * nck * 2 * w * I) + r64(BH * hs * nck * I);       /* key windows, their lengths */
        b += r64(BH * hs * 2 * 8) + r64(BH * nck * 8);                      /* statistics partials */
        return b;
    }
    if (!strcmp(name, "hybrid")) {
        attn_params pl = *p, pr = *p;
        pl.heads = p->local_heads, pr.heads = p->heads - p->local_heads;
        double b = B > 1 ? 8.0 * B * H * n * d * F : 0; /* gathered q, k, v, out, dout, dq, dk, dv */
        if (pl.heads) b += def_batch_bytes("local", &pl);
        if (pr.heads) b += def_batch_bytes("routing", &pr);
        return b;
    }
    return -1;
}

/* rb_sgemm_st's packing buffers (util/gemm.h) for products of up to rows x
 * cols: A blocks of up to 240 rows in 6-row panels and B blocks of up to
 * 1024 columns in 64-column panels, 256 deep; none without AVX-512. */
static double pack_bytes(double rows, double cols) {
#ifdef __AVX512F__
    return r64((ceil(fmin(rows, 240) / 6) * 6 * 256 + 256 * ceil(fmin(cols, 1024) / 64) * 64) * 4);
#else
    (void)rows, (void)cols;
    return 0;
#endif
}

/* One thread's workspace by each backend's definition (the tile sizes its
 * comments give: dense 256 x 256 score tiles, local 64 query rows per chunk,
 * routing 64-row score tiles and 32-centroid distance blocks, dense-naive 256-row dS blocks), not counting
 * the small per-thread bookkeeping struct (allowed for by the caller). */
static double def_thread_bytes(const char *name, const attn_params *p) {
    double n = p->seq, d = p->head_dim, F = 4;
    if (!strcmp(name, "dense")) {
        double bq = fmin(256, n), bk = fmin(256, n); /* score tile, dP tile, output block, l (double), m */
        return 2 * r64(bq * bk * F) + r64(bq * d * F) + r64(2 * bq * F) + r64(bq * F) +
               pack_bytes(fmax(bq, bk), fmax(bk, d)); /* rows up to a tile, columns up to a tile or d */
    }
    if (!strcmp(name, "dense-naive")) /* dS rows, dK, dV; products up to n rows and n or d columns */
        return r64((fmin(256, n) * n + 2 * n * d) * F) + pack_bytes(n, fmax(n, d));
    if (!strcmp(name, "local")) {
        double w = fmin(p->window, n), qb = fmin(64, w); /* score and dP tiles of a chunk, a row vector */
        return 2 * r64(qb * 2 * w * F) + r64(qb * F) + pack_bytes(fmax(qb, 2 * w), fmax(2 * w, d));
    }
    if (!strcmp(name, "routing")) {
        /* distances to blocks of 32 centroids at a time, or as many as fit
         * 2^17 floats; keys and values also transposed, rows padded to 16
         * floats; a 64-token block of routing vectors transposed */
        double K = fmin(p->clusters, fmax(32, floor(131072 / n))), m = p->assign == ATTN_ASSIGN_TOPK ? p->window : n;
        double ldt = ceil(m / 16) * 16;
        return r64(n * sizeof(kmeans_pair)) + r64(K * n * F) + 2 * r64(n * F) /* top-k pairs, dots, best, |x|^2 */
               + 4 * r64(m * d * F) + 2 * r64(d * ldt * F)                    /* gathered Q, K, V, dO; K^T, V^T */
               + 2 * r64(64 * m * F) + 2 * r64(m * 4) + r64(m * F)            /* S, dP tiles; L, F; D */
               + r64(n) + r64(d * 64 * F);                                    /* scatter's marks; X^T block */
    }
    /* the block kernel (core/attn/gattn.c): S and dP tiles of 64 rows, three
     * 64-int row vectors */
    if (!strcmp(name, "strided")) {
        double l = p->stride, band = fmin(fmax(l, 64), n), nres = ceil(n / l);
        double mk = fmax(fmin(band + l + (p->causal ? 0 : l), n), nres); /* a band and l either side, or a class */
        return r64(nres * 4) + r64(mk * F) + 2 * r64(64 * mk * F) + 3 * r64(64 * 4) /* class positions, D */
               + pack_bytes(fmax(64, mk), fmax(mk, d));
    }
    if (!strcmp(name, "lsh")) {
        double w = p->window, nb2 = p->buckets / 2;
        return 3 * r64(w * d * F) + 4 * r64(2 * w * d * F) + 2 * r64(w * F) /* Q, O, dO; K, V, dK, dV; L, D */
               + r64(256 * nb2 * F) + r64(n * 4)                            /* projections, bucket ids */
               + 2 * r64(64 * 2 * w * F) + 3 * r64(64 * 4) + pack_bytes(fmax(64, 2 * w), fmax(2 * w, d));
    }
    if (!strcmp(name, "hybrid")) {
        attn_params pl = *p, pr = *p;
        pl.heads = p->local_heads, pr.heads = p->heads - p->local_heads;
        return (pl.heads ? def_thread_bytes("local", &pl) : 0) + (pr.heads ? def_thread_bytes("routing", &pr) : 0);
    }
    return -1;
}

static int bytes_params(const attn_backend *be, attn_params *p, int d, int w, int causal, int assign) {
    attn_params_default(p);
    p->batch = 2, p->heads = 2, p->seq = 48, p->head_dim = d, p->window = w, p->clusters = 4;
    p->causal = causal, p->assign = assign;
    char err[256];
    if (attn_params_check_sizes(p, err, sizeof err) || attn_validate_msg(be, p, err, sizeof err))
        return ok(0, "%s: %s", be->name, err), -1;
    return 0;
}

/* act_bytes equals what instances hold, and grows from batch 2 to 4 by the
 * definition's per-sequence state. */
static void bytes_growth(const attn_backend *be, const attn_params *p) {
    attn_params p2 = *p, pa = *p, pb;
    p2.batch = 2 * p->batch;
    pb = p2;
    char err[256];
    attn *a1 = attn_make(be->name, &pa, err, sizeof err), *a2 = attn_make(be->name, &pb, err, sizeof err);
    ok(a1 && a2 && a1->bytes == be->act_bytes(p) && a2->bytes == be->act_bytes(&p2),
       "%s: instances at batch %d and %d hold what act_bytes says (%zu, %zu)", desc(be, p), p->batch, p2.batch,
       a1 ? a1->bytes : 0, a2 ? a2->bytes : 0);
    attn_free(a1), attn_free(a2);
    double d1 = def_batch_bytes(be->name, p), d2 = def_batch_bytes(be->name, &p2);
    double got = (double)be->act_bytes(&p2) - (double)be->act_bytes(p);
    ok(d1 >= 0 && got == d2 - d1,
       "%s: act_bytes grows by %.0f from batch %d to %d; the definition's per-sequence state by %.0f%s", desc(be, p),
       got, p->batch, p2.batch, d2 - d1, d1 < 0 ? " (no definition in test_analytic.c: add one)" : "");
}

static void test_bytes(void) {
    for (int bi = 0; bi < attn_count(); bi++) {
        const attn_backend *be = attn_get(bi);
        attn_params p;
        for (int thr = 1; thr <= 2; thr++) {
            rb_set_threads(thr);
            char err[256];
            if (bytes_params(be, &p, 16, 16, 1, ATTN_ASSIGN_TOPK)) continue;
            attn *a = attn_make(be->name, &p, err, sizeof err);
            size_t want = a ? be->act_bytes(&p) : 0;
            ok(a && a->bytes == want, "%s, %d thread%s: act_bytes %zu, the instance holds %zu", be->name, thr,
               thr > 1 ? "s" : "", want, a ? a->bytes : 0);
            attn_free(a);
        }
        if (bytes_params(be, &p, 16, 16, 1, ATTN_ASSIGN_TOPK)) continue;
        rb_set_threads(1);
        double one = (double)be->act_bytes(&p);
        rb_set_threads(2);
        double two = (double)be->act_bytes(&p), def = def_thread_bytes(be->name, &p);
        double slack = strcmp(be->name, "hybrid") ? 128 : 256; /* hybrid: two instances' bookkeeping */
        ok(def >= 0 && fabs(two - one - def) <= slack,
           "%s: a second thread adds %.0f bytes of act_bytes; the definition's workspace is %.0f (+- %.0f for "
           "bookkeeping)",
           desc(be, &p), two - one, def, slack);
        rb_set_threads(1);
        /* (head_dim, window): routing keeps its probabilities up to window head_dim */
        const int dw[3][2] = {{16, 16}, {16, 17}, {4, 16}}; /* at the bound, just past it, 4 x past it */
        int nassign = (be->uses & ATTN_USES_ASSIGN) ? 2 : 1;
        for (int k = 0; k < 3; k++)
            for (int causal = 1; causal >= 0; causal--)
                for (int as = 0; as < nassign; as++)
                    if (!bytes_params(be, &p, dw[k][0], dw[k][1], causal, as ? ATTN_ASSIGN_ARGMAX : ATTN_ASSIGN_TOPK))
                        bytes_growth(be, &p);
    }
}

int main(void) {
    rb_set_threads(2);
    test_flops();
    test_bytes();
    return tap_done();
}
