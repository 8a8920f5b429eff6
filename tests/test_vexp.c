/* test_vexp.c: the vectorised exponential of vexp.h against exp() in double.
 * Errors are counted in units in the last place (ulp) of the float nearest
 * the true value; both the scalar rb_expf and the eight-lane path (through
 * rb_vexp, which uses it for every whole block of 8) are swept across the
 * float range, special values are checked exactly, and the array helpers
 * rb_vexp_shift_sum and rb_vmax against plain double loops. The speed ratio
 * to libm's expf is printed for the record, not asserted (it depends on the
 * machine and its load). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "tap.h"
#include "util/vexp.h"

/* error of y in ulps of the float grid at the true value ref (> 0, normal) */
static double ulps(float y, double ref) {
    int e;
    frexp(ref, &e);                 /* ref = f * 2^e, f in [0.5, 1) */
    double ulp = ldexp(1.0, e - 24); /* float has 24 significant bits */
    return fabs((double)y - ref) / ulp;
}

/* worst ulp error of rb_expf and of rb_vexp over xs; counts scalar/vector disagreements */
static void sweep(const float *xs, float *ys, int n, double *worst_s, double *worst_v, float *at_s, float *at_v,
                  int *differ) {
    rb_vexp(ys, xs, n);
    for (int i = 0; i < n; i++) {
        double ref = exp((double)xs[i]);
        float s = rb_expf(xs[i]);
        double es = ulps(s, ref), ev = ulps(ys[i], ref);
        if (!(es <= *worst_s)) *worst_s = es, *at_s = xs[i];
        if (!(ev <= *worst_v)) *worst_v = ev, *at_v = xs[i];
        if (s != ys[i]) (*differ)++;
    }
}

static void test_accuracy(void) {
    /* every 1e-3 across [-87, 88], then random values across the same range */
    int ngrid = 175001, nrand = 1000000;
    float *xs = mallocCheck(sizeof(float) * nrand), *ys = mallocCheck(sizeof(float) * nrand);
    for (int i = 0; i < ngrid; i++) xs[i] = (float)(-87.0 + 1e-3 * i);
    double ws = 0, wv = 0;
    float as = 0, av = 0;
    int differ = 0;
    sweep(xs, ys, ngrid, &ws, &wv, &as, &av, &differ);
    rb_rng r;
    rb_rng_seed(&r, 7);
    for (int i = 0; i < nrand; i++) xs[i] = -87.0f + 175.0f * rb_rng_uniform(&r);
    sweep(xs, ys, nrand, &ws, &wv, &as, &av, &differ);
    /* and the region softmax lives in: [-20, 0] densely */
    for (int i = 0; i < nrand; i++) xs[i] = -20.0f * rb_rng_uniform(&r);
    sweep(xs, ys, nrand, &ws, &wv, &as, &av, &differ);
    diag("rb_expf: worst %.3f ulp (at x = %.6g); vector path: worst %.3f ulp (at x = %.6g)", ws, as, wv, av);
    diag("scalar and vector results differ on %d of %d inputs", differ, ngrid + 2 * nrand);
    ok(ws <= 4.0, "rb_expf within 4 ulp of exp over [-87, 88] (worst %.3f)", ws);
    ok(wv <= 4.0, "vector exp within 4 ulp of exp over [-87, 88] (worst %.3f)", wv);
    /* vexp.h promises that a loop's vector body and scalar tail agree */
    ok(differ == 0, "scalar and vector paths give the same bits");
#ifndef __AVX2__
    skip("no AVX2: rb_vexp is the scalar loop");
#endif
    free(xs), free(ys);
}

/* both paths on a handful of special inputs: put each in lane 3 of a block of
 * 8 (vector path) and also call the scalar function */
static void both(float x, float *s, float *v) {
    float in[8] = {0, 0, 0, x, 0, 0, 0, 0}, out[8];
    rb_vexp(out, in, 8);
    *s = rb_expf(x);
    *v = out[3];
}

static void test_special(void) {
    float s, v;
    both(-INFINITY, &s, &v);
    ok(s == 0.0f && v == 0.0f && !signbit(s) && !signbit(v), "exp(-inf) = +0 exactly (scalar %g, vector %g)", s, v);
    both(-100.0f, &s, &v);
    ok(s == 0.0f && v == 0.0f, "exp(-100) = 0 (below the normal range) (scalar %g, vector %g)", s, v);
    both(-1e30f, &s, &v);
    ok(s == 0.0f && v == 0.0f, "exp(-1e30) = 0");
    both(89.0f, &s, &v);
    ok(isinf(s) && s > 0 && isinf(v) && v > 0, "exp(89) = +inf (scalar %g, vector %g)", s, v);
    both(INFINITY, &s, &v);
    ok(isinf(s) && s > 0 && isinf(v) && v > 0, "exp(+inf) = +inf");
    both(NAN, &s, &v);
    ok(isnan(s) && isnan(v), "exp(NaN) is NaN (scalar %g, vector %g)", s, v);
    both(0.0f, &s, &v);
    ok(s == 1.0f && v == 1.0f, "exp(0) = 1 exactly (scalar %.9g, vector %.9g)", s, v);
    both(-0.0f, &s, &v);
    ok(s == 1.0f && v == 1.0f, "exp(-0) = 1 exactly");
    both(1e-30f, &s, &v);
    ok(s == 1.0f && v == 1.0f, "exp(1e-30) = 1");
    /* the ends of the documented range are finite and accurate */
    both(RB_EXP_HI, &s, &v);
    double rh = exp((double)RB_EXP_HI);
    ok(isfinite(s) && isfinite(v) && ulps(s, rh) <= 4 && ulps(v, rh) <= 4,
       "exp(%.7g) finite, %.2f / %.2f ulp (near FLT_MAX)", RB_EXP_HI, ulps(s, rh), ulps(v, rh));
    both(RB_EXP_LO, &s, &v);
    double rl = exp((double)RB_EXP_LO);
    ok(s >= FLT_MIN && v >= FLT_MIN && ulps(s, rl) <= 4 && ulps(v, rl) <= 4,
       "exp(%.7g) normal, %.2f / %.2f ulp (near FLT_MIN)", RB_EXP_LO, ulps(s, rl), ulps(v, rl));
    /* every lane of a vector of specials, and the scalar tail (n = 11) */
    float in[11] = {-INFINITY, 0.0f, NAN, 200.0f, -200.0f, 1.0f, -1.0f, 0.5f, -INFINITY, NAN, 0.0f}, out[11];
    rb_vexp(out, in, 11);
    ok(out[0] == 0 && out[1] == 1 && isnan(out[2]) && isinf(out[3]) && out[4] == 0 && ulps(out[5], M_E) <= 4 &&
           ulps(out[6], 1 / M_E) <= 4 && out[8] == 0 && isnan(out[9]) && out[10] == 1,
       "mixed specials in every lane and in the tail");
}

static void test_shift_sum(void) {
    rb_rng r;
    rb_rng_seed(&r, 11);
    /* lengths around the vector width, values in softmax's range */
    double worst = 0, worst_y = 0;
    float x[200], y[200];
    for (int n = 0; n <= 200; n += (n < 20 ? 1 : 37)) {
        for (int i = 0; i < n; i++) x[i] = 8.0f * rb_rng_normal(&r);
        float m = rb_vmax(x, n);
        double s = rb_vexp_shift_sum(y, x, m, n), ref = 0;
        for (int i = 0; i < n; i++) {
            double e = exp((double)(x[i] - m)); /* the difference is taken in float */
            ref += e;
            if (e > FLT_MIN) worst_y = fmax(worst_y, ulps(y[i], e));
        }
        double err = n ? fabs(s - ref) / ref : fabs(s);
        worst = fmax(worst, err);
    }
    diag("rb_vexp_shift_sum, n = 0..200: worst rel err of the sum %.2e, of the values %.2f ulp", worst, worst_y);
    ok(worst < 1e-6 && worst_y <= 4, "rb_vexp_shift_sum matches a double reference (n = 0..200)");

    /* y may alias x */
    for (int i = 0; i < 37; i++) x[i] = rb_rng_normal(&r), y[i] = x[i];
    double s1 = rb_vexp_shift_sum(y, y, 0.5f, 37);
    double s2 = rb_vexp_shift_sum(x, x, 0.5f, 37);
    ok(s1 == s2 && memcmp(x, y, sizeof(float) * 37) == 0, "rb_vexp_shift_sum in place");

    /* a long row: the total must be the sum of the returned values to double
     * precision (lane sums kept in float would drift by ~1e-5 here) */
    int big = 1 << 20;
    float *bx = mallocCheck(sizeof(float) * big), *by = mallocCheck(sizeof(float) * big);
    for (int i = 0; i < big; i++) bx[i] = -rb_rng_uniform(&r); /* m = 0: x - m exact */
    double sb = rb_vexp_shift_sum(by, bx, 0.0f, big), own = 0, ref = 0;
    for (int i = 0; i < big; i++) own += by[i], ref += exp((double)bx[i]);
    diag("rb_vexp_shift_sum n = %d: rel err vs sum of its values %.2e, vs exp in double %.2e", big,
         fabs(sb - own) / own, fabs(sb - ref) / ref);
    ok(fabs(sb - own) / own < 1e-12, "long row: the sum is accumulated in double");
    ok(fabs(sb - ref) / ref < 1e-6, "long row: the sum matches exp in double");
    free(bx), free(by);
}

static void test_vmax(void) {
    float x[20];
    int good = rb_vmax(x, 0) == -INFINITY;
    for (int n = 1; n <= 20; n++)
        for (int at = 0; at < n; at++) {
            for (int i = 0; i < n; i++) x[i] = -(float)(i + 1) * 0.5f - 3.0f; /* all negative */
            x[at] = -1.0f;
            good &= rb_vmax(x, n) == -1.0f;
            for (int i = 0; i < n; i++) x[i] = -INFINITY;
            x[at] = -1e30f;
            good &= rb_vmax(x, n) == -1e30f;
        }
    for (int i = 0; i < 20; i++) x[i] = -INFINITY;
    good &= rb_vmax(x, 20) == -INFINITY && rb_vmax(x, 5) == -INFINITY;
    ok(good, "rb_vmax on lengths 0..20, the maximum in every position, all -inf rows");
}

/* The limits: the floats nearest RB_EXP_LO and RB_EXP_HI on both sides, in
 * every lane of a vector and in the scalar tail, give what vexp.h promises
 * (>= LO: normal and accurate; below: exactly 0; <= HI: finite and accurate;
 * above: +inf), the same bits on both paths, and exp stays monotone across
 * each limit. Then what softmax relies on at any range: after subtracting the
 * row maximum every value is in [0, 1], the maximum gives exactly 1, so the
 * sum is at least 1 and its log finite, also when the row spans +-1000 or
 * lies entirely near -1000 or +1000. */
static void test_limits(void) {
    const float lims[2] = {RB_EXP_LO, RB_EXP_HI};
    int good = 1, same = 1, mono = 1;
    for (int side = 0; side < 2; side++) {
        float xs[9], x = lims[side];
        for (int k = 0; k < 4; k++) x = nextafterf(x, -INFINITY);
        for (int k = 0; k < 9; k++, x = nextafterf(x, INFINITY)) xs[k] = x;
        for (int k = 0; k < 9; k++) {
            double ref = exp((double)xs[k]);
            float s = rb_expf(xs[k]);
            int want = side == 0 ? (xs[k] >= RB_EXP_LO ? s >= FLT_MIN && ulps(s, ref) <= 4 : s == 0.0f && !signbit(s))
                                 : (xs[k] <= RB_EXP_HI ? isfinite(s) && ulps(s, ref) <= 4 : isinf(s) && s > 0);
            if (!want) diag("rb_expf(%.9g) = %.9g (exp %.9g)", xs[k], s, ref);
            good &= want;
            /* every lane of a vector of 8 and the scalar tail of 11 */
            for (int lane = 0; lane < 11; lane++) {
                float in[11], out[11];
                for (int i = 0; i < 11; i++) in[i] = -1.0f;
                in[lane] = xs[k];
                rb_vexp(out, in, 11);
                same &= memcmp(&out[lane], &s, sizeof s) == 0;
            }
        }
        /* monotone over +-0.5 around the limit, every 2^-12 */
        float prev = -1.0f, in[4096], out[4096];
        for (int i = 0; i < 4096; i++) in[i] = lims[side] - 0.5f + (float)i / 4096.0f;
        rb_vexp(out, in, 4096);
        for (int i = 0; i < 4096; i++) {
            mono &= out[i] >= prev && out[i] == rb_expf(in[i]);
            prev = out[i];
        }
    }
    ok(good, "exp at the 4 floats either side of each limit: normal and within 4 ulp from RB_EXP_LO up, 0 below; "
             "finite and within 4 ulp up to RB_EXP_HI, +inf above");
    ok(same, "at the limits, every vector lane and the scalar tail give the same bits");
    ok(mono, "exp is monotone (and vector = scalar) across +-0.5 of each limit");

    rb_rng r;
    rb_rng_seed(&r, 5);
    int rows_ok = 1;
    for (int kind = 0; kind < 3; kind++)
        for (int n = 1; n <= 41; n += 4) {
            float x[41], y[41];
            for (int i = 0; i < n; i++)
                x[i] = kind == 0 ? -1000.0f + 2000.0f * rb_rng_uniform(&r)
                                 : (kind == 1 ? -1000.0f : 1000.0f) + 3.0f * rb_rng_normal(&r);
            int at = (int)rb_rng_below(&r, (uint32_t)n);
            x[at] = rb_vmax(x, n) + 0.25f; /* a known position for the maximum */
            double sum = rb_vexp_shift_sum(y, x, rb_vmax(x, n), n);
            int in01 = 1;
            for (int i = 0; i < n; i++) in01 &= y[i] >= 0.0f && y[i] <= 1.0f;
            rows_ok &= in01 && y[at] == 1.0f && sum >= 1.0 && isfinite(log(sum));
        }
    ok(rows_ok, "shifted by the row maximum (rows over +-1000, all near -1000, all near +1000): values in [0, 1], "
                "exactly 1 at the maximum, a sum >= 1");
}

/* median time of rb_vexp and of a libm expf loop over x (n values), each
 * pass repeated reps times */
static void time_both(double *tv, double *tl, float *y, const float *x, int n, int reps) {
    enum { RUNS = 5 };
    double v[RUNS], l[RUNS];
    volatile float sink = 0;
    for (int k = 0; k < RUNS; k++) {
        double t0 = rb_now();
        for (int r = 0; r < reps; r++) rb_vexp(y, x, n);
        double t1 = rb_now();
        sink += y[k];
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < n; i++) y[i] = expf(x[i]);
        double t2 = rb_now();
        sink += y[k];
        v[k] = t1 - t0, l[k] = t2 - t1;
    }
    (void)sink;
    *tv = rb_median(v, RUNS) / ((double)n * reps);
    *tl = rb_median(l, RUNS) / ((double)n * reps);
}

static void test_speed(void) {
    int n = 1 << 20;
    float *x = mallocCheck(sizeof(float) * n), *y = mallocCheck(sizeof(float) * n);
    rb_rng r;
    rb_rng_seed(&r, 3);
    for (int i = 0; i < n; i++) x[i] = -20.0f * rb_rng_uniform(&r);
    double tv, tl;
    time_both(&tv, &tl, y, x, n, 1);
    diag("speed, 1M values (median of 5): rb_vexp %.2f ns/value, libm expf %.2f ns/value, ratio %.1fx", 1e9 * tv,
         1e9 * tl, tl / tv);
    /* the same in L1 cache: the 1M case also measures memory traffic */
    time_both(&tv, &tl, y, x, 4096, 256);
    diag("speed, 4096 values in cache x 256: rb_vexp %.2f ns/value, libm expf %.2f ns/value, ratio %.1fx", 1e9 * tv,
         1e9 * tl, tl / tv);
    free(x), free(y);
}

int main(void) {
    test_accuracy();
    test_special();
    test_limits();
    test_shift_sum();
    test_vmax();
    test_speed();
    return tap_done();
}
