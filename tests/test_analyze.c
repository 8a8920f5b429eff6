/* test_analyze.c: the attention analysis (core/model/analyze.c). The per-row
 * measures against hand computations (JSD of identical rows is 0; a one-hot
 * row against the uniform one in closed form; entropies); the probabilities
 * read back through a backend's forward against a double softmax written
 * here; kept dense mass where the answer is known without the code under
 * test: routing with one cluster as large as the sequence and local with
 * window >= seq keep all of it, local with a smaller window keeps the mass
 * of its block band, a pattern showing each query only itself keeps the
 * dense diagonal, shared-QK routing with one cluster keeps everything but
 * the diagonal; planted clusters: routing keeps much more than the random
 * floor; hybrid head kinds, unrouted rows against the backend's own
 * statistic, independence from the thread count; and a whole checkpoint
 * analysed end to end (a wrong configuration refused). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/analyze.h"
#include "attn/attn.h"
#include "util/common.h"
#include "tap.h"
#include "model/tasks.h"
#include "util/threads.h"
#include "model/train.h"
#include "testutil.h"

static attn_params params(int B, int H, int n, int d) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.causal = 1;
    return p;
}

static float *randn(size_t n, uint64_t seed, float scale) {
    float *x = mallocCheck(n * sizeof(float));
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rb_rng_normal(&r);
    return x;
}

/* Reference causal softmax weight of query i on key j, in long double,
 * written independently of analyze_dense_probs. */
static double ref_weight(const float *q, const float *keys, int d, int i, int j) {
    long double si = 0, z = 0, sj = 0;
    long double scale = 1.0L / sqrtl((long double)d);
    long double mx = -INFINITY;
    for (int t = 0; t <= i; t++) {
        long double s = 0;
        for (int c = 0; c < d; c++) s += (long double)q[(size_t)i * d + c] * keys[(size_t)t * d + c];
        if (s * scale > mx) mx = s * scale;
    }
    for (int t = 0; t <= i; t++) {
        long double s = 0;
        for (int c = 0; c < d; c++) s += (long double)q[(size_t)i * d + c] * keys[(size_t)t * d + c];
        z += expl(s * scale - mx);
        if (t == j) sj = s * scale;
    }
    si = expl(sj - mx) / z;
    return (double)si;
}

/* Run a forward (the model's pass), then analyse one layer with acc. */
static analyze_acc *analyse_one(attn *a, const float *q, const float *k, uint64_t seed) {
    size_t N = (size_t)a->p.batch * a->p.heads * a->p.seq * a->p.head_dim;
    float *v = randn(N, 99, 1.0f), *out = mallocCheck(N * sizeof(float));
    a->be->forward(a, out, q, k, v, ATTN_EVAL);
    analyze_acc *acc = analyze_acc_create(1, a->p.heads, seed);
    char err[256];
    if (analyze_layer(acc, 0, a, q, k, err, sizeof err) != 0) diag("analyze_layer: %s", err);
    free(v), free(out);
    return acc;
}

static void test_rows(void) {
    float p[6] = {0.1f, 0.3f, 0.0f, 0.2f, 0.15f, 0.25f};
    ok(analyze_jsd(p, p, 6) == 0.0, "JSD of a row with itself is 0");
    /* one-hot vs uniform over 4: M = (5/8, 1/8, 1/8, 1/8);
     * JSD = 1/2 ln(8/5) + 1/2 (1/4 ln(2/5) + 3/4 ln 2) */
    float one[4] = {1, 0, 0, 0}, uni[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    double want = 0.5 * log(1.6) + 0.5 * (0.25 * log(0.4) + 0.75 * log(2.0));
    double got = analyze_jsd(one, uni, 4);
    diag("JSD(one-hot, uniform over 4) = %.12f, hand %.12f, diff %.2e", got, want, fabs(got - want));
    ok(fabs(got - want) < 1e-12, "JSD of a one-hot row against the uniform one matches the hand computation");
    /* unnormalised rows are normalised: the same as above, scaled */
    float one3[4] = {3, 0, 0, 0}, uni2[4] = {2, 2, 2, 2};
    ok(fabs(analyze_jsd(one3, uni2, 4) - want) < 1e-12 && fabs(analyze_jsd(uni, one, 4) - want) < 1e-12,
       "JSD normalises its rows and is symmetric");
    float a2[2] = {1, 0}, b2[2] = {0, 1};
    ok(fabs(analyze_jsd(a2, b2, 2) - log(2.0)) < 1e-12, "disjoint rows: JSD = ln 2 (the bound)");
    float z[4] = {0, 0, 0, 0};
    ok(isnan(analyze_jsd(z, uni, 4)) && isnan(analyze_entropy(z, 4)), "an all-zero (unrouted) row gives NAN");
    ok(fabs(analyze_entropy(uni, 4) - log(4.0)) < 1e-12 && analyze_entropy(one, 4) == 0.0,
       "entropy: uniform over 4 = ln 4, one-hot = 0");
    /* a pattern that hides every key but the token itself keeps the diagonal */
    int n = 24, d = 8;
    float *q = randn((size_t)n * d, 5, 1.5f), *k = randn((size_t)n * d, 6, 1.5f);
    double *pd = mallocCheck((size_t)n * n * sizeof(double));
    analyze_dense_probs(pd, q, k, n, d, 1);
    float *row = calloc(n, sizeof(float));
    double kept = 0, want_kept = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        memset(row, 0, n * sizeof(float));
        row[i] = 0.7f; /* any positive weight: only the pattern matters */
        kept += analyze_kept_mass(row, pd + (size_t)i * n, n);
        double r = ref_weight(q, k, d, i, i);
        want_kept += r;
        for (int j = 0; j <= i; j++) worst = fmax(worst, fabs(pd[(size_t)i * n + j] - ref_weight(q, k, d, i, j)));
    }
    kept /= n, want_kept /= n;
    diag("self-only pattern: kept %.12f, mean dense diagonal %.12f; dense probs vs long double: worst %.2e", kept,
         want_kept, worst);
    ok(fabs(kept - want_kept) < 1e-12 && worst < 1e-12,
       "a pattern that shows each query only itself keeps exactly the dense diagonal");
    /* random floor: all allowed keys = everything; none = 0; seeded */
    int idx[24];
    rb_rng r1, r2;
    rb_rng_seed(&r1, 3), rb_rng_seed(&r2, 3);
    double full = analyze_random_mass(pd + (size_t)(n - 1) * n, n, n, idx, &r1);
    double a1 = analyze_random_mass(pd + (size_t)(n - 1) * n, n, 5, idx, &r1);
    analyze_random_mass(pd + (size_t)(n - 1) * n, n, n, idx, &r2);
    double a2b = analyze_random_mass(pd + (size_t)(n - 1) * n, n, 5, idx, &r2);
    ok(fabs(full - 1.0) < 1e-12 && analyze_random_mass(pd, 1, 0, idx, &r1) == 0.0 && a1 == a2b && a1 > 0 && a1 < 1,
       "random floor: all keys keep 1, no keys 0, same seed same draw");
    free(q), free(k), free(pd), free(row);
}

/* P read through dense's forward equals the double softmax; identical heads
 * have JSD 0; a dense layer keeps nothing to report. */
static void test_dense(void) {
    int B = 2, H = 3, n = 40, d = 8; /* n not a multiple of d: a ragged last pass */
    attn_params p = params(B, H, n, d);
    attn *a = tu_make("dense", &p);
    size_t N = (size_t)B * H * n * d, hs = (size_t)n * d;
    float *q = randn(N, 11, 1.0f), *k = randn(N, 12, 1.0f);
    /* head 1 = head 0 in each batch entry */
    for (int b = 0; b < B; b++) {
        memcpy(q + ((size_t)b * H + 1) * hs, q + ((size_t)b * H) * hs, hs * sizeof(float));
        memcpy(k + ((size_t)b * H + 1) * hs, k + ((size_t)b * H) * hs, hs * sizeof(float));
    }
    analyze_acc *acc = analyse_one(a, q, k, 1);
    double worst = 0;
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double want = j <= i ? ref_weight(q + bh * hs, k + bh * hs, d, i, j) : 0.0;
                worst = fmax(worst, fabs(acc->P[((size_t)bh * n + i) * n + j] - want));
            }
    diag("dense P through the backend's forward vs long double softmax: worst %.2e", worst);
    ok(worst < 2e-6, "one-hot V through dense's forward recovers the causal softmax (worst %.1e)", worst);
    size_t o01 = (size_t)0 * H * H + 1; /* pair (0,1) of layer 0 */
    double j01 = acc->jsd_sum[o01] / acc->jsd_rows[o01], j02 = acc->jsd_sum[2] / acc->jsd_rows[2];
    diag("dense heads: JSD(h0, h1 identical) = %.3e, JSD(h0, h2) = %.4f", j01, j02);
    ok(j01 == 0.0 && j02 > 1e-3 && acc->jsd_rows[o01] == B * n, "two identical heads have JSD 0 (over every row)");
    int kinds[3];
    analyze_head_kinds(a, kinds);
    ok(kinds[0] == ANALYZE_HEAD_DENSE && isnan(analyze_head_kept(acc, 0, 0)) && !isnan(analyze_head_entropy(acc, 0, 0)),
       "dense heads: kind dense, entropy but no kept mass");
    analyze_acc_free(acc);
    attn_free(a), free(q), free(k);
}

static void test_full_patterns(void) {
    int B = 2, H = 2, n = 48, d = 16;
    size_t N = (size_t)B * H * n * d;
    float *q = randn(N, 21, 1.0f), *k = randn(N, 22, 1.0f);
    /* routing, one cluster holding every token, separate keys */
    attn_params p = params(B, H, n, d);
    p.clusters = 1, p.window = n, p.share_qk = 0;
    attn *a = tu_make("routing", &p);
    analyze_acc *acc = analyse_one(a, q, k, 1);
    double km = analyze_kind_kept(acc, 0, ANALYZE_HEAD_ROUTING), rm = analyze_kind_random(acc, 0, ANALYZE_HEAD_ROUTING);
    diag("routing clusters=1 window=seq unshared: kept %.15f, random %.15f", km, rm);
    ok(fabs(km - 1.0) < 1e-9 && fabs(rm - 1.0) < 1e-9 && acc->unrouted[0] == 0,
       "routing with one cluster and window = seq keeps mass 1.0");
    analyze_acc_free(acc), attn_free(a);

    /* the same shared: a token does not attend to itself unless it sees
     * nothing else, so the kept mass is 1 minus the dense diagonal (keys = q) */
    p = params(B, H, n, d);
    p.clusters = 1, p.window = n;
    a = tu_make("routing", &p);
    acc = analyse_one(a, q, k, 1);
    double want = 0;
    size_t hs = (size_t)n * d;
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < n; i++) want += i == 0 ? 1.0 : 1.0 - ref_weight(q + bh * hs, q + bh * hs, d, i, i);
    want /= (double)B * H * n;
    km = analyze_kind_kept(acc, 0, ANALYZE_HEAD_ROUTING);
    diag("routing clusters=1 window=seq shared (share_qk=%d): kept %.12f, 1 - dense diagonal %.12f", a->p.share_qk, km,
         want);
    ok(a->p.share_qk == 1 && fabs(km - want) < 1e-9, "shared-QK routing with one cluster keeps all but the diagonal");
    analyze_acc_free(acc), attn_free(a);

    /* local, window >= seq */
    p = params(B, H, n, d);
    p.window = n + 5;
    a = tu_make("local", &p);
    acc = analyse_one(a, q, k, 1);
    km = analyze_kind_kept(acc, 0, ANALYZE_HEAD_LOCAL);
    diag("local window=%d >= seq: kept %.15f", p.window, km);
    ok(fabs(km - 1.0) < 1e-9, "local with window >= seq keeps mass 1.0");
    analyze_acc_free(acc), attn_free(a);

    /* local, window 12: query i sees its own block causally and the previous block */
    int w = 12;
    p = params(B, H, n, d);
    p.window = w;
    a = tu_make("local", &p);
    acc = analyse_one(a, q, k, 1);
    want = 0;
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < n; i++) {
            int lo = RB_MAX(0, (i / w - 1) * w);
            for (int j = lo; j <= i; j++) want += ref_weight(q + bh * hs, k + bh * hs, d, i, j);
        }
    want /= (double)B * H * n;
    km = analyze_kind_kept(acc, 0, ANALYZE_HEAD_LOCAL);
    rm = analyze_kind_random(acc, 0, ANALYZE_HEAD_LOCAL);
    diag("local window=%d: kept %.12f, dense mass on the block band %.12f, random floor %.4f", w, km, want, rm);
    ok(fabs(km - want) < 1e-9, "local window %d keeps the dense mass of its block band", w);
    analyze_acc_free(acc), attn_free(a);
    free(q), free(k);
}

/* Tokens drawn around planted centres: dense attention concentrates on the
 * token's own cluster, which is what routing's clusters find. */
static void test_planted(void) {
    int B = 1, H = 2, n = 128, d = 16, K = 4;
    size_t N = (size_t)B * H * n * d;
    float *q = mallocCheck(N * sizeof(float));
    rb_rng r;
    rb_rng_seed(&r, 77);
    for (int bh = 0; bh < B * H; bh++) {
        float cen[4][16];
        for (int c = 0; c < K; c++)
            for (int j = 0; j < d; j++) cen[c][j] = 2.5f * rb_rng_normal(&r);
        int lab[128];
        for (int i = 0; i < n; i++) lab[i] = i % K; /* equal sizes, shuffled positions */
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rb_rng_below(&r, (uint32_t)(i + 1)), t = lab[i];
            lab[i] = lab[j], lab[j] = t;
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) q[((size_t)bh * n + i) * d + j] = cen[lab[i]][j] + 0.3f * rb_rng_normal(&r);
    }
    attn_params p = params(B, H, n, d);
    p.clusters = K, p.window = n / K, p.share_qk = 0;
    attn *a = tu_make("routing", &p);
    analyze_acc *acc = analyse_one(a, q, q, 2);
    double km = analyze_kind_kept(acc, 0, ANALYZE_HEAD_ROUTING), rm = analyze_kind_random(acc, 0, ANALYZE_HEAD_ROUTING);
    diag("planted clusters (K=%d, n=%d): routing keeps %.4f of the dense mass, random floor %.4f", K, n, km, rm);
    ok(km > 0.9 && km > rm + 0.5, "planted clusters: routing keeps much more dense mass than a random pattern");
    analyze_acc_free(acc), attn_free(a), free(q);
}

/* Hybrid: kinds by head; unrouted rows agree with routing's own statistic;
 * the metrics do not depend on the thread count. */
static void test_hybrid(void) {
    int B = 2, H = 4, n = 64, d = 8;
    size_t N = (size_t)B * H * n * d;
    float *q = randn(N, 31, 1.0f), *k = randn(N, 32, 1.0f);
    rb_metric *m[2] = {NULL, NULL};
    int nm[2] = {0, 0};
    double unrouted_share = NAN, rows_unrouted = 0;
    int kinds_ok = 0;
    for (int t = 0; t < 2; t++) {
        rb_set_threads(t == 0 ? 2 : 1);
        attn_params p = params(B, H, n, d);
        p.clusters = 4, p.window = 8; /* 32 slots for 64 tokens: many unrouted */
        attn *a = tu_make("hybrid", &p);
        analyze_acc *acc = analyse_one(a, q, k, 5);
        int max = analyze_metrics_max(acc);
        m[t] = mallocCheck((size_t)max * sizeof(rb_metric));
        nm[t] = analyze_metrics(acc, m[t], max);
        if (t == 0) {
            kinds_ok = acc->kinds[0] == ANALYZE_HEAD_LOCAL && acc->kinds[1] == ANALYZE_HEAD_LOCAL &&
                       acc->kinds[2] == ANALYZE_HEAD_ROUTING && acc->kinds[3] == ANALYZE_HEAD_ROUTING;
            rows_unrouted = (acc->unrouted[2] + acc->unrouted[3]) / (2.0 * B * n);
            for (int s = 0; s < acc->nstats[0]; s++)
                if (strcmp(acc->stat_names[0][s], "unrouted_share") == 0) unrouted_share = acc->stat_sum[0][s];
            ok(acc->unrouted[0] == 0 && acc->unrouted[1] == 0, "local heads have no unrouted rows");
            double sd;
            int np;
            double lr = analyze_pair_jsd(acc, 0, ANALYZE_PAIR_LR, &sd, &np);
            ok(np == 4 && lr > 0 && lr <= log(2.0), "hybrid 2+2 heads: 4 local-routing pairs, JSD in (0, ln 2] (%.4f)",
               lr);
            analyze_print(stdout, acc);
        }
        analyze_acc_free(acc), attn_free(a);
    }
    rb_set_threads(0);
    ok(kinds_ok, "hybrid: the first local_heads heads are local, the rest routing");
    diag("unrouted rows of the routing heads %.4f, routing's unrouted_share %.4f", rows_unrouted, unrouted_share);
    ok(rows_unrouted > 0.3 && fabs(rows_unrouted - unrouted_share) < 1e-12,
       "unrouted rows (all-zero P) match routing's unrouted_share statistic");
    int same = nm[0] == nm[1] && nm[0] > 0;
    for (int i = 0; same && i < nm[0]; i++)
        same = strcmp(m[0][i].name, m[1][i].name) == 0 && m[0][i].value == m[1][i].value;
    ok(same, "metrics bit-identical with 2 threads and 1 thread (%d metrics)", nm[0]);
    const char *need[] = {"analyze.L0.H3.entropy", "analyze.L0.kept_mass.routing", "analyze.L0.random_mass.local",
                          "analyze.L0.jsd.local_routing", "analyze.jsd.routing_routing", "analyze.L0.kmeans_objective",
                          "analyze.kept_mass.local"};
    int found = 0;
    for (size_t w = 0; w < sizeof need / sizeof need[0]; w++)
        for (int i = 0; i < nm[0]; i++)
            if (strcmp(m[0][i].name, need[w]) == 0) {
                found++;
                break;
            }
    ok(found == (int)(sizeof need / sizeof need[0]), "metric names (analyze.L0.H3.entropy, ..jsd.local_routing, ...)");
    free(m[0]), free(m[1]), free(q), free(k);
}

/* A tiny hybrid model on the copy task, trained for a few steps and saved,
 * analysed from its checkpoint. */
static void test_checkpoint(void) {
    char path[] = "/tmp/rb_test_analyze_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    train_config c;
    train_config_default(&c);
    char err[1024];
    const char *kv[][2] = {{"task", "copy"}, {"d_model", "32"}, {"layers", "2"}, {"heads", "4"},
                           {"seq", "32"},    {"batch", "2"},    {"steps", "3"},  {"backend", "hybrid"},
                           {"eval_batches", "1"}};
    int rc = 0;
    for (size_t i = 0; i < sizeof kv / sizeof kv[0] && rc == 0; i++) rc = train_config_set(&c, kv[i][0], kv[i][1], err, sizeof err);
    snprintf(c.save, sizeof c.save, "%s", path);
    train_result r;
    if (rc == 0) rc = train_run(&c, NULL, &r, err, sizeof err);
    if (rc != 0) diag("train: %s", err);
    analyze_options o = {2, TASK_VAL};
    analyze_acc *acc = NULL;
    if (rc == 0) rc = analyze_checkpoint(&c, path, &o, &acc, err, sizeof err);
    if (rc != 0) diag("analyze_checkpoint: %s", err);
    ok(rc == 0 && acc && acc->L == 2 && acc->H == 4 && acc->stat_batches[1] == 2 && acc->loss_batches == 2,
       "a trained hybrid checkpoint analysed: 2 layers x 4 heads, 2 batches");
    if (acc) {
        double lr = analyze_pair_jsd(acc, -1, ANALYZE_PAIR_LR, NULL, NULL);
        double k = analyze_kind_kept(acc, -1, ANALYZE_HEAD_LOCAL);
        diag("checkpoint: JSD local-routing %.4f, local kept %.4f, eval loss %.4f", lr,
             k, acc->loss_sum / acc->loss_batches);
        ok(lr > 0 && lr <= log(2.0) && k > 0 && k <= 1.0 + 1e-9 && fabs(acc->loss_sum / 2 - r.final_eval_loss) < 1.0,
           "checkpoint measures in range");
    }
    analyze_acc_free(acc);
    train_config c2 = c;
    train_config_set(&c2, "d_model", "64", err, sizeof err);
    acc = NULL;
    rc = analyze_checkpoint(&c2, path, &o, &acc, err, sizeof err);
    diag("other configuration: %s", err);
    ok(rc != 0 && !acc && strstr(err, "configuration"), "a checkpoint of another configuration is refused");
    o.batches = 0;
    ok(analyze_checkpoint(&c, path, &o, &acc, err, sizeof err) != 0, "zero batches refused");
    unlink(path);
}

int main(void) {
    test_rows();
    test_dense();
    test_full_patterns();
    test_planted();
    test_hybrid();
    test_checkpoint();
    return tap_done();
}
