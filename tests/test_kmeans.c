/* test_kmeans.c: the online k-means behind routing attention: centroids find
 * planted, well separated centres (from the data-driven initialisation and
 * by the EMA from a poor start); the EMA step and commitment loss match
 * numbers worked out by hand; centroids stay put in evaluation passes and
 * with ATTN_KEEP_ROUTES; top-k selection agrees with a full sort (ties by
 * position). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"
#include "attn/kmeans.h"
#include "tap.h"
#include "util/threads.h"

extern const attn_backend attn_backend_routing;
static const attn_backend *BE = &attn_backend_routing;

static attn *make(int B, int H, int n, int d, int K, float decay, attn_params *p) {
    memset(p, 0, sizeof *p);
    p->batch = B, p->heads = H, p->seq = n, p->head_dim = d, p->causal = 1, p->clusters = K;
    p->share_qk = -1, p->local_heads = -1, p->assign = ATTN_ASSIGN_TOPK, p->norm = ATTN_NORM_L2;
    p->decay = decay, p->kmeans_iters = 3, p->seed = 42;
    char err[256];
    if (attn_validate_msg(BE, p, err, sizeof err) != 0) {
        diag("%s", err);
        return NULL;
    }
    return BE->create(p, err, sizeof err);
}

/* q (B,H,n,d): token i of head h is planted centre (i*7+b) % K of that head plus noise */
static void planted(float *q, const float *centres, int B, int H, int n, int d, int K, float noise, rb_rng *r) {
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < n; i++) {
                int c = (i * 7 + b + (int)rb_rng_below(r, 2)) % K;
                float *x = q + (((size_t)b * H + h) * n + i) * d;
                for (int j = 0; j < d; j++) x[j] = centres[((size_t)h * K + c) * d + j] + noise * rb_rng_normal(r);
            }
}

/* worst over planted centres of the distance to the nearest centroid */
static double worst_match(const float *mu, const float *centres, int H, int K, int d) {
    double worst = 0;
    for (int h = 0; h < H; h++)
        for (int c = 0; c < K; c++) {
            double best = 1e300;
            for (int e = 0; e < K; e++) {
                double s = 0;
                for (int j = 0; j < d; j++) {
                    double t = centres[((size_t)h * K + c) * d + j] - mu[((size_t)h * K + e) * d + j];
                    s += t * t;
                }
                best = fmin(best, sqrt(s));
            }
            worst = fmax(worst, best);
        }
    return worst;
}

static void test_planted(void) {
    int B = 2, H = 2, n = 256, d = 16, K = 4;
    attn_params p;
    attn *a = make(B, H, n, d, K, 0.9f, &p);
    if (!ok(a != NULL, "create")) return;
    rb_rng r;
    rb_rng_seed(&r, 1234);
    /* centres: distinct unit basis vectors, so pairwise distance sqrt(2) */
    float *centres = calloc((size_t)H * K * d, sizeof(float));
    for (int h = 0; h < H; h++)
        for (int c = 0; c < K; c++) centres[((size_t)h * K + c) * d + (c * 3 + h) % d] = 1.0f;
    size_t N = (size_t)B * H * n * d;
    float *q = malloc(N * 4), *v = malloc(N * 4), *out = malloc(N * 4);
    for (size_t i = 0; i < N; i++) v[i] = rb_rng_normal(&r);
    planted(q, centres, B, H, n, d, K, 0.05f, &r);
    BE->forward(a, out, q, q, v, ATTN_EVAL);
    float *mu = BE->centroids(a);
    double w0 = worst_match(mu, centres, H, K, d);
    diag("after initialisation from data: worst centre-to-centroid distance %.4f", w0);
    ok(w0 < 0.1, "k-means++ and Lloyd on the first batch find every planted centre (%.4f)", w0);

    /* a poor start: every centroid pushed 0.4 away from its centre */
    for (int h = 0; h < H; h++)
        for (int c = 0; c < K; c++) {
            float *m = mu + ((size_t)h * K + c) * d;
            for (int j = 0; j < d; j++) m[j] = centres[((size_t)h * K + c) * d + j];
            m[(c * 3 + h + 1) % d] += 0.4f;
        }
    double w1 = worst_match(mu, centres, H, K, d);
    for (int t = 0; t < 60; t++) {
        planted(q, centres, B, H, n, d, K, 0.05f, &r);
        BE->forward(a, out, q, q, v, ATTN_TRAIN);
    }
    double w2 = worst_match(mu, centres, H, K, d);
    diag("EMA (decay 0.9, 60 passes): worst distance %.4f -> %.4f", w1, w2);
    ok(w1 > 0.39 && w2 < 0.03, "online k-means moves the centroids onto the planted centres (%.4f -> %.4f)", w1, w2);
    free(centres), free(q), free(v), free(out);
    BE->destroy(a);
}

/* One head, d = 2, four tokens, centroids set by hand. Normalised tokens:
 * (1,0) (0.8,0.6) (0,1) (-0.6,0.8); centroids (1,0) and (0,1). Nearest:
 * tokens 0,1 -> centroid 0 (squared distances 0, 0.4), tokens 2,3 ->
 * centroid 1 (0, 0.4). Means (0.9,0.3) and (-0.3,0.9); decay 0.9 gives
 * (0.99,0.03) and (-0.03,0.99); commit loss (0+0.4+0+0.4)/4 = 0.2. */
static void test_hand(void) {
    attn_params p;
    attn *a = make(1, 1, 4, 2, 2, 0.9f, &p);
    if (!ok(a != NULL, "create")) return;
    float q[8] = {2, 0, 1.6f, 1.2f, 0, 0.5f, -3, 4}, v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8];
    float *mu = BE->centroids(a);
    mu[0] = 1, mu[1] = 0, mu[2] = 0, mu[3] = 1;
    BE->forward(a, out, q, q, v, ATTN_TRAIN);
    const float want[4] = {0.99f, 0.03f, -0.03f, 0.99f};
    double err = 0;
    for (int i = 0; i < 4; i++) err = fmax(err, fabs(mu[i] - want[i]));
    attn_stat st[16];
    int ns = BE->stats(a, st, 16);
    double cl = NAN, obj = NAN;
    for (int i = 0; i < ns; i++) {
        if (!strcmp(st[i].name, "commit_loss")) cl = st[i].value;
        if (!strcmp(st[i].name, "kmeans_objective")) obj = st[i].value;
    }
    diag("hand EMA: centroids (%.6f %.6f) (%.6f %.6f), commit_loss %.6f, objective %.6f", mu[0], mu[1], mu[2],
         mu[3], cl, obj);
    ok(err < 1e-6, "EMA step matches the hand computation (max err %.2g)", err);
    ok(fabs(cl - 0.2) < 1e-6 && fabs(obj - 0.8) < 1e-6, "commit_loss 0.2 and kmeans_objective 0.8 as by hand");

    /* the kernel on its own: sums/counts then EMA */
    double sums[4] = {0};
    int64_t counts[2] = {0};
    float x[8] = {1, 0, 0.8f, 0.6f, 0, 1, -0.6f, 0.8f}, m2[4] = {1, 0, 0, 1};
    int asg[4] = {0, 0, 1, 1};
    kmeans_accumulate(sums, counts, x, asg, 4, 2);
    kmeans_ema(m2, sums, counts, 2, 2, 0.9f);
    err = 0;
    for (int i = 0; i < 4; i++) err = fmax(err, fabs(m2[i] - want[i]));
    ok(counts[0] == 2 && counts[1] == 2 && err < 1e-6, "kmeans_accumulate + kmeans_ema by hand (err %.2g)", err);
    /* a centroid nothing was assigned to stays */
    int asg0[4] = {0, 0, 0, 0};
    float m3[4] = {1, 0, 0, 1};
    memset(sums, 0, sizeof sums), memset(counts, 0, sizeof counts);
    kmeans_accumulate(sums, counts, x, asg0, 4, 2);
    kmeans_ema(m3, sums, counts, 2, 2, 0.9f);
    ok(m3[2] == 0 && m3[3] == 1, "an empty centroid does not move");
    BE->destroy(a);
}

static void test_frozen(void) {
    int B = 1, H = 2, n = 64, d = 8, K = 4;
    attn_params p;
    attn *a = make(B, H, n, d, K, 0.99f, &p);
    if (!ok(a != NULL, "create")) return;
    size_t N = (size_t)B * H * n * d, M = (size_t)H * K * d;
    rb_rng r;
    rb_rng_seed(&r, 5);
    float *q = malloc(N * 4), *v = malloc(N * 4), *out = malloc(N * 4), *before = malloc(M * 4);
    for (size_t i = 0; i < N; i++) q[i] = rb_rng_normal(&r), v[i] = rb_rng_normal(&r);
    BE->forward(a, out, q, q, v, ATTN_TRAIN);
    float *mu = BE->centroids(a);
    memcpy(before, mu, M * 4);
    for (size_t i = 0; i < N; i++) q[i] = rb_rng_normal(&r);
    BE->forward(a, out, q, q, v, ATTN_EVAL);
    ok(!memcmp(before, mu, M * 4), "evaluation pass leaves the centroids alone");
    BE->forward(a, out, q, q, v, ATTN_TRAIN | ATTN_KEEP_ROUTES);
    BE->forward(a, out, q, q, v, ATTN_KEEP_ROUTES);
    ok(!memcmp(before, mu, M * 4), "ATTN_KEEP_ROUTES passes (even with ATTN_TRAIN) leave the centroids alone");
    BE->forward(a, out, q, q, v, ATTN_TRAIN);
    ok(memcmp(before, mu, M * 4) != 0, "a training pass moves them");
    free(q), free(v), free(out), free(before);
    BE->destroy(a);
}

static int cmp_pair(const void *x, const void *y) {
    const kmeans_pair *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

static void test_topk(void) {
    rb_rng r;
    rb_rng_seed(&r, 99);
    int bad = 0, bad_portable = 0, nmax = 9000;
    float *dots = malloc(nmax * 4), *xn2 = malloc(nmax * 4);
    kmeans_pair *work = malloc(nmax * sizeof *work), *ref = malloc(nmax * sizeof *ref);
    int *mem = malloc(nmax * sizeof(int)), *want = malloc(nmax * sizeof(int));
    /* 2048 and 5000 sample 256 keys for the threshold, 9000 samples 512 */
    for (int t = 0; t < 120; t++) {
        int n = t < 40 ? 5000 : t < 80 ? 2048 : 9000;
        for (int i = 0; i < n; i++) {
            /* coarse values: many exact ties, broken by position */
            dots[i] = t % 3 ? (float)(int)(rb_rng_below(&r, 20)) * 0.25f : rb_rng_normal(&r);
            xn2[i] = 1.0f;
            if (t % 5 == 4 && rb_rng_below(&r, 50) == 0) dots[i] = NAN; /* sorts last */
            ref[i].key = xn2[i] - 2.0f * dots[i], ref[i].pos = i;
            if (isnan(ref[i].key)) ref[i].key = INFINITY;
        }
        /* small windows take the sampled-threshold path, large ones the plain one */
        int w = t % 2 ? 1 + (int)rb_rng_below(&r, n / 8) : 1 + (int)rb_rng_below(&r, n);
        if (t % 4 == 1) w = 1 + (int)rb_rng_below(&r, 4);
        qsort(ref, n, sizeof *ref, cmp_pair);
        char *in = calloc(n, 1);
        for (int i = 0; i < w; i++) in[ref[i].pos] = 1;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (in[i]) want[m++] = i;
        kmeans_topk(mem, dots, xn2, n, w, work);
        bad += memcmp(mem, want, w * sizeof(int)) != 0;
        kmeans_topk_portable(mem, dots, xn2, n, w, work);
        bad_portable += memcmp(mem, want, w * sizeof(int)) != 0;
        free(in);
    }
    ok(bad == 0, "top-k equals a full sort, ties by position, members ascending (%d bad)", bad);
    ok(bad_portable == 0, "the portable top-k (no AVX-512) equals it too (%d bad)", bad_portable);
    free(dots), free(xn2), free(work), free(ref), free(mem), free(want);
}

int main(void) {
    rb_set_threads(0);
    test_hand();
    test_frozen();
    test_topk();
    test_planted();
    return tap_done();
}
