/* test_long.c: a long sequence, at a size CI can afford. For each backend
 * whose forward at seq 2^17 is cheap enough (the sparse ones), the forward
 * of a batch of two sequences must equal the forward of each sequence on
 * its own, computed by a second instance (batch 1) given the first one's
 * centroids: every sequence of a batch is independent, so nothing may
 * depend on one huge buffer being laid out or indexed right by accident
 * (offsets past 2^31 bytes, a (b,h) slice read from its neighbour, ...).
 * Evaluation passes, so the centroids stay where they are. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "tap.h"
#include "util/common.h"
#include "util/threads.h"

enum { LONG_SEQ = 1 << 17 };

/* out-of-place max |a - b| over n floats; NaN counts as infinite */
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d == d ? d : INFINITY;
    }
    return m;
}

static void fill(float *x, size_t n, uint64_t seed) {
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)rb_rng_normal(&r);
}

static void check_backend(const attn_backend *be) {
    attn_params p2, p1;
    attn_params_default(&p2);
    p2.batch = 2, p2.heads = 1, p2.head_dim = 32, p2.seq = LONG_SEQ, p2.seed = 7;
    char err[512];
    if (attn_validate_msg(be, &p2, err, sizeof err) != 0) {
        skip("%s: %s", be->name, err);
        return;
    }
    if (be->flops(&p2, ATTN_PASS_FWD) > 60e9) {
        skip("%s: a forward at seq %d is %.0f GFLOP, too much for a smoke test", be->name, LONG_SEQ,
             be->flops(&p2, ATTN_PASS_FWD) / 1e9);
        return;
    }
    p1 = p2;
    p1.batch = 1;
    attn *a2 = be->create(&p2, err, sizeof err), *a1 = a2 ? be->create(&p1, err, sizeof err) : NULL;
    if (!ok(a2 && a1, "%s: instances for seq %d (%s)", be->name, LONG_SEQ, a1 ? "ok" : err)) return;
    size_t half = (size_t)p1.heads * p1.seq * p1.head_dim, N = 2 * half;
    float *q = mallocCheck(N * 4), *k = mallocCheck(N * 4), *v = mallocCheck(N * 4);
    float *o2 = mallocCheck(N * 4), *o1 = mallocCheck(N * 4);
    fill(q, N, 1), fill(k, N, 2), fill(v, N, 3);
    be->forward(a2, o2, q, k, v, ATTN_EVAL);
    if (be->centroids) {
        size_t nc = (size_t)p2.heads * p2.clusters * p2.head_dim;
        memcpy(be->centroids(a1), be->centroids(a2), nc * sizeof(float));
    }
    for (int b = 0; b < 2; b++)
        be->forward(a1, o1 + b * half, q + b * half, k + b * half, v + b * half, ATTN_EVAL);
    double d0 = max_diff(o2, o1, half), d1 = max_diff(o2 + half, o1 + half, half), scale = 0.0;
    for (size_t i = 0; i < N; i++) scale = fmax(scale, fabs(o2[i]));
    ok(d0 <= 1e-5 * scale && d1 <= 1e-5 * scale && scale > 0.0,
       "%s seq %d: batch of two = each sequence alone (max diff %.3g and %.3g, outputs up to %.3g)", be->name,
       LONG_SEQ, d0, d1, scale);
    free(q), free(k), free(v), free(o2), free(o1);
    be->destroy(a2), be->destroy(a1);
}

int main(void) {
    rb_set_threads(0);
    for (int i = 0; i < attn_count(); i++) check_backend(attn_get(i));
    return tap_done();
}
