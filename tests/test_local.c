/* test_local.c: the local attention backend against an independent
 * double-precision reference (dense attention under the block mask, written
 * from the definition, with hand-derived gradients), against `dense` when one
 * block covers the sequence, by central finite differences (every entry at a
 * tiny size, and attn_check's sampled check at larger ones), plus causality,
 * locality, determinism across runs and thread counts, the FLOP count and
 * refused parameters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/bench.h"
#include "util/common.h"
#include "tap.h"
#include "util/threads.h"
#include "testutil.h"

/* Key range query i may see under the definition: its block j = i / w sees
 * the previous block [(j-1)w, jw) and its own block [jw, min(n, (j+1)w)),
 * cut at i when causal. Returns [*lo, *hi). */
static void ref_range(int *lo, int *hi, int i, int n, int w, int causal) {
    int j = i / w;
    *lo = j > 0 ? (j - 1) * w : 0;
    int bend = (j + 1) * w < n ? (j + 1) * w : n;
    *hi = causal ? i + 1 : bend;
}

/* Double-precision forward and backward of masked dense attention. Outputs
 * are double arrays of N elements each. */
static void ref_attention(double *out, double *dq, double *dk, double *dv, const tu_io *io, int w, int causal) {
    int n = io->n, d = io->d;
    double scale = 1.0 / sqrt((double)d);
    double *s = callocCheck((size_t)n, sizeof(double));
    double *dp = callocCheck((size_t)n, sizeof(double));
    memset(dq, 0, io->N * sizeof(double));
    memset(dk, 0, io->N * sizeof(double));
    memset(dv, 0, io->N * sizeof(double));
    for (int bh = 0; bh < io->B * io->H; bh++) {
        size_t off = (size_t)bh * n * d;
        const float *q = io->q + off, *k = io->k + off, *v = io->v + off, *g = io->dout + off;
        for (int i = 0; i < n; i++) {
            int lo, hi;
            ref_range(&lo, &hi, i, n, w, causal);
            double mx = -INFINITY, sum = 0.0;
            for (int j = lo; j < hi; j++) {
                double acc = 0.0;
                for (int e = 0; e < d; e++) acc += (double)q[(size_t)i * d + e] * k[(size_t)j * d + e];
                s[j] = acc * scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int j = lo; j < hi; j++) sum += (s[j] = exp(s[j] - mx));
            for (int j = lo; j < hi; j++) s[j] /= sum; /* probabilities */
            double *o = out + off + (size_t)i * d;
            for (int e = 0; e < d; e++) {
                double acc = 0.0;
                for (int j = lo; j < hi; j++) acc += s[j] * v[(size_t)j * d + e];
                o[e] = acc;
            }
            /* dP_ij = dO_i . v_j; dS_ij = P_ij (dP_ij - sum_l P_il dP_il) */
            double dot = 0.0;
            for (int j = lo; j < hi; j++) {
                double acc = 0.0;
                for (int e = 0; e < d; e++) acc += (double)g[(size_t)i * d + e] * v[(size_t)j * d + e];
                dp[j] = acc;
                dot += s[j] * acc;
            }
            for (int j = lo; j < hi; j++) {
                double ds = s[j] * (dp[j] - dot);
                for (int e = 0; e < d; e++) {
                    dq[off + (size_t)i * d + e] += scale * ds * k[(size_t)j * d + e];
                    dk[off + (size_t)j * d + e] += scale * ds * q[(size_t)i * d + e];
                    dv[off + (size_t)j * d + e] += s[j] * g[(size_t)i * d + e];
                }
            }
        }
    }
    free(s), free(dp);
}

static double max_abs_diff_d(const float *x, const double *ref, size_t n, double *refmax) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)x[i] - ref[i]));
        if (refmax) *refmax = fmax(*refmax, fabs(ref[i]));
    }
    return m;
}

static double max_abs_diff_f(const float *x, const float *y, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i] - (double)y[i]));
    return m;
}

static attn *make(attn_params *p) {
    char err[512];
    attn *a = attn_make("local", p, err, sizeof err);
    if (!a) diag("attn_make failed: %s", err);
    return a;
}

/* A local instance for p and its inputs drawn from seed into io; NULL, and
 * a failed test saying what could not be made, when p is refused. */
static attn *make_with_io(attn_params *p, tu_io *io, uint64_t seed, const char *what) {
    attn *a = make(p);
    if (!a) {
        ok(0, "%s: create", what);
        return NULL;
    }
    tu_io_make(io, p, seed);
    return a;
}

static void run(attn *a, tu_io *io) {
    a->be->forward(a, io->out, io->q, io->k, io->v, ATTN_TRAIN);
    a->be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
}

static attn_params params(int B, int H, int n, int d, int w, int causal) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.window = w, p.causal = causal;
    return p;
}

/* local against the double reference, forward and all three gradients. */
static void test_reference(int B, int H, int n, int d, int w, int causal) {
    attn_params p = params(B, H, n, d, w, causal);
    tu_io io;
    attn *a = make_with_io(&p, &io, 1000 + (uint64_t)n * 7 + (uint64_t)w + (uint64_t)causal,
                           tu_str("reference n=%d w=%d causal=%d", n, w, causal));
    if (!a) return;
    run(a, &io);
    double *ro = mallocCheck(io.N * sizeof(double)), *rq = mallocCheck(io.N * sizeof(double));
    double *rk = mallocCheck(io.N * sizeof(double)), *rv = mallocCheck(io.N * sizeof(double));
    ref_attention(ro, rq, rk, rv, &io, w, causal);
    double scale = 1.0;
    double eo = max_abs_diff_d(io.out, ro, io.N, &scale), eq = max_abs_diff_d(io.dq, rq, io.N, &scale);
    double ek = max_abs_diff_d(io.dk, rk, io.N, &scale), ev = max_abs_diff_d(io.dv, rv, io.N, &scale);
    double worst = fmax(fmax(eo, eq), fmax(ek, ev));
    diag("B=%d H=%d n=%d d=%d w=%d causal=%d: max abs diff out %.2e dq %.2e dk %.2e dv %.2e (ref max %.2f)", B, H,
         n, d, w, causal, eo, eq, ek, ev, scale);
    ok(worst <= 2e-5 * scale, "local matches the double masked-dense reference: n=%d w=%d (%s) causal=%d", n, w,
       n % w ? "last block short" : "multiple", causal);
    free(ro), free(rq), free(rk), free(rv);
    tu_io_free(&io);
    attn_free(a);
}

/* Every entry of dq, dk, dv against central differences of L = sum(out * R),
 * the objective differences summed in double. */
static void test_fd_all(int n, int d, int w, int causal) {
    attn_params p = params(1, 2, n, d, w, causal);
    tu_io io;
    attn *a = make_with_io(&p, &io, 77 + (uint64_t)causal, "fd");
    if (!a) return;
    run(a, &io);
    float *o1 = mallocCheck(io.N * sizeof(float)), *o2 = mallocCheck(io.N * sizeof(float));
    float *xs[3] = {io.q, io.k, io.v};
    const float *gs[3] = {io.dq, io.dk, io.dv};
    const char *nm = "qkv";
    double worst = 0.0;
    int wt = 0;
    size_t wi = 0;
    const float eps = 1e-2f;
    for (int t = 0; t < 3; t++) {
        for (size_t i = 0; i < io.N; i++) {
            float x0 = xs[t][i];
            xs[t][i] = x0 + eps;
            a->be->forward(a, o1, io.q, io.k, io.v, ATTN_EVAL);
            xs[t][i] = x0 - eps;
            a->be->forward(a, o2, io.q, io.k, io.v, ATTN_EVAL);
            xs[t][i] = x0;
            double num = 0.0;
            for (size_t e = 0; e < io.N; e++) num += ((double)o1[e] - (double)o2[e]) * io.dout[e];
            num /= (double)(x0 + eps) - (double)(x0 - eps);
            double err = fabs(num - gs[t][i]) / fmax(1.0, fabs(num));
            if (err > worst) worst = err, wt = t, wi = i;
        }
    }
    diag("finite differences n=%d d=%d w=%d causal=%d: worst error %.2e at d%c[%zu]", n, d, w, causal, worst, nm[wt],
         wi);
    ok(worst < 5e-3, "every gradient entry matches central differences (n=%d w=%d causal=%d)", n, w, causal);
    free(o1), free(o2);
    tu_io_free(&io);
    attn_free(a);
}

static void test_check(int B, int H, int n, int d, int w, int causal) {
    attn_params p = params(B, H, n, d, w, causal);
    attn_check_result r;
    char err[512];
    if (attn_check("local", &p, &r, err, sizeof err) != 0) {
        ok(0, "attn_check: %s", err);
        return;
    }
    diag("attn_check n=%d w=%d causal=%d: grad rel err %.2e; %s; dense max abs %.2e", n, w, causal, r.grad_rel_err,
         r.detail, r.dense_max_abs_err);
    ok(r.pass && r.compared_dense == (w >= n), "attn_check passes (B=%d H=%d n=%d d=%d w=%d causal=%d)", B, H, n, d, w,
       causal);
}

/* One block covering the sequence is dense attention: compare with `dense`. */
static void test_vs_dense(int n, int d, int w, int causal) {
    attn_params p = params(2, 3, n, d, w, causal), pd = p;
    attn *a = make(&p);
    char err[512];
    attn *dn = attn_make("dense", &pd, err, sizeof err);
    if (!a || !dn) {
        ok(0, "create local/dense: %s", err);
        attn_free(a), attn_free(dn);
        return;
    }
    ok(a->be->equals_dense(&p) == 1, "equals_dense(window %d >= seq %d) is 1", w, n);
    tu_io x, y;
    tu_io_make(&x, &p, 5);
    tu_io_make(&y, &p, 5);
    run(a, &x);
    run(dn, &y);
    double e[4] = {max_abs_diff_f(x.out, y.out, x.N), max_abs_diff_f(x.dq, y.dq, x.N),
                   max_abs_diff_f(x.dk, y.dk, x.N), max_abs_diff_f(x.dv, y.dv, x.N)};
    double m = fmax(fmax(e[0], e[1]), fmax(e[2], e[3]));
    diag("local vs dense n=%d w=%d causal=%d: max abs diff out %.2e dq %.2e dk %.2e dv %.2e", n, w, causal, e[0], e[1],
         e[2], e[3]);
    ok(m < 1e-5, "local with window >= seq equals dense (n=%d w=%d causal=%d)", n, w, causal);
    tu_io_free(&x), tu_io_free(&y);
    attn_free(a), attn_free(dn);
}

/* Perturb row `pos` of q, k or v (every batch and head) and report whether
 * any output row outside the set the definition allows changed, and whether
 * an allowed row did (so the test notices a backend that ignores inputs). */
static void test_dependence(int n, int d, int w, int causal) {
    attn_params p = params(1, 2, n, d, w, causal);
    tu_io io;
    attn *a = make_with_io(&p, &io, 9, "dependence");
    if (!a) return;
    float *base = mallocCheck(io.N * sizeof(float)), *o = mallocCheck(io.N * sizeof(float));
    a->be->forward(a, base, io.q, io.k, io.v, ATTN_EVAL);
    int leaks = 0, missing = 0, probes = 0;
    for (int t = 0; t < 3; t++)
        for (int pos = 0; pos < n; pos += 3) {
            tu_forward_perturbed(a, &io, t, pos, o);
            for (int bh = 0; bh < 2; bh++)
                for (int i = 0; i < n; i++) {
                    int lo, hi;
                    ref_range(&lo, &hi, i, n, w, causal);
                    /* a q row only moves its own output; k, v rows move the
                     * queries that see them */
                    int may = t == 0 ? i == pos : (pos >= lo && pos < hi);
                    size_t r0 = ((size_t)bh * n + i) * d;
                    int changed = memcmp(base + r0, o + r0, (size_t)d * sizeof(float)) != 0;
                    if (changed && !may) leaks++;
                    /* a row that sees one key has output v of that key,
                     * whatever q and k are */
                    if (!changed && may && !(t != 2 && hi - lo == 1)) missing++;
                    probes++;
                }
        }
    diag("dependence n=%d w=%d causal=%d: %d output rows probed, %d changed though they must not, %d allowed "
         "rows unchanged",
         n, w, causal, probes, leaks, missing);
    ok(leaks == 0, "%s: perturbing a position never changes an output that may not see it (n=%d w=%d)",
       causal ? "causal" : "non-causal", n, w);
    ok(missing == 0, "every output that sees a perturbed position changes (n=%d w=%d causal=%d)", n, w, causal);
    free(base), free(o);
    tu_io_free(&io);
    attn_free(a);
}

/* Same inputs: bit-identical results across runs, instances and thread counts. */
static void test_determinism(void) {
    attn_params p = params(2, 2, 1000, 32, 128, 1);
    tu_io x, y;
    tu_io_make(&x, &p, 11);
    tu_io_make(&y, &p, 11);
    int threads = rb_threads();
    rb_set_threads(2);
    attn *a = make(&p);
    run(a, &x);
    run(a, &y); /* second run of the same instance */
    int same = !memcmp(x.out, y.out, x.N * 4) && !memcmp(x.dq, y.dq, x.N * 4) && !memcmp(x.dk, y.dk, x.N * 4) &&
               !memcmp(x.dv, y.dv, x.N * 4);
    ok(same, "two runs of one instance are bit-identical");
    attn_free(a);
    rb_set_threads(1);
    a = make(&p);
    memset(y.out, 0, y.N * 4), memset(y.dq, 0, y.N * 4), memset(y.dk, 0, y.N * 4), memset(y.dv, 0, y.N * 4);
    run(a, &y);
    same = !memcmp(x.out, y.out, x.N * 4) && !memcmp(x.dq, y.dq, x.N * 4) && !memcmp(x.dk, y.dk, x.N * 4) &&
           !memcmp(x.dv, y.dv, x.N * 4);
    diag("1 thread vs 2 threads: max abs diff dk %.2e", max_abs_diff_f(x.dk, y.dk, x.N));
    ok(same, "1 thread and 2 threads give bit-identical results");
    attn_free(a);
    rb_set_threads(threads);
    tu_io_free(&x), tu_io_free(&y);
}

/* Pair count from the definition, against the backend's FLOP figures. */
static void test_flops(void) {
    int cases[][3] = {{1000, 256, 1}, {1000, 256, 0}, {37, 8, 1}, {64, 64, 0}, {100, 1, 1}};
    int bad = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        attn_params p = params(2, 3, cases[c][0], 16, cases[c][1], cases[c][2]);
        const attn_backend *be = attn_find("local");
        char err[256];
        if (attn_validate_msg(be, &p, err, sizeof err) != 0) {
            bad++;
            continue;
        }
        double pairs = 0.0;
        for (int i = 0; i < p.seq; i++) {
            int lo, hi;
            ref_range(&lo, &hi, i, p.seq, p.window, p.causal);
            pairs += hi - lo;
        }
        pairs *= p.batch * p.heads;
        double f = be->flops(&p, ATTN_PASS_FWD), b = be->flops(&p, ATTN_PASS_BWD);
        if (f != pairs * 4 * p.head_dim || b != pairs * 8 * p.head_dim) {
            diag("n=%d w=%d causal=%d: flops fwd %.0f bwd %.0f, pairs %.0f", p.seq, p.window, p.causal, f, b, pairs);
            bad++;
        }
    }
    ok(bad == 0, "FLOPs are 4d (forward) and 8d (backward) per attended pair of the definition");
    attn_params p = params(2, 3, 1000, 16, 256, 1);
    attn *a = make(&p);
    ok(a && a->bytes == a->be->act_bytes(&p), "act_bytes (%zu) equals the bytes an instance holds (%zu)",
       a->be->act_bytes(&p), a ? a->bytes : 0);
    attn_free(a);
}

static void test_params(void) {
    const attn_backend *be = attn_find("local");
    ok(be != NULL && strcmp(be->name, "local") == 0, "local is registered");
    if (!be) return;
    ok((be->uses & ATTN_USES_WINDOW) && !(be->uses & ATTN_USES_CLUSTERS), "local declares it uses window only");
    char err[256] = "";
    attn_params p = params(1, 1, 1000, 16, 0, 1);
    int rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && p.window == 256, "default window is 256 (got %d)", p.window);
    p = params(1, 1, 100, 16, 0, 1);
    rc = attn_validate_msg(be, &p, err, sizeof err);
    ok(rc == 0 && p.window == 100, "default window is seq when seq < 256 (got %d)", p.window);
    ok(be->equals_dense(&p) == 1, "default window at seq 100 equals dense");
    p = params(1, 1, 1000, 16, 0, 1);
    attn_validate_msg(be, &p, err, sizeof err);
    ok(be->equals_dense(&p) == 0, "window 256 at seq 1000 does not equal dense");
    p = params(1, 1, 100, 16, -3, 1);
    err[0] = 0;
    ok(attn_validate_msg(be, &p, err, sizeof err) != 0 && strstr(err, "window") != NULL, "negative window refused: %s", err);
    p = params(1, 1, 100, 16, -3, 1);
    attn *a = attn_make("local", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "window") != NULL, "attn_make refuses a negative window: %s", err);
    p = params(1, 1, 0, 16, 8, 1);
    a = attn_make("local", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "seq") != NULL, "attn_make refuses seq 0: %s", err);
    const char *desc = be->description;
    ok(desc && strstr(desc, "shorter last block"), "the description says the last block may be shorter");
}

int main(void) {
    test_params();
    /* reference: seq a multiple of the window and not, one chunk per block
     * and several (window > 64 rows), window 1, one block */
    for (int causal = 0; causal <= 1; causal++) {
        test_reference(2, 2, 64, 16, 16, causal);
        test_reference(2, 2, 70, 16, 16, causal);
        test_reference(1, 3, 37, 8, 8, causal);
        test_reference(1, 2, 300, 32, 128, causal);
        test_reference(1, 2, 333, 32, 100, causal);
        test_reference(1, 1, 20, 8, 1, causal);
        test_reference(1, 1, 50, 8, 49, causal);
        test_reference(1, 2, 40, 8, 40, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_fd_all(10, 4, 4, causal);
        test_fd_all(9, 3, 3, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_check(1, 2, 64, 16, 16, causal);
        test_check(2, 2, 100, 16, 32, causal);
        test_check(1, 1, 130, 64, 64, causal);
        test_check(1, 2, 48, 16, 48, causal); /* one block: compared with dense too */
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_vs_dense(100, 32, 100, causal);
        test_vs_dense(300, 16, 512, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_dependence(50, 8, 8, causal);
        test_dependence(150, 8, 70, causal);
    }
    test_determinism();
    test_flops();
    return tap_done();
}
