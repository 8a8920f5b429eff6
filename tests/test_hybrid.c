/* test_hybrid.c: the hybrid backend (local heads + routing heads) against
 * its parts: all heads local equals `local`, no local heads equals `routing`,
 * and in a mixed layer each head subset equals the matching backend run on
 * those heads alone (batch 1 and batch > 1, which take different paths).
 * Plus central finite-difference gradient checks (attn_check, which also
 * compares with `dense` when the layer is one local block), causality,
 * determinism, statistics, routes and centroids passed through, FLOP and
 * byte counts, defaults and refused parameters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/bench.h"
#include "util/common.h"
#include "tap.h"
#include "testutil.h"

/* Heads [h0, h0+nh) of every batch entry of a [B, H, n, d] io, as a new
 * [B, nh, n, d] io (inputs only). */
static void io_heads(tu_io *dst, const tu_io *src, int B, int H, int h0, int nh, size_t hsz) {
    dst->N = (size_t)B * nh * hsz;
    float **d[] = {&dst->q, &dst->k, &dst->v, &dst->dout, &dst->out, &dst->dq, &dst->dk, &dst->dv};
    float *s[] = {src->q, src->k, src->v, src->dout};
    for (int i = 0; i < 8; i++) *d[i] = callocCheck(dst->N ? dst->N : 1, sizeof(float));
    for (int t = 0; t < 4; t++)
        for (int b = 0; b < B; b++)
            memcpy(*d[t] + (size_t)b * nh * hsz, s[t] + ((size_t)b * H + h0) * hsz, (size_t)nh * hsz * sizeof(float));
}

/* max |x[heads h0..] - y| where x is [B, H, n, d] and y is [B, nh, n, d] */
static double diff_heads(const float *x, const float *y, int B, int H, int h0, int nh, size_t hsz) {
    double m = 0.0;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < (size_t)nh * hsz; i++)
            m = fmax(m, fabs((double)x[((size_t)b * H + h0) * hsz + i] - (double)y[(size_t)b * nh * hsz + i]));
    return m;
}

static attn_params params(int B, int H, int n, int d, int L, int causal) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.local_heads = L, p.causal = causal;
    return p;
}

static void run(attn *a, tu_io *io, int flags) {
    a->be->forward(a, io->out, io->q, io->k, io->v, flags);
    a->be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
}

/* Hybrid against `local` on heads [0, L) and `routing` on heads [L, H),
 * each run alone with the hybrid's resolved parameters (and seed), output
 * and gradients, two training passes so centroids have moved once. */
/* head_groups(): local heads [0, L) with block lwin, routing heads after. */
static void test_groups(const attn *hy, int L, int lwin) {
    attn_head_group g[4];
    int n = hy->be->head_groups(&hy->p, g, 4), H = hy->p.heads, i = 0, good = 1;
    if (L > 0) good = good && !strcmp(g[i].be->name, "local") && g[i].first == 0 && g[i].heads == L &&
                      g[i].p.heads == L && g[i].p.window == lwin, i++;
    if (L < H) good = good && !strcmp(g[i].be->name, "routing") && g[i].first == L && g[i].heads == H - L &&
                      g[i].p.window == hy->p.window && g[i].p.clusters == hy->p.clusters, i++;
    ok(n == i && good, "head_groups: %d group(s), local heads 0..%d with window %d, routing heads %d..%d", n, L - 1,
       lwin, L, H - 1);
}

static void test_parts_lw(int B, int H, int n, int d, int L, int causal, int K, int w, int lw);

static void test_parts(int B, int H, int n, int d, int L, int causal) { test_parts_lw(B, H, n, d, L, causal, 0, 0, 0); }

/* The same with clusters K, routing window w and local block lw (0 = auto):
 * the reference's local part is built with window lw itself. */
static void test_parts_lw(int B, int H, int n, int d, int L, int causal, int K, int w, int lw) {
    attn_params p = params(B, H, n, d, L, causal);
    p.clusters = K, p.window = w, p.local_window = lw;
    attn *hy = tu_make("hybrid", &p);
    if (!hy) {
        ok(0, "hybrid create B=%d H=%d L=%d", B, H, L);
        return;
    }
    size_t hsz = (size_t)n * d;
    tu_io io;
    tu_io_make(&io, &p, 300 + (uint64_t)B * 10 + (uint64_t)L);
    double worst[2] = {0, 0};
    const char *names[2] = {"local", "routing"};
    attn *part[2] = {NULL, NULL};
    tu_io sub[2];
    int h0[2] = {0, p.local_heads}, nh[2] = {p.local_heads, H - p.local_heads};
    for (int s = 0; s < 2; s++) {
        io_heads(&sub[s], &io, B, H, h0[s], nh[s], hsz);
        if (nh[s] == 0) continue;
        attn_params ps = p;
        ps.heads = nh[s];
        ps.local_heads = -1;
        ps.local_window = 0;
        if (s == 0 && lw > 0) ps.window = lw;
        part[s] = tu_make(names[s], &ps);
    }
    for (int pass = 0; pass < 2; pass++) {
        run(hy, &io, ATTN_TRAIN);
        for (int s = 0; s < 2; s++) {
            if (!part[s]) continue;
            run(part[s], &sub[s], ATTN_TRAIN);
            const float *x[4] = {io.out, io.dq, io.dk, io.dv}, *y[4] = {sub[s].out, sub[s].dq, sub[s].dk, sub[s].dv};
            for (int t = 0; t < 4; t++) worst[s] = fmax(worst[s], diff_heads(x[t], y[t], B, H, h0[s], nh[s], hsz));
        }
    }
    diag("hybrid B=%d H=%d L=%d n=%d causal=%d window=%d local_window=%d: max abs diff vs local heads %.2e, vs "
         "routing heads %.2e", B, H, p.local_heads, n, causal, p.window, lw, worst[0], worst[1]);
    ok(worst[0] == 0.0 && worst[1] == 0.0 && (nh[0] == 0 || part[0]) && (nh[1] == 0 || part[1]),
       "hybrid B=%d H=%d L=%d causal=%d lw=%d: local heads equal `local`, routing heads equal `routing` (out, dq, dk, "
       "dv)", B, H, p.local_heads, causal, lw);
    test_groups(hy, p.local_heads, lw > 0 ? lw : p.window);
    if (part[1] && nh[1] > 0) {
        /* statistics are routing's */
        attn_stat a[32], b[32];
        int na = hy->be->stats(hy, a, 32), nb = part[1]->be->stats(part[1], b, 32);
        int same = na == nb && na > 0;
        for (int i = 0; same && i < na; i++) same = !strcmp(a[i].name, b[i].name) && a[i].value == b[i].value;
        ok(same, "stats are the routing half's (%d entries)", na);
    } else if (hy->be->stats) {
        attn_stat a[32];
        ok(hy->be->stats(hy, a, 32) == 0, "no routing heads: no stats");
    }
    for (int s = 0; s < 2; s++) attn_free(part[s]), tu_io_free(&sub[s]);
    attn_free(hy);
    tu_io_free(&io);
}

/* Local, lsh and routing heads in one layer (lsh_heads S after L local
 * heads; the wikitext103_local_hash split when no routing head is left):
 * each group's out, dq, dk, dv equal its backend run alone on those heads
 * with the layer's window, seed and lsh settings; attn_check passes; the
 * statistics are lsh's followed by routing's. */
static void test_lsh_heads(int B, int H, int n, int d, int L, int S, int causal) {
    attn_params p = params(B, H, n, d, L, causal);
    p.lsh_heads = S, p.clusters = 4;
    attn *hy = tu_make("hybrid", &p);
    if (!hy) {
        ok(0, "hybrid create B=%d H=%d L=%d lsh_heads=%d", B, H, L, S);
        return;
    }
    size_t hsz = (size_t)n * d;
    tu_io io;
    tu_io_make(&io, &p, 700 + (uint64_t)B * 10 + (uint64_t)S);
    const char *names[3] = {"local", "lsh", "routing"};
    int h0[3] = {0, L, L + S}, nh[3] = {L, S, H - L - S}, made = 1;
    double worst[3] = {0, 0, 0};
    attn *part[3] = {NULL, NULL, NULL};
    tu_io sub[3];
    for (int g = 0; g < 3; g++) {
        io_heads(&sub[g], &io, B, H, h0[g], nh[g], hsz);
        if (nh[g] == 0) continue;
        attn_params ps = hy->p; /* the layer's window as hybrid resolved it */
        ps.heads = nh[g], ps.local_heads = -1, ps.lsh_heads = 0, ps.local_window = 0;
        made &= (part[g] = tu_make(names[g], &ps)) != NULL;
    }
    for (int pass = 0; pass < 2 && made; pass++) {
        run(hy, &io, ATTN_TRAIN);
        for (int g = 0; g < 3; g++) {
            if (!part[g]) continue;
            run(part[g], &sub[g], ATTN_TRAIN);
            const float *x[4] = {io.out, io.dq, io.dk, io.dv}, *y[4] = {sub[g].out, sub[g].dq, sub[g].dk, sub[g].dv};
            for (int t = 0; t < 4; t++) worst[g] = fmax(worst[g], diff_heads(x[t], y[t], B, H, h0[g], nh[g], hsz));
        }
    }
    diag("hybrid B=%d H=%d local %d lsh %d routing %d n=%d causal=%d window=%d: max abs diff %.2e %.2e %.2e", B, H, L,
         S, H - L - S, n, causal, hy->p.window, worst[0], worst[1], worst[2]);
    ok(made && worst[0] == 0.0 && worst[1] == 0.0 && worst[2] == 0.0,
       "hybrid B=%d H=%d L=%d lsh_heads=%d causal=%d: each group equals its backend alone (out, dq, dk, dv)", B, H, L,
       S, causal);
    attn_head_group gs[4];
    int ng = hy->be->head_groups(&hy->p, gs, 4), want = (L > 0) + (S > 0) + (H - L - S > 0), good = ng == want;
    for (int i = 0, g = 0; good && g < 3; g++)
        if (nh[g] > 0) good = !strcmp(gs[i].be->name, names[g]) && gs[i].first == h0[g] && gs[i].heads == nh[g], i++;
    ok(good, "head_groups: %d group(s) in the order local, lsh, routing", ng);
    attn_stat a[64], b[64];
    int na = hy->be->stats(hy, a, 64), nb = 0;
    for (int g = 1; g < 3 && made; g++)
        if (part[g] && part[g]->be->stats) nb += part[g]->be->stats(part[g], b + nb, 64 - nb);
    int same = na == nb && na > 0;
    for (int i = 0; same && i < na; i++) same = !strcmp(a[i].name, b[i].name) && a[i].value == b[i].value;
    ok(same, "stats are lsh's then routing's (%d entries, %d expected)", na, nb);
    for (int g = 0; g < 3; g++) attn_free(part[g]), tu_io_free(&sub[g]);
    attn_free(hy);
    tu_io_free(&io);
    attn_check_result r;
    char err[512];
    if (attn_check("hybrid", &p, &r, err, sizeof err) != 0) ok(0, "attn_check: %s", err);
    else
        ok(r.pass, "attn_check passes with lsh heads (B=%d H=%d L=%d lsh_heads=%d causal=%d): grad rel err %.2e", B,
           H, L, S, causal, r.grad_rel_err);
}

static void test_check_lw(int B, int H, int n, int d, int L, int w, int causal, int lw);

static void test_check(int B, int H, int n, int d, int L, int w, int causal) { test_check_lw(B, H, n, d, L, w, causal, 0); }

static void test_check_lw(int B, int H, int n, int d, int L, int w, int causal, int lw) {
    attn_params p = params(B, H, n, d, L, causal);
    p.window = w;
    p.local_window = lw;
    attn_check_result r;
    char err[512];
    if (attn_check("hybrid", &p, &r, err, sizeof err) != 0) {
        ok(0, "attn_check: %s", err);
        return;
    }
    int want_dense = p.local_heads == H && (lw > 0 ? lw : p.window) >= n;
    diag("attn_check B=%d H=%d L=%d n=%d w=%d lw=%d causal=%d: grad rel err %.2e; %s; dense max abs %.2e", B, H,
         p.local_heads, n, p.window, lw, causal, r.grad_rel_err, r.detail, r.dense_max_abs_err);
    ok(r.pass && r.compared_dense == want_dense, "attn_check passes (B=%d H=%d L=%d n=%d w=%d lw=%d causal=%d%s)", B,
       H, p.local_heads, n, p.window, lw, causal, want_dense ? ", compared with dense" : "");
}

/* Causal: perturbing q, k or v at positions > i never changes output i. */
static void test_causal(void) {
    attn_params p = params(2, 4, 64, 8, 2, 1);
    p.window = 8;
    attn *a = tu_make("hybrid", &p);
    if (!a) {
        ok(0, "create");
        return;
    }
    tu_io io;
    tu_io_make(&io, &p, 21);
    float *base = mallocCheck(io.N * 4), *o = mallocCheck(io.N * 4);
    a->be->forward(a, base, io.q, io.k, io.v, ATTN_TRAIN); /* routes chosen once, then held */
    a->be->forward(a, base, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
    int leaks = 0, moved = 0;
    int n = p.seq, d = p.head_dim, BH = p.batch * p.heads;
    float *xs[3] = {io.q, io.k, io.v};
    for (int t = 0; t < 3; t++)
        for (int pos = 1; pos < n; pos += 5) {
            float *saved = mallocCheck((size_t)BH * d * 4);
            for (int bh = 0; bh < BH; bh++)
                for (int e = 0; e < d; e++) {
                    saved[bh * d + e] = xs[t][((size_t)bh * n + pos) * d + e];
                    xs[t][((size_t)bh * n + pos) * d + e] += 1.0f;
                }
            a->be->forward(a, o, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
            for (int bh = 0; bh < BH; bh++)
                for (int e = 0; e < d; e++) xs[t][((size_t)bh * n + pos) * d + e] = saved[bh * d + e];
            free(saved);
            for (int bh = 0; bh < BH; bh++)
                for (int i = 0; i < n; i++) {
                    size_t r0 = ((size_t)bh * n + i) * d;
                    int changed = memcmp(base + r0, o + r0, (size_t)d * 4) != 0;
                    if (i < pos && changed) leaks++;
                    if (i >= pos && changed) moved++;
                }
        }
    diag("causality: %d earlier output rows changed, %d later rows changed", leaks, moved);
    ok(leaks == 0 && moved > 0, "causal hybrid: perturbing position p never changes outputs before p");
    free(base), free(o);
    tu_io_free(&io);
    attn_free(a);
}

static void test_determinism(void) {
    attn_params p = params(2, 4, 100, 16, -1, 1);
    tu_io x, y;
    tu_io_make(&x, &p, 8);
    tu_io_make(&y, &p, 8);
    attn *a = tu_make("hybrid", &p), *b = tu_make("hybrid", &p);
    run(a, &x, ATTN_TRAIN);
    run(b, &y, ATTN_TRAIN);
    int same = !memcmp(x.out, y.out, x.N * 4) && !memcmp(x.dq, y.dq, x.N * 4) && !memcmp(x.dk, y.dk, x.N * 4) &&
               !memcmp(x.dv, y.dv, x.N * 4);
    ok(same, "two instances with one seed give bit-identical outputs and gradients");
    attn_free(a), attn_free(b);
    tu_io_free(&x), tu_io_free(&y);
}

/* Routes and centroids through the hybrid: local heads have no routes; the
 * routing heads' are routing's; centroids written through the hybrid's
 * [H, K, d] view are the ones its routing heads use. */
static void test_routes_centroids(int B) {
    attn_params p = params(B, 3, 48, 8, 1, 1);
    attn *hy = tu_make("hybrid", &p);
    attn_params pr = p;
    pr.heads = 2;
    pr.local_heads = -1;
    attn *rt = tu_make("routing", &pr);
    if (!hy || !rt) {
        ok(0, "create");
        attn_free(hy), attn_free(rt);
        return;
    }
    int K = p.clusters, d = p.head_dim;
    float *ch = hy->be->centroids(hy), *cr = rt->be->centroids(rt);
    rb_rng r;
    rb_rng_seed(&r, 99);
    for (int h = 0; h < p.heads; h++)
        for (int i = 0; i < K * d; i++) {
            float x = rb_rng_normal(&r);
            ch[(size_t)h * K * d + i] = x;
            if (h >= 1) cr[(size_t)(h - 1) * K * d + i] = x;
        }
    tu_io io, sub;
    tu_io_make(&io, &p, 4);
    io_heads(&sub, &io, B, 3, 1, 2, (size_t)p.seq * d);
    hy->be->forward(hy, io.out, io.q, io.k, io.v, ATTN_TRAIN);
    rt->be->forward(rt, sub.out, sub.q, sub.k, sub.v, ATTN_TRAIN);
    double e = diff_heads(io.out, sub.out, B, 3, 1, 2, (size_t)p.seq * d);
    ok(e == 0.0, "B=%d: centroids set through the hybrid's view are used by its routing heads (max diff %.2e)", B, e);
    /* after a training pass both moved the same way */
    ch = hy->be->centroids(hy);
    cr = rt->be->centroids(rt);
    double ce = 0.0, local_rows = 0.0;
    for (int i = 0; i < 2 * K * d; i++) ce = fmax(ce, fabs((double)ch[K * d + i] - cr[i]));
    for (int i = 0; i < K * d; i++) local_rows = fmax(local_rows, fabs((double)ch[i]));
    ok(ce == 0.0 && local_rows == 0.0,
       "B=%d: the view shows routing's moved centroids (max diff %.2e) and zeros for the local head", B, ce);
    const int *m1, *m2;
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < K; c++) {
            if (hy->be->routes(hy, b, 0, c, 0, &m1) != -1) bad++;
            for (int h = 1; h < 3; h++) {
                int n1 = hy->be->routes(hy, b, h, c, 0, &m1), n2 = rt->be->routes(rt, b, h - 1, c, 0, &m2);
                if (n1 != n2 || n1 < 0 || memcmp(m1, m2, (size_t)n1 * sizeof(int))) bad++;
            }
        }
    ok(bad == 0, "B=%d: routes: -1 for the local head, routing's for the others", B);
    tu_io_free(&io), tu_io_free(&sub);
    attn_free(hy), attn_free(rt);
}

static void test_counts(void) {
    int cases[][4] = {{2, 4, -1, 1}, {1, 4, 0, 1}, {2, 4, 4, 0}, {1, 3, 1, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        attn_params p = params(cases[c][0], cases[c][1], 144, 16, cases[c][2], cases[c][3]);
        attn *a = tu_make("hybrid", &p);
        if (!a) {
            ok(0, "create");
            continue;
        }
        attn_params pl = p, pr = p;
        pl.heads = p.local_heads;
        pr.heads = p.heads - p.local_heads;
        const attn_backend *lb = attn_find("local"), *rb = attn_find("routing");
        double want[2] = {0, 0};
        for (int pass = 0; pass < 2; pass++) {
            if (pl.heads) want[pass] += lb->flops(&pl, pass);
            if (pr.heads) want[pass] += rb->flops(&pr, pass);
        }
        ok(a->be->flops(&p, ATTN_PASS_FWD) == want[0] && a->be->flops(&p, ATTN_PASS_BWD) == want[1],
           "B=%d H=%d L=%d: FLOPs are the halves' sum (fwd %.0f, bwd %.0f)", p.batch, p.heads, p.local_heads,
           want[0], want[1]);
        ok(a->bytes == a->be->act_bytes(&p), "B=%d H=%d L=%d: act_bytes %zu equals bytes held %zu", p.batch, p.heads,
           p.local_heads, a->be->act_bytes(&p), a->bytes);
        attn_free(a);
    }
}

static void test_params(void) {
    const attn_backend *be = attn_find("hybrid");
    ok(be != NULL, "hybrid is registered");
    if (!be) return;
    ok((be->uses & ATTN_USES_LOCAL_HEADS) && (be->uses & ATTN_USES_WINDOW) && (be->uses & ATTN_USES_CLUSTERS),
       "hybrid declares local_heads, window and clusters");
    char err[512] = "";
    attn_params p = params(1, 4, 1000, 16, -1, 1);
    int rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && p.local_heads == 2, "default local_heads is heads/2 (got %d)", p.local_heads);
    ok(p.clusters == 32 && p.window == 32, "defaults at seq 1000: clusters round(sqrt) = 32, window ceil(1000/32) = 32 "
       "(got %d, %d)", p.clusters, p.window);
    p = params(1, 5, 256, 16, -1, 0);
    p.clusters = 4;
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && p.local_heads == 2 && p.window == 64, "heads 5: 2 local; clusters 4 at seq 256: window 64 (got %d, %d)",
       p.local_heads, p.window);
    int bad[] = {-2, 5, 100};
    for (int i = 0; i < 3; i++) {
        p = params(1, 4, 64, 16, bad[i], 1);
        err[0] = 0;
        rc = attn_validate_msg(be, &p, err, sizeof err);
        ok(rc != 0 && strstr(err, "local_heads"), "local_heads %d with 4 heads refused: %s", bad[i], err);
    }
    p = params(1, 4, 64, 16, 2, 1);
    attn *a = attn_make("hybrid", &p, err, sizeof err);
    ok(a != NULL, "local_heads 2 of 4 accepted");
    attn_free(a);
    p = params(1, 4, 64, 16, 5, 1);
    a = attn_make("hybrid", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "local_heads"), "attn_make refuses local_heads 5 of 4: %s", err);
    p = params(1, 4, 64, 16, 2, 1);
    p.lsh_heads = 3;
    a = attn_make("hybrid", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "lsh_heads"), "attn_make refuses local_heads 2 + lsh_heads 3 of 4: %s", err);
    p = params(1, 4, 64, 16, 2, 1);
    p.clusters = 65;
    a = attn_make("hybrid", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "clusters"), "more clusters than tokens refused: %s", err);
    p = params(1, 4, 64, 16, 2, 1);
    p.window = 100;
    a = attn_make("hybrid", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "routing heads"), "window > seq refused for the routing heads: %s", err);
    p = params(1, 4, 64, 16, 4, 1);
    p.window = 100;
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && be->equals_dense(&p) == 1, "all heads local with window >= seq equals dense");
    p = params(1, 4, 64, 16, 3, 1);
    p.window = 64;
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && be->equals_dense(&p) == 0, "a routing head present: not dense");
    p = params(1, 4, 64, 16, 4, 1);
    p.window = 100, p.local_window = 16;
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && be->equals_dense(&p) == 0, "all heads local with window >= seq but local_window 16: not dense");
    p = params(1, 4, 64, 16, 2, 1);
    p.local_window = 8;
    p.clusters = 4;
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && p.window == 16 && p.local_window == 8 && p.clusters == 4,
       "local_window 8 beside clusters 4 at seq 64: routing window 16, local_window kept (got %d, %d)", p.window,
       p.local_window);
}

int main(void) {
    test_params();
    for (int causal = 0; causal <= 1; causal++) {
        test_parts(1, 4, 64, 16, -1, causal);
        test_parts(3, 4, 70, 8, 1, causal);
        test_parts(2, 3, 64, 16, 3, causal); /* all local */
        test_parts(2, 3, 64, 16, 0, causal); /* all routing */
        test_parts(1, 2, 50, 8, 0, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_check(1, 4, 64, 16, -1, 0, causal);
        test_check(2, 2, 49, 8, 1, 0, causal);
        test_check(2, 2, 64, 16, 0, 16, causal);
        test_check(1, 2, 40, 8, 2, 40, causal); /* one local block: compared with dense */
        test_check(2, 3, 64, 8, 3, 16, causal);
        /* the paper's split: local blocks of half the routing window */
        test_check_lw(1, 4, 64, 8, 2, 16, causal, 8);
        test_check_lw(2, 4, 48, 8, 3, 0, causal, 5);
        test_check_lw(1, 2, 40, 8, 2, 4, causal, 40); /* all local, one block: dense although window is 4 */
    }
    for (int causal = 0; causal <= 1; causal++) {
        /* local 8 beside routing 4 clusters x 16 (the paper's 256 beside 16 x 512, scaled) */
        test_parts_lw(1, 4, 64, 16, 2, causal, 4, 16, 8);
        test_parts_lw(2, 4, 64, 8, 3, causal, 4, 16, 8);
        test_parts_lw(3, 3, 70, 8, 1, causal, 0, 0, 7);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_lsh_heads(1, 4, 64, 16, 2, 2, causal); /* local + lsh: wikitext103_local_hash */
        test_lsh_heads(2, 4, 70, 8, 1, 2, causal);  /* all three kinds */
        test_lsh_heads(2, 3, 64, 8, 0, 3, causal);  /* all lsh */
    }
    test_causal();
    test_determinism();
    test_routes_centroids(1);
    test_routes_centroids(2);
    test_counts();
    return tap_done();
}
