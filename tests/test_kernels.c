/* test_kernels.c: the layer kernels of kernels.h against independent
 * references. Every backward is checked by central finite differences of a
 * scalar loss = sum(out * R) for a fixed random R (so dout = R); forwards are
 * checked against double-precision references written here; AdamW against the
 * update worked out by hand; gradient accumulation (+=), clipping, and
 * thread-count independence of the row reductions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/kernels.h"
#include "tap.h"
#include "util/threads.h"

/* ------------------------------------------------------------- helpers */

static rb_rng g_rng;

static float *randn(size_t n, float scale) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = scale * rb_rng_normal(&g_rng);
    return x;
}

static float *zeros(size_t n) { return callocCheck(n, sizeof(float)); }

static double dot_fd(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* relative error with a floor, so gradients near zero are judged absolutely */
static double rel_err(double a, double n) {
    double d = fabs(a - n), s = fmax(fmax(fabs(a), fabs(n)), 1e-2);
    return d / s;
}

static double max_rel_err(const float *a, const double *ref, size_t n, double floor) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]) / fmax(fabs(ref[i]), floor);
        if (!(d <= w))
            w = d; /* NaN counts as worst */
    }
    return w;
}

/* |a - ref| measured against the sum of the magnitudes of ref's terms */
static double max_err_scaled(const float *a, const double *ref, const double *refabs, size_t n) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]) / fmax(refabs[i], 1e-30);
        if (!(d <= w))
            w = d;
    }
    return w;
}

/* Central differences of loss() with respect to every entry of x, compared
 * with the analytic gradient g. The forward runs in float, so the step is
 * taken as the difference of the two perturbed floats actually used (not
 * 2*eps): that removes the rounding of x +- eps from the quotient.
 *
 * Step and tolerance: float outputs carry a relative rounding error of about
 * 6e-8, so a loss of size ~10 is known to ~1e-6 and the quotient to
 * ~1e-6 / (2 * 1e-2) = 5e-5; the truncation error of the central difference
 * is eps^2/6 * f''' ~ 2e-5 for these O(1) smooth functions. With the floor
 * of 1e-2 in rel_err, a correct gradient stays below ~5e-3, while a wrong one
 * (missing term, wrong sign, factor 2, wrong index) is off by O(1): the
 * threshold of 1e-2 separates the two. */
#define FD_EPS 1e-2f
#define FD_TOL 1e-2

typedef double (*loss_fn)(void *ctx);

static double fd_worst(loss_fn loss, void *ctx, float *x, const float *g, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        float old = x[i];
        float xp = old + FD_EPS, xm = old - FD_EPS;
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = old;
        double num = (lp - lm) / ((double)xp - (double)xm);
        double e = rel_err(g[i], num);
        if (!(e <= worst))
            worst = e;
    }
    return worst;
}

/* a + a == 2a, judged to float rounding */
static double accum_err(const float *once, const float *twice, size_t n) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(twice[i] - 2.0 * once[i]) / fmax(fabs(2.0 * once[i]), 1e-6);
        if (!(e <= w))
            w = e;
    }
    return w;
}

#define N_ 5
#define C_ 7
#define OC_ 3
#define V_ 11

/* -------------------------------------------------------------- matmul */

typedef struct {
    float *out, *inp, *w, *b, *R;
    int N, C, OC;
} mm_ctx;

static double mm_loss(void *p) {
    mm_ctx *c = p;
    matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC);
    return dot_fd(c->out, c->R, (size_t)c->N * c->OC);
}

static void test_matmul_grad(void) {
    mm_ctx c = {zeros(N_ * OC_), randn(N_ * C_, 1), randn(OC_ * C_, 1), randn(OC_, 1), randn(N_ * OC_, 1), N_, C_, OC_};
    float *di = zeros(N_ * C_), *dw = zeros(OC_ * C_), *db = zeros(OC_);
    matmul_backward(di, dw, db, c.R, c.inp, c.w, N_, C_, OC_);
    double ei = fd_worst(mm_loss, &c, c.inp, di, N_ * C_);
    double ew = fd_worst(mm_loss, &c, c.w, dw, OC_ * C_);
    double eb = fd_worst(mm_loss, &c, c.b, db, OC_);
    diag("matmul grad: worst rel err dinp %.2e dweight %.2e dbias %.2e", ei, ew, eb);
    ok(ei < FD_TOL && ew < FD_TOL && eb < FD_TOL, "matmul_backward matches finite differences");

    float *di2 = zeros(N_ * C_), *dw2 = zeros(OC_ * C_), *db2 = zeros(OC_);
    matmul_backward(di2, dw2, db2, c.R, c.inp, c.w, N_, C_, OC_);
    matmul_backward(di2, dw2, db2, c.R, c.inp, c.w, N_, C_, OC_);
    double ea = fmax(accum_err(di, di2, N_ * C_), fmax(accum_err(dw, dw2, OC_ * C_), accum_err(db, db2, OC_)));
    ok(ea < 1e-6, "matmul_backward accumulates (twice = 2x, worst %.1e)", ea);

    /* NULL gradients are skipped; the others are unchanged */
    float *dw3 = zeros(OC_ * C_);
    matmul_backward(NULL, dw3, NULL, c.R, c.inp, c.w, N_, C_, OC_);
    ok(accum_err(dw, dw3, 0) == 0 && memcmp(dw, dw3, sizeof(float) * OC_ * C_) == 0,
       "matmul_backward with NULL dinp/dbias gives the same dweight");
    free(c.out), free(c.inp), free(c.w), free(c.b), free(c.R);
    free(di), free(dw), free(db), free(di2), free(dw2), free(db2), free(dw3);
}

/* ----------------------------------------------------------- layernorm */

typedef struct {
    float *out, *mean, *rstd, *inp, *w, *b, *R;
    int N, C;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
    return dot_fd(c->out, c->R, (size_t)c->N * c->C);
}

static void test_layernorm_grad(int affine) {
    ln_ctx c = {zeros(N_ * C_), zeros(N_), zeros(N_), randn(N_ * C_, 1), NULL, NULL, randn(N_ * C_, 1), N_, C_};
    if (affine)
        c.w = randn(C_, 1), c.b = randn(C_, 1);
    float *di = zeros(N_ * C_), *dw = zeros(C_), *db = zeros(C_);
    ln_loss(&c); /* mean, rstd for backward */
    layernorm_backward(di, affine ? dw : NULL, affine ? db : NULL, c.R, c.inp, c.w, c.mean, c.rstd, N_, C_);
    double ei = fd_worst(ln_loss, &c, c.inp, di, N_ * C_);
    double ew = affine ? fd_worst(ln_loss, &c, c.w, dw, C_) : 0.0;
    double eb = affine ? fd_worst(ln_loss, &c, c.b, db, C_) : 0.0;
    const char *what = affine ? "with gain/bias" : "without gain/bias";
    diag("layernorm %s grad: worst rel err dinp %.2e dweight %.2e dbias %.2e", what, ei, ew, eb);
    ok(ei < FD_TOL && ew < FD_TOL && eb < FD_TOL, "layernorm_backward %s matches finite differences", what);

    ln_loss(&c);
    float *di2 = zeros(N_ * C_), *dw2 = zeros(C_), *db2 = zeros(C_);
    for (int k = 0; k < 2; k++)
        layernorm_backward(di2, affine ? dw2 : NULL, affine ? db2 : NULL, c.R, c.inp, c.w, c.mean, c.rstd, N_, C_);
    double ea = fmax(accum_err(di, di2, N_ * C_), fmax(accum_err(dw, dw2, C_), accum_err(db, db2, C_)));
    ok(ea < 1e-6, "layernorm_backward %s accumulates (worst %.1e)", what, ea);
    free(c.out), free(c.mean), free(c.rstd), free(c.inp), free(c.w), free(c.b), free(c.R);
    free(di), free(dw), free(db), free(di2), free(dw2), free(db2);
}

/* ---------------------------------------------------------------- gelu */

typedef struct {
    float *out, *inp, *R;
    size_t n;
} ew_ctx;

static double gelu_loss(void *p) {
    ew_ctx *c = p;
    gelu_forward(c->out, c->inp, c->n);
    return dot_fd(c->out, c->R, c->n);
}

static void test_gelu(void) {
    size_t n = 41;
    ew_ctx c = {zeros(n), randn(n, 2), randn(n, 1), n};
    c.inp[0] = 0.0f, c.inp[1] = -5.0f, c.inp[2] = 5.0f;
    float *d = zeros(n), *d2 = zeros(n);
    gelu_backward(d, c.inp, c.R, n);
    double e = fd_worst(gelu_loss, &c, c.inp, d, n);
    diag("gelu grad: worst rel err %.2e", e);
    ok(e < FD_TOL, "gelu_backward matches finite differences");
    gelu_backward(d2, c.inp, c.R, n);
    gelu_backward(d2, c.inp, c.R, n);
    ok(accum_err(d, d2, n) < 1e-6, "gelu_backward accumulates");

    /* forward against the tanh formula in double */
    gelu_forward(c.out, c.inp, n);
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double x = c.inp[i];
        double ref = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        w = fmax(w, fabs(c.out[i] - ref) / fmax(fabs(ref), 1e-3));
    }
    diag("gelu forward: worst rel err %.2e vs double tanh formula", w);
    ok(w < 1e-5, "gelu_forward matches the tanh approximation");
    free(c.out), free(c.inp), free(c.R), free(d), free(d2);
}

/* ------------------------------------------------------------- softmax */

typedef struct {
    float *out, *inp, *R;
    int N, C;
} sm_ctx;

static double sm_loss(void *p) {
    sm_ctx *c = p;
    softmax_forward(c->out, c->inp, c->N, c->C);
    return dot_fd(c->out, c->R, (size_t)c->N * c->C);
}

static void test_softmax_grad(void) {
    sm_ctx c = {zeros(N_ * C_), randn(N_ * C_, 2), randn(N_ * C_, 1), N_, C_};
    softmax_forward(c.out, c.inp, N_, C_);
    float *d = zeros(N_ * C_), *d2 = zeros(N_ * C_);
    softmax_backward(d, c.R, c.out, N_, C_);
    double e = fd_worst(sm_loss, &c, c.inp, d, N_ * C_);
    diag("softmax grad: worst rel err %.2e", e);
    ok(e < FD_TOL, "softmax_backward matches finite differences");
    softmax_forward(c.out, c.inp, N_, C_);
    softmax_backward(d2, c.R, c.out, N_, C_);
    softmax_backward(d2, c.R, c.out, N_, C_);
    ok(accum_err(d, d2, N_ * C_) < 1e-6, "softmax_backward accumulates");
    free(c.out), free(c.inp), free(c.R), free(d), free(d2);
}

/* ----------------------------------------------------------- embedding */

typedef struct {
    float *out, *wte, *R;
    int *tok;
    int N, C;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    embedding_forward(c->out, c->tok, c->wte, c->N, c->C);
    return dot_fd(c->out, c->R, (size_t)c->N * c->C);
}

static void test_embedding_grad(void) {
    int tok[N_] = {3, 0, 3, 10, 3}; /* token 3 three times: gradients must add */
    emb_ctx c = {zeros(N_ * C_), randn(V_ * C_, 1), randn(N_ * C_, 1), tok, N_, C_};
    float *d = zeros(V_ * C_), *d2 = zeros(V_ * C_);
    embedding_backward(d, c.R, tok, N_, C_);
    double e = fd_worst(emb_loss, &c, c.wte, d, V_ * C_);
    diag("embedding grad: worst rel err %.2e", e);
    ok(e < FD_TOL, "embedding_backward matches finite differences (repeated tokens)");
    embedding_backward(d2, c.R, tok, N_, C_);
    embedding_backward(d2, c.R, tok, N_, C_);
    ok(accum_err(d, d2, V_ * C_) < 1e-6, "embedding_backward accumulates");
    embedding_forward(c.out, tok, c.wte, N_, C_);
    ok(memcmp(c.out + 3 * C_, c.wte + 10 * C_, C_ * sizeof(float)) == 0, "embedding_forward copies row tokens[n]");
    free(c.out), free(c.wte), free(c.R), free(d), free(d2);
}

/* -------------------------------------------------------- crossentropy */

typedef struct {
    float *losses, *logits, *mask;
    int *tgt;
    int N, V;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    return crossentropy_forward(c->losses, c->logits, c->tgt, c->mask, c->N, c->V);
}

/* the reference: -log softmax in double, weighted mean */
static double ce_ref(double *row_loss, const float *logits, const int *tgt, const float *mask, int N, int V) {
    double num = 0, den = 0;
    for (int n = 0; n < N; n++) {
        row_loss[n] = 0.0;
        double w = mask ? mask[n] : 1.0;
        if (w == 0)
            continue;
        const float *x = logits + (size_t)n * V;
        double s = 0;
        for (int i = 0; i < V; i++)
            s += exp((double)x[i]);
        row_loss[n] = log(s) - x[tgt[n]];
        num += w * row_loss[n];
        den += w;
    }
    return den ? num / den : 0.0;
}

static void test_crossentropy(void) {
    /* weights: two positions masked out (one with target -1, which must not be
     * read), one weighted 0.5, one 2 */
    int tgt[N_] = {4, -1, 0, 10, 7};
    float mask[N_] = {1.0f, 0.0f, 0.5f, 2.0f, 0.0f};
    ce_ctx c = {zeros(N_), randn(N_ * V_, 2), mask, tgt, N_, V_};
    float msum = 0;
    for (int n = 0; n < N_; n++)
        msum += mask[n];
    float *d = zeros(N_ * V_), *d2 = zeros(N_ * V_);
    crossentropy_backward(d, c.logits, tgt, mask, 1.0f / msum, N_, V_);
    double e = fd_worst(ce_loss, &c, c.logits, d, N_ * V_);
    diag("crossentropy grad (masked, weighted): worst rel err %.2e", e);
    ok(e < FD_TOL, "crossentropy_backward matches finite differences of the weighted mean");
    int zero_rows = 1;
    for (int i = 0; i < V_; i++)
        zero_rows &= d[1 * V_ + i] == 0.0f && d[4 * V_ + i] == 0.0f;
    ok(zero_rows, "masked positions get no gradient");
    crossentropy_backward(d2, c.logits, tgt, mask, 1.0f / msum, N_, V_);
    crossentropy_backward(d2, c.logits, tgt, mask, 1.0f / msum, N_, V_);
    ok(accum_err(d, d2, N_ * V_) < 1e-6, "crossentropy_backward accumulates");

    /* forward against the double reference, mask semantics */
    double rl[N_];
    double ref = ce_ref(rl, c.logits, tgt, mask, N_, V_);
    double got = crossentropy_forward(c.losses, c.logits, tgt, mask, N_, V_);
    double wl = 0;
    for (int n = 0; n < N_; n++)
        wl = fmax(wl, fabs(c.losses[n] - rl[n]) / fmax(rl[n], 1e-3));
    diag("crossentropy forward: mean %.9f ref %.9f; worst per-row rel err %.2e", got, ref, wl);
    ok(fabs(got - ref) / ref < 1e-6 && wl < 1e-6, "crossentropy_forward matches double reference (weighted mean)");
    ok(c.losses[1] == 0.0f && c.losses[4] == 0.0f, "masked positions report loss 0");
    /* the weighted mean is not the plain mean over unmasked rows */
    double plain = (rl[0] + rl[2] + rl[3]) / 3.0;
    ok(fabs(got - plain) > 1e-4, "the mean is weighted by the mask (%.5f vs unweighted %.5f)", got, plain);
    float zmask[N_] = {0};
    ok(crossentropy_forward(c.losses, c.logits, tgt, zmask, N_, V_) == 0.0, "all-zero mask gives 0");
    /* NULL losses and NULL mask */
    int tgt2[N_] = {4, 1, 0, 10, 7};
    double ref2 = ce_ref(rl, c.logits, tgt2, NULL, N_, V_);
    double g2 = crossentropy_forward(NULL, c.logits, tgt2, NULL, N_, V_);
    ok(fabs(g2 - ref2) / ref2 < 1e-6, "NULL mask = all ones, NULL losses allowed (%.7f vs %.7f)", g2, ref2);

    /* uniform logits: loss = log V exactly in exact arithmetic */
    int V = 1000, N = 3, t3[3] = {0, 999, 500};
    float *u = mallocCheck(sizeof(float) * N * V);
    for (int i = 0; i < N * V; i++)
        u[i] = 3.7f;
    double lu = crossentropy_forward(NULL, u, t3, NULL, N, V);
    diag("uniform logits V=%d: %.12f, log V = %.12f", V, lu, log((double)V));
    ok(fabs(lu - log((double)V)) < 1e-6, "uniform logits give log V");
    free(u), free(c.losses), free(c.logits), free(d), free(d2);
}

/* ------------------------------------------------------------ residual */

typedef struct {
    float *out, *a, *b, *R;
    size_t n;
} res_ctx;

static double res_loss(void *p) {
    res_ctx *c = p;
    residual_forward(c->out, c->a, c->b, c->n);
    return dot_fd(c->out, c->R, c->n);
}

static void test_residual(void) {
    size_t n = 13;
    res_ctx c = {zeros(n), randn(n, 1), randn(n, 1), randn(n, 1), n};
    float *da = zeros(n), *db = zeros(n), *da2 = zeros(n), *db2 = zeros(n);
    residual_backward(da, db, c.R, n);
    double ea = fd_worst(res_loss, &c, c.a, da, n), eb = fd_worst(res_loss, &c, c.b, db, n);
    diag("residual grad: worst rel err da %.2e db %.2e", ea, eb);
    ok(ea < FD_TOL && eb < FD_TOL, "residual_backward matches finite differences");
    residual_backward(da2, db2, c.R, n);
    residual_backward(da2, db2, c.R, n);
    ok(accum_err(da, da2, n) < 1e-6 && accum_err(db, db2, n) < 1e-6, "residual_backward accumulates");
    free(c.out), free(c.a), free(c.b), free(c.R), free(da), free(db), free(da2), free(db2);
}

/* ------------------------- forwards and backwards at sizes that go parallel */

static void test_big_forward(void) {
    int N = 300, C = 64, OC = 70;
    float *inp = randn((size_t)N * C, 1), *w = randn((size_t)OC * C, 0.3f), *b = randn(OC, 1);
    float *out = zeros((size_t)N * OC);
    double *ref = mallocCheck(sizeof(double) * N * 100); /* largest: softmax N x 100 */

    matmul_forward(out, inp, w, b, N, C, OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int i = 0; i < C; i++)
                s += (double)inp[n * C + i] * w[o * C + i];
            ref[n * OC + o] = s;
        }
    double e = max_rel_err(out, ref, (size_t)N * OC, 1.0);
    diag("matmul forward %dx%d @ %dx%d^T + bias: worst err %.2e (rel, floor 1)", N, C, OC, C, e);
    ok(e < 1e-5, "matmul_forward matches double reference");

    /* layer norm: shifted, scaled inputs so the mean matters */
    float *x = randn((size_t)N * C, 3), *lw = randn(C, 1), *lb = randn(C, 1);
    for (int i = 0; i < N * C; i++)
        x[i] += 10.0f;
    float *lo = zeros((size_t)N * C), *mean = zeros(N), *rstd = zeros(N);
    for (int affine = 0; affine < 2; affine++) {
        layernorm_forward(lo, mean, rstd, x, affine ? lw : NULL, affine ? lb : NULL, N, C);
        double wm = 0;
        for (int n = 0; n < N; n++) {
            double m = 0, v = 0;
            for (int i = 0; i < C; i++)
                m += x[n * C + i];
            m /= C;
            for (int i = 0; i < C; i++)
                v += (x[n * C + i] - m) * (x[n * C + i] - m);
            v /= C;
            double rs = 1.0 / sqrt(v + 1e-5);
            wm = fmax(wm, fabs(mean[n] - m) / fabs(m) + fabs(rstd[n] - rs) / rs);
            for (int i = 0; i < C; i++) {
                double y = (x[n * C + i] - m) * rs;
                ref[n * C + i] = affine ? y * lw[i] + lb[i] : y;
            }
        }
        double el = max_rel_err(lo, ref, (size_t)N * C, 1.0);
        diag("layernorm forward (%s): worst err %.2e, mean/rstd %.2e", affine ? "affine" : "plain", el, wm);
        ok(el < 1e-5 && wm < 1e-5, "layernorm_forward %s matches double reference",
           affine ? "with gain/bias" : "without");
    }

    /* softmax with masked (-inf) entries and one fully masked row */
    int SC = 100;
    float *s = randn((size_t)N * SC, 4), *so = zeros((size_t)N * SC);
    for (int n = 0; n < N; n++)
        for (int i = n % SC + 1; i < SC; i++)
            if (n % 3 == 0)
                s[n * SC + i] = -INFINITY; /* causal-style mask */
    for (int i = 0; i < SC; i++)
        s[7 * SC + i] = -INFINITY;
    s[5 * SC + 3] = 80.0f; /* large logit: needs the max shift */
    softmax_forward(so, s, N, SC);
    for (int n = 0; n < N; n++) {
        double m = -INFINITY, z = 0;
        for (int i = 0; i < SC; i++)
            m = fmax(m, s[n * SC + i]);
        for (int i = 0; i < SC; i++)
            z += (m == -INFINITY) ? 0 : exp(s[n * SC + i] - m);
        for (int i = 0; i < SC; i++)
            ref[n * SC + i] = z > 0 ? exp(s[n * SC + i] - m) / z : 0.0;
    }
    double es = max_rel_err(so, ref, (size_t)N * SC, 1e-6);
    double rs_worst = 0;
    for (int n = 0; n < N; n++) {
        if (n == 7)
            continue;
        double t = 0;
        for (int i = 0; i < SC; i++)
            t += so[n * SC + i];
        rs_worst = fmax(rs_worst, fabs(t - 1.0));
    }
    diag("softmax forward %dx%d: worst err %.2e (rel, floor 1e-6); worst |row sum - 1| %.2e", N, SC, es, rs_worst);
    ok(es < 1e-5 && rs_worst < 1e-5, "softmax_forward matches double reference (masked entries, large logits)");
    int allz = 1;
    for (int i = 0; i < SC; i++)
        allz &= so[7 * SC + i] == 0.0f;
    ok(allz, "a fully masked softmax row gives zeros, not NaN");

    /* cross-entropy at size, with a mask */
    int V = 257;
    float *lg = randn((size_t)N * V, 3), *mk = zeros(N), *ls = zeros(N);
    int *tg = mallocCheck(sizeof(int) * N);
    for (int n = 0; n < N; n++)
        tg[n] = (int)rb_rng_below(&g_rng, V), mk[n] = (n % 4 == 1) ? 0.0f : 1.0f;
    double rl_[300];
    double cr = ce_ref(rl_, lg, tg, mk, N, V), cg = crossentropy_forward(ls, lg, tg, mk, N, V);
    diag("crossentropy forward %dx%d masked: %.9f vs ref %.9f", N, V, cg, cr);
    ok(fabs(cg - cr) / cr < 1e-6, "crossentropy_forward matches double reference at size");

    free(inp), free(w), free(b), free(out), free(ref), free(x), free(lw), free(lb), free(lo), free(mean), free(rstd);
    free(s), free(so), free(lg), free(mk), free(ls), free(tg);
}

static void test_big_backward(void) {
    int N = 300, C = 64, OC = 70;
    float *inp = randn((size_t)N * C, 1), *w = randn((size_t)OC * C, 0.3f), *dout = randn((size_t)N * OC, 1);
    float *di = zeros((size_t)N * C), *dw = zeros((size_t)OC * C), *db = zeros(OC);
    double *ref = mallocCheck(sizeof(double) * N * C * 2);
    matmul_backward(di, dw, db, dout, inp, w, N, C, OC);
    /* float sums of K terms are off by up to ~K * 2^-24 times the sum of the
     * terms' magnitudes (K = 300 here: 1.8e-5, typically sqrt(K) * 2^-24 ~ 1e-6),
     * so errors are measured against that sum (refabs), not the result,
     * which may cancel */
    double *refabs = mallocCheck(sizeof(double) * N * C);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) {
            double s = 0, sa = 0;
            for (int o = 0; o < OC; o++)
                s += (double)dout[n * OC + o] * w[o * C + i], sa += fabs((double)dout[n * OC + o] * w[o * C + i]);
            ref[n * C + i] = s, refabs[n * C + i] = sa;
        }
    double e1 = max_err_scaled(di, ref, refabs, (size_t)N * C);
    for (int o = 0; o < OC; o++)
        for (int i = 0; i < C; i++) {
            double s = 0, sa = 0;
            for (int n = 0; n < N; n++)
                s += (double)dout[n * OC + o] * inp[n * C + i], sa += fabs((double)dout[n * OC + o] * inp[n * C + i]);
            ref[o * C + i] = s, refabs[o * C + i] = sa;
        }
    double e2 = max_err_scaled(dw, ref, refabs, (size_t)OC * C);
    for (int o = 0; o < OC; o++) {
        double s = 0;
        for (int n = 0; n < N; n++)
            s += dout[n * OC + o];
        ref[o] = s;
    }
    double e3 = max_rel_err(db, ref, OC, 1.0);
    diag("matmul backward at size: worst err dinp %.2e dweight %.2e (relative to sum of |terms|), dbias %.2e", e1, e2,
         e3);
    ok(e1 < 2e-5 && e2 < 2e-5 && e3 < 1e-5, "matmul_backward matches double reference at size");

    /* embedding backward: 3000 positions, 5 tokens: heavy sharing across threads */
    int EN = 3000, EV = 5, EC = 40;
    int *tok = mallocCheck(sizeof(int) * EN);
    float *g = randn((size_t)EN * EC, 1), *dwte = zeros((size_t)EV * EC);
    for (int n = 0; n < EN; n++)
        tok[n] = (int)rb_rng_below(&g_rng, EV);
    embedding_backward(dwte, g, tok, EN, EC);
    for (int i = 0; i < EV * EC; i++)
        ref[i] = 0;
    for (int n = 0; n < EN; n++)
        for (int c = 0; c < EC; c++)
            ref[tok[n] * EC + c] += g[n * EC + c];
    double ee = max_rel_err(dwte, ref, (size_t)EV * EC, 1.0);
    diag("embedding backward %d positions onto %d tokens: worst err %.2e", EN, EV, ee);
    ok(ee < 1e-4, "embedding_backward matches double reference with shared tokens (no race)");

    /* layernorm backward at size against an independent double computation:
     * y = (x - m) r, r = (v + eps)^-1/2; dL/dx_i = r (dy_i - mean(dy) - y_i mean(dy y)) with dy = w * dout */
    float *x = randn((size_t)N * C, 2), *lw = randn(C, 1), *lb = randn(C, 1), *ld = randn((size_t)N * C, 1);
    float *lo = zeros((size_t)N * C), *mean = zeros(N), *rstd = zeros(N);
    float *ldi = zeros((size_t)N * C), *ldw = zeros(C), *ldb = zeros(C);
    layernorm_forward(lo, mean, rstd, x, lw, lb, N, C);
    layernorm_backward(ldi, ldw, ldb, ld, x, lw, mean, rstd, N, C);
    double *rw = ref + N * C, *rb = rw + C;
    for (int i = 0; i < C; i++)
        rw[i] = rb[i] = 0;
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++)
            m += x[n * C + i];
        m /= C;
        for (int i = 0; i < C; i++)
            v += (x[n * C + i] - m) * (x[n * C + i] - m);
        double r = 1.0 / sqrt(v / C + 1e-5), a = 0, bsum = 0;
        for (int i = 0; i < C; i++) {
            double y = (x[n * C + i] - m) * r, dy = (double)lw[i] * ld[n * C + i];
            a += dy, bsum += dy * y;
            rw[i] += ld[n * C + i] * y;
            rb[i] += ld[n * C + i];
        }
        for (int i = 0; i < C; i++) {
            double y = (x[n * C + i] - m) * r, dy = (double)lw[i] * ld[n * C + i];
            ref[n * C + i] = r * (dy - a / C - y * bsum / C);
        }
    }
    double l1 = max_rel_err(ldi, ref, (size_t)N * C, 1.0), l2 = max_rel_err(ldw, rw, C, 1.0),
           l3 = max_rel_err(ldb, rb, C, 1.0);
    diag("layernorm backward at size: worst err dinp %.2e dweight %.2e dbias %.2e", l1, l2, l3);
    ok(l1 < 1e-4 && l2 < 1e-5 && l3 < 1e-5, "layernorm_backward matches double reference at size");

    /* the row reductions do not depend on the thread count */
    int t0 = rb_threads();
    float *a1 = zeros(C), *a2 = zeros(C), *e1w = zeros((size_t)EV * EC), *e2w = zeros((size_t)EV * EC);
    float *b1 = zeros(OC), *b2 = zeros(OC);
    rb_set_threads(1);
    layernorm_backward(NULL, a1, NULL, ld, x, lw, mean, rstd, N, C);
    embedding_backward(e1w, g, tok, EN, EC);
    matmul_backward(NULL, NULL, b1, dout, inp, w, N, C, OC);
    double n1 = clip_grad_norm(g, (size_t)EN * EC, 0);
    rb_set_threads(2);
    layernorm_backward(NULL, a2, NULL, ld, x, lw, mean, rstd, N, C);
    embedding_backward(e2w, g, tok, EN, EC);
    matmul_backward(NULL, NULL, b2, dout, inp, w, N, C, OC);
    double n2 = clip_grad_norm(g, (size_t)EN * EC, 0);
    rb_set_threads(t0);
    ok(memcmp(a1, a2, sizeof(float) * C) == 0 && memcmp(e1w, e2w, sizeof(float) * EV * EC) == 0 &&
           memcmp(b1, b2, sizeof(float) * OC) == 0 && n1 == n2,
       "dweight, dbias, dwte and the grad norm are bit-identical on 1 and 2 threads");

    free(inp), free(w), free(dout), free(di), free(dw), free(db), free(ref), free(refabs), free(tok), free(g),
        free(dwte);
    free(x), free(lw), free(lb), free(ld), free(lo), free(mean), free(rstd), free(ldi), free(ldw), free(ldb);
    free(a1), free(a2), free(e1w), free(e2w), free(b1), free(b2);
}

/* ------------------------------------------------------------ optimiser */

static void test_clip(void) {
    float g[2] = {3.0f, 4.0f};
    double n = clip_grad_norm(g, 2, 1.0);
    ok(n == 5.0 && fabsf(g[0] - 0.6f) < 1e-7f && fabsf(g[1] - 0.8f) < 1e-7f,
       "clip_grad_norm: (3,4) -> norm 5, scaled to (%.8f, %.8f)", g[0], g[1]);
    float h[2] = {3.0f, 4.0f};
    n = clip_grad_norm(h, 2, 10.0);
    ok(n == 5.0 && h[0] == 3.0f && h[1] == 4.0f, "clip_grad_norm leaves a gradient below max_norm alone");
    n = clip_grad_norm(h, 2, 0.0);
    ok(n == 5.0 && h[0] == 3.0f && h[1] == 4.0f, "clip_grad_norm with max_norm 0 only measures");
    float u[2] = {3.0f, 4.0f}; /* just above max_norm: scaled by 4/5 */
    n = clip_grad_norm(u, 2, 4.0);
    ok(n == 5.0 && fabsf(u[0] - 2.4f) < 1e-6f && fabsf(u[1] - 3.2f) < 1e-6f,
       "clip_grad_norm: norm 5 over max_norm 4 -> (2.4, 3.2) (%.7f, %.7f)", u[0], u[1]);
    ok(clip_grad_norm(h, 0, 1.0) == 0.0, "clip_grad_norm of nothing is 0");

    size_t big = 3000001; /* several chunks and an odd tail */
    float *x = randn(big, 0.01f);
    double ss = 0;
    for (size_t i = 0; i < big; i++)
        ss += (double)x[i] * x[i];
    double nb = clip_grad_norm(x, big, 1.0);
    double ss2 = 0;
    for (size_t i = 0; i < big; i++)
        ss2 += (double)x[i] * x[i];
    diag("clip_grad_norm n=%zu: norm %.12f ref %.12f; after clipping %.9f", big, nb, sqrt(ss), sqrt(ss2));
    ok(fabs(nb - sqrt(ss)) / sqrt(ss) < 1e-12 && fabs(sqrt(ss2) - 1.0) < 1e-6,
       "clip_grad_norm at size: norm in double, clipped norm = max_norm");
    free(x);
}

static void test_adamw(void) {
    /* lr 0.1, betas 0.9/0.999, eps 1e-8, weight decay 0.01; parameters 0 and 2 decay */
    float p[4] = {1.0f, -2.0f, 0.5f, 3.0f}, m[4] = {0}, v[4] = {0};
    const float g1[4] = {0.5f, -0.25f, 2.0f, 0.0f}, g2[4] = {-1.0f, 0.5f, 2.0f, 0.0f};
    const unsigned char mask[4] = {1, 0, 1, 0};
    double p0[4] = {1.0, -2.0, 0.5, 3.0}, h1[4], h2[4];
    /* by hand, step 1: mhat = g, vhat = g^2, so the Adam step is sign(g) (0 for g = 0) */
    for (int i = 0; i < 4; i++) {
        double sgn = g1[i] > 0 ? 1 : g1[i] < 0 ? -1 : 0;
        double step = sgn * fabs(g1[i]) / (fabs(g1[i]) + 1e-8);
        h1[i] = p0[i] - 0.1 * (step + (mask[i] ? 0.01 * p0[i] : 0));
    }
    /* step 2: m = 0.09 g1 + 0.1 g2, v = 0.000999 g1^2 + 0.001 g2^2;
     * bias corrections 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999 */
    for (int i = 0; i < 4; i++) {
        double mm = 0.09 * g1[i] + 0.1 * g2[i], vv = 0.000999 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
        double step = (mm / 0.19) / (sqrt(vv / 0.001999) + 1e-8);
        h2[i] = h1[i] - 0.1 * (step + (mask[i] ? 0.01 * h1[i] : 0));
    }
    adamw_update(p, g1, m, v, mask, 4, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    double e1 = 0;
    for (int i = 0; i < 4; i++)
        e1 = fmax(e1, fabs(p[i] - h1[i]));
    adamw_update(p, g2, m, v, mask, 4, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
    double e2 = 0;
    for (int i = 0; i < 4; i++)
        e2 = fmax(e2, fabs(p[i] - h2[i]));
    diag("adamw: step 1 worst abs err %.2e, step 2 %.2e (p = %.7f %.7f %.7f %.7f)", e1, e2, p[0], p[1], p[2], p[3]);
    ok(e1 < 1e-6, "adamw step 1 matches the hand computation");
    ok(e2 < 1e-6, "adamw step 2 matches the hand computation (bias correction with t)");
    ok(p[3] == 3.0f, "a parameter with zero gradient and no decay does not move");

    /* NULL mask = decay everything; zero gradient: pure decoupled decay p *= 1 - lr*wd */
    float q[2] = {2.0f, -4.0f}, qm[2] = {0}, qv[2] = {0}, z[2] = {0};
    adamw_update(q, z, qm, qv, NULL, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 1);
    ok(fabsf(q[0] - 1.9f) < 1e-6f && fabsf(q[1] + 3.8f) < 1e-6f, "NULL mask decays every parameter (%.7f %.7f)", q[0],
       q[1]);
}

int main(void) {
    rb_rng_seed(&g_rng, 12345);
    rb_set_threads(2);
    test_matmul_grad();
    test_layernorm_grad(1);
    test_layernorm_grad(0);
    test_gelu();
    test_softmax_grad();
    test_embedding_grad();
    test_crossentropy();
    test_residual();
    test_big_forward();
    test_big_backward();
    test_clip();
    test_adamw();
    return tap_done();
}
