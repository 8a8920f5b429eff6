/* test_rotary.c: rotary position embeddings (core/model/rotary) on their
 * own: a known rotation of a small vector worked out by hand; the relative
 * position property (shifting every position by s leaves q_t . k_u
 * unchanged, and the score changes when the offset does); the inverse undoes
 * the rotation; finite-difference gradients through the rotation (the
 * backward pass is the inverse rotation). The whole model with --pos rotary
 * is checked against finite differences in test_model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/rotary.h"
#include "util/common.h"
#include "tap.h"


/* D = 4 at position 3: pair 0 turns by 3 rad, pair 1 by 3 * 10000^(-1/2) = 0.03 rad. */
static void test_known(void) {
    rotary r;
    if (rotary_init(&r, 8, 4) != 0) {
        ok(0, "rotary_init");
        return;
    }
    float x[8 * 4] = {0};
    float *v = x + 3 * 4; /* row t = 3 of one head */
    v[0] = 1, v[1] = 0, v[2] = 0, v[3] = 2;
    rotary_apply(&r, x, 1, 8, 0, +1);
    double a0 = 3.0, a1 = 3.0 / 100.0;
    double want[4] = {cos(a0), sin(a0), -2 * sin(a1), 2 * cos(a1)};
    double e = 0;
    for (int i = 0; i < 4; i++) e = fmax(e, fabs(v[i] - want[i]));
    ok(e < 1e-6, "(1,0,0,2) at position 3, D 4: pair 0 turned by 3 rad, pair 1 by 0.03 rad (max err %.2e)", e);
    int others = 0;
    for (int i = 0; i < 32; i++) others += (i < 12 || i >= 16) && x[i] != 0;
    ok(others == 0, "other rows (zero) stay zero");
    /* position 0 is the identity */
    float y[4] = {0.3f, -1.2f, 0.7f, 2.5f}, y0[4];
    memcpy(y0, y, sizeof y);
    rotary_apply(&r, y, 1, 1, 0, +1);
    ok(!memcmp(y, y0, sizeof y), "position 0 leaves a vector as it is");
    rotary_free(&r);
}

static double dot(const float *a, const float *b, int D) {
    double s = 0;
    for (int i = 0; i < D; i++) s += (double)a[i] * b[i];
    return s;
}

/* q at t, k at u: rotate copies at (t + s, u + s) for several s. */
static void test_relative(void) {
    enum { D = 16, T = 64 };
    rotary r;
    if (rotary_init(&r, T + 40, D) != 0) {
        ok(0, "rotary_init");
        return;
    }
    rb_rng g;
    rb_rng_seed(&g, 5);
    float q[D], k[D], qs[D], ks[D];
    for (int i = 0; i < D; i++) q[i] = rb_rng_normal(&g), k[i] = rb_rng_normal(&g);
    int t = 17, u = 5;
    double worst = 0, base = 0, moved = 0;
    for (int s = 0; s <= 40; s += 5) {
        memcpy(qs, q, sizeof q), memcpy(ks, k, sizeof k);
        rotary_apply(&r, qs, 1, 1, t + s, +1);
        rotary_apply(&r, ks, 1, 1, u + s, +1);
        double d = dot(qs, ks, D);
        if (s == 0) base = d;
        worst = fmax(worst, fabs(d - base));
    }
    /* a different offset gives a different score */
    memcpy(qs, q, sizeof q), memcpy(ks, k, sizeof k);
    rotary_apply(&r, qs, 1, 1, t + 3, +1);
    rotary_apply(&r, ks, 1, 1, u, +1);
    moved = fabs(dot(qs, ks, D) - base);
    diag("q.k at offset 12: %.6f; max change over shifts 0..40: %.2e; offset 15 instead: change %.3f", base, worst,
         moved);
    ok(worst < 1e-5, "shifting both positions by s leaves q.k unchanged (max change %.2e)", worst);
    ok(moved > 1e-3, "changing the offset changes q.k (by %.3f)", moved);
    rotary_free(&r);
}

/* Inverse, and f(x) = sum w . R(x) differentiated numerically against the
 * backward pass R^T w, over rows of several positions and heads. */
static void test_grad(void) {
    enum { BH = 3, T = 7, D = 6 };
    rotary r;
    if (rotary_init(&r, T, D) != 0) {
        ok(0, "rotary_init");
        return;
    }
    size_t n = (size_t)BH * T * D;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
    rb_rng g;
    rb_rng_seed(&g, 11);
    for (size_t i = 0; i < n; i++) x[i] = rb_rng_normal(&g), w[i] = rb_rng_normal(&g);
    memcpy(y, x, n * sizeof(float));
    rotary_apply(&r, y, BH, T, 0, +1);
    rotary_apply(&r, y, BH, T, 0, -1);
    double inv = 0;
    for (size_t i = 0; i < n; i++) inv = fmax(inv, fabs(y[i] - x[i]));
    ok(inv < 1e-5, "the inverse rotation undoes the rotation (max err %.2e)", inv);
    /* analytic gradient: R^T w */
    memcpy(y, w, n * sizeof(float));
    rotary_apply(&r, y, BH, T, 0, -1);
    double worst = 0, h = 1e-2;
    for (size_t i = 0; i < n; i++) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float *z = malloc(n * sizeof(float));
            memcpy(z, x, n * sizeof(float));
            z[i] += (float)(sgn ? -h : h);
            rotary_apply(&r, z, BH, T, 0, +1);
            f[sgn] = 0;
            for (size_t j = 0; j < n; j++) f[sgn] += (double)w[j] * z[j];
            free(z);
        }
        double num = (f[0] - f[1]) / (2 * h);
        worst = fmax(worst, fabs(num - y[i]) / fmax(fabs(num), 1e-1));
    }
    ok(worst < 1e-3, "backward (the inverse rotation) matches central differences at all %zu inputs (worst rel %.2e)",
       n, worst);
    free(x), free(y), free(w);
    rotary_free(&r);
}

/* An odd head dimension leaves its last channel alone. */
static void test_odd(void) {
    rotary r;
    if (rotary_init(&r, 4, 5) != 0) {
        ok(0, "rotary_init");
        return;
    }
    float x[4 * 5];
    for (int i = 0; i < 20; i++) x[i] = (float)(i + 1);
    rotary_apply(&r, x, 1, 4, 0, +1);
    ok(x[3 * 5 + 4] == 20.0f && fabs(hypot(x[15], x[16]) - hypot(16, 17)) < 1e-4,
       "head_dim 5: pairs keep their length, the last channel is not rotated");
    rotary_free(&r);
}

int main(void) {
    test_known();
    test_relative();
    test_grad();
    test_odd();
    return tap_done();
}
