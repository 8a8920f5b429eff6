/* test_range.c: numerical range. Every registered backend (the registry is
 * looped over, so a new one is covered without edits) gives finite outputs
 * and gradients equal to a double-precision reference (tests/attn_ref.h)
 * when the scores are huge: q and k scaled so the largest |score| of each
 * head is 1000, far past where exp overflows (88.7) or underflows (-87.3).
 * Two kinds of input:
 *  - spread: random q and k with every odd key a copy of the one before, so
 *    the winning keys tie and the gradients at huge scores are not all zero;
 *  - offset: every score of a row within a few units of +1000 or of -1000
 *    (rows alternate in blocks): the row maximum must be subtracted before
 *    exp, and a row that is all very negative must not sum to 0.
 * Rows with nothing visible (routing unshared and causal: a cluster whose
 * keys all come after the query) happen here and must give 0, not NaN.
 * Then the model's softmax and cross-entropy kernels on logits of +-1000,
 * rows all near -1000 or +1000 and fully masked rows, and a whole model whose
 * logits are huge. Tolerances are relative: at |score| = 1000 float32 itself
 * rounds a score by about 1e-4..1e-3, so probabilities carry that relative
 * error; an unshifted exp gives inf or NaN, which fails every comparison. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn_ref.h"
#include "model/model.h"
#include "model/train.h"
#include "tap.h"
#include "util/common.h"
#include "util/kernels.h"
#include "util/threads.h"
#include "testutil.h"

#define TOL_OUT 1e-2
#define TOL_GRAD 2e-2

static float *randn(size_t n, rb_rng *r) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rb_rng_normal(r);
    return x;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Largest |q_i . key_j| / sqrt(d) over all pairs of one head (keys: k, or
 * the normalised q when the head shares them). */
static double head_max_score(const float *q, const float *k, int n, int d, int shared, int norm) {
    double *x = mallocCheck(sizeof(double) * (size_t)n * d), s, m = 0;
    for (int j = 0; j < n; j++) {
        if (shared) ref_norm_row(x + (size_t)j * d, &s, q + (size_t)j * d, d, norm);
        else
            for (int e = 0; e < d; e++) x[(size_t)j * d + e] = k[(size_t)j * d + e];
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double dot = 0;
            for (int e = 0; e < d; e++) dot += (double)q[(size_t)i * d + e] * x[(size_t)j * d + e];
            m = fmax(m, fabs(dot));
        }
    free(x);
    return m / sqrt((double)d);
}

/* Scale each head's q (and k unless its keys are the normalised q) so its
 * largest |score| is `target`. */
static void scale_heads(float *q, float *k, const ref_pattern *pats, const attn_params *p, double target) {
    int n = p->seq, d = p->head_dim;
    size_t nd = (size_t)n * d;
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++) {
        float *qb = q + bh * nd, *kb = k + bh * nd;
        double m = head_max_score(qb, kb, n, d, pats[bh].shared, p->norm);
        double fq = pats[bh].shared ? target / m : sqrt(target / m), fk = pats[bh].shared ? 1.0 : fq;
        for (size_t i = 0; i < nd; i++) qb[i] = (float)(qb[i] * fq), kb[i] = (float)(kb[i] * fk);
    }
}

/* The two kinds of input, at ordinary scale (scaled up afterwards). */
static void make_inputs(float *q, float *k, const attn_params *p, int offset, rb_rng *r) {
    int n = p->seq, d = p->head_dim;
    size_t nd = (size_t)n * d;
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++) {
        float *qb = q + bh * nd, *kb = k + bh * nd;
        for (size_t i = 0; i < nd; i++) qb[i] = rb_rng_normal(r), kb[i] = rb_rng_normal(r);
        if (!offset) {
            /* ties: odd rows copy the row before (keys, and queries, which
             * are the keys when shared) */
            for (int j = 1; j < n; j += 2)
                for (int e = 0; e < d; e++)
                    kb[(size_t)j * d + e] = kb[(size_t)(j - 1) * d + e], qb[(size_t)j * d + e] = qb[(size_t)(j - 1) * d + e];
            continue;
        }
        /* k_j = A u + noise, q_i = +-B u + noise: every score of row i is
         * about +-A B / sqrt(d), spread by a few units */
        double A = 16.0, Bq = 16.0;
        for (int i = 0; i < n; i++) {
            float sg = (i / 3) % 2 ? -1.0f : 1.0f;
            qb[(size_t)i * d] += (float)(sg * Bq * sqrt((double)d));
            kb[(size_t)i * d] += (float)(A * sqrt((double)d));
        }
    }
}

typedef struct {
    int causal, share, assign, norm;
} combo;

static void one_config(const attn_backend *be, const attn_params *p0, combo cb, int offset, int *empty_seen) {
    attn_params p = *p0;
    p.causal = cb.causal, p.share_qk = cb.share, p.assign = cb.assign, p.norm = cb.norm;
    char err[256], what[200];
    snprintf(what, sizeof what, "%s %s%s%s%s %s", be->name, cb.causal ? "causal" : "full",
             (be->uses & ATTN_USES_SHARE_QK) ? (cb.share ? " shared" : " unshared") : "",
             (be->uses & ATTN_USES_ASSIGN) ? (cb.assign ? " argmax" : " topk") : "",
             (be->uses & ATTN_USES_NORM) ? (cb.norm ? " layernorm" : " l2") : "", offset ? "offset" : "spread");
    attn *a = attn_make(be->name, &p, err, sizeof err);
    if (!a) {
        ok(0, "%s: cannot make an instance: %s", what, err);
        return;
    }
    int B = p.batch, H = p.heads, n = p.seq, d = p.head_dim;
    size_t nd = (size_t)n * d, total = (size_t)B * H * nd;
    rb_rng r;
    rb_rng_seed(&r, 1234 + (uint64_t)offset);
    float *q = mallocCheck(total * sizeof(float)), *k = mallocCheck(total * sizeof(float));
    make_inputs(q, k, &p, offset, &r);
    float *v = randn(total, &r), *g = randn(total, &r);
    ref_pattern *pats = mallocCheck(sizeof(ref_pattern) * (size_t)B * H);
    ref_probe(pats, a, q, k); /* ordinary scores: every attended probability > 0 */
    scale_heads(q, k, pats, &p, 1000.0);

    float *out = mallocCheck(total * sizeof(float)), *dq = mallocCheck(total * sizeof(float));
    float *dk = mallocCheck(total * sizeof(float)), *dv = mallocCheck(total * sizeof(float));
    a->be->forward(a, out, q, k, v, ATTN_EVAL);
    a->be->backward(a, dq, dk, dv, g, q, k, v, out);
    ref_reroute(pats, a);
    double *ro = mallocCheck(total * sizeof(double)), *rq = mallocCheck(total * sizeof(double));
    double *rk = mallocCheck(total * sizeof(double)), *rv = mallocCheck(total * sizeof(double));
    ref_info info;
    ref_attention(pats, &p, q, k, v, g, ro, rq, rk, rv, &info);
    *empty_seen += info.empty_terms;

    int fin = all_finite(out, total) && all_finite(dq, total) && all_finite(dk, total) && all_finite(dv, total);
    double vmax = 0;
    for (size_t i = 0; i < total; i++) vmax = fmax(vmax, fabs(v[i]));
    double eo = ref_err(out, ro, total, vmax);
    /* a gradient is compared with its own largest entry, or where every
     * softmax is one-hot (so the exact gradient nearly vanishes) with 1% of
     * one pair's full contribution, which float rounding of the
     * probabilities multiplies; shared keys: dk must be exactly zero */
    double eq = ref_err(dq, rq, total, fmax(ref_maxabs(rq, total), 1e-2 * info.nat_dq));
    double rkmax = ref_maxabs(rk, total), ek = ref_err(dk, rk, total, rkmax > 0 ? fmax(rkmax, 1e-2 * info.nat_dk) : 1.0);
    double ev = ref_err(dv, rv, total, fmax(ref_maxabs(rv, total), 1e-30));
    ok(fin && eo <= TOL_OUT && eq <= TOL_GRAD && ek <= TOL_GRAD && ev <= TOL_GRAD,
       "%s: |score| up to %.0f, finite, equal to the double reference (out %.1e, dq %.1e, dk %.1e, dv %.1e; %d rows "
       "see nothing)",
       what, info.max_score, eo, eq, ek, ev, info.empty_terms);
    for (size_t bh = 0; bh < (size_t)B * H; bh++) ref_pattern_free(&pats[bh]);
    free(pats);
    free(q), free(k), free(v), free(g), free(out), free(dq), free(dk), free(dv);
    free(ro), free(rq), free(rk), free(rv);
    attn_free(a);
}

static void test_backends(void) {
    for (int bi = 0; bi < attn_count(); bi++) {
        const attn_backend *be = attn_get(bi);
        attn_params p = tu_params(2, 2, 40, 16, 5);
        if (be->uses & ATTN_USES_CLUSTERS) p.clusters = 4; /* window: the backend's default, seq / clusters */
        else if (be->uses & ATTN_USES_WINDOW) p.window = 16; /* 16, 16 and a short last block of 8 */
        int empty = 0, nshare = (be->uses & ATTN_USES_SHARE_QK) ? 2 : 1;
        int nassign = (be->uses & ATTN_USES_ASSIGN) ? 2 : 1, nnorm = (be->uses & ATTN_USES_NORM) ? 2 : 1;
        for (int causal = 1; causal >= 0; causal--)
            for (int sh = 0; sh < nshare; sh++)
                for (int as = 0; as < nassign; as++)
                    for (int nm = 0; nm < nnorm; nm++)
                        for (int off = 0; off < 2; off++) {
                            combo cb = {causal, nshare > 1 ? sh : -1, as ? ATTN_ASSIGN_ARGMAX : ATTN_ASSIGN_TOPK,
                                        nm ? ATTN_NORM_LAYERNORM : ATTN_NORM_L2};
                            one_config(be, &p, cb, off, &empty);
                        }
        if (be->routes && nshare > 1)
            ok(empty > 0, "%s: rows that see no key of a cluster were exercised (%d)", be->name, empty);
    }
}

/* ---- the model's softmax and cross-entropy ---------------------------- */

enum { KR = 7, KC = 37 }; /* rows, columns (37: the vector body and a scalar tail) */

/* Rows: 0 spread over [-1000, 1000]; 1 all near -1000; 2 all near +1000;
 * 3 a tie at the maximum +1000; 4 fully masked; 5 half masked, the rest near
 * -1000; 6 one entry at +1000, the rest near -1000. */
static void range_rows(float *x, rb_rng *r) {
    for (int i = 0; i < KC; i++) {
        x[0 * KC + i] = -1000.0f + 2000.0f * rb_rng_uniform(r);
        x[1 * KC + i] = -1000.0f + 3.0f * rb_rng_normal(r);
        x[2 * KC + i] = 1000.0f + 3.0f * rb_rng_normal(r);
        x[3 * KC + i] = 1000.0f - 50.0f * rb_rng_uniform(r) - 1.0f;
        x[4 * KC + i] = -INFINITY;
        x[5 * KC + i] = i % 2 ? -INFINITY : -1000.0f + 3.0f * rb_rng_normal(r);
        x[6 * KC + i] = -1000.0f + 3.0f * rb_rng_normal(r);
    }
    x[3 * KC + 5] = x[3 * KC + 30] = 1000.0f;
    x[6 * KC + 17] = 1000.0f;
}

/* softmax of one row in double; a fully masked row gives zeros */
static void ref_softmax_row(double *y, const float *x, int n) {
    double m = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) m = fmax(m, x[i]);
    for (int i = 0; i < n; i++) z += m == -INFINITY ? 0 : exp(x[i] - m);
    for (int i = 0; i < n; i++) y[i] = z > 0 ? exp(x[i] - m) / z : 0;
}

static void test_softmax_kernel(rb_rng *r) {
    float x[KR * KC], y[KR * KC], g[KR * KC], dx[KR * KC];
    double ry[KR * KC], rdx[KR * KC];
    range_rows(x, r);
    for (int i = 0; i < KR * KC; i++) g[i] = rb_rng_normal(r), dx[i] = 0;
    softmax_forward(y, x, KR, KC);
    softmax_backward(dx, g, y, KR, KC);
    for (int n = 0; n < KR; n++) {
        ref_softmax_row(ry + n * KC, x + n * KC, KC);
        double dot = 0;
        for (int i = 0; i < KC; i++) dot += g[n * KC + i] * ry[n * KC + i];
        for (int i = 0; i < KC; i++) rdx[n * KC + i] = ry[n * KC + i] * (g[n * KC + i] - dot);
    }
    double ey = ref_err(y, ry, KR * KC, 1.0), gmax = 0;
    for (int i = 0; i < KR * KC; i++) gmax = fmax(gmax, fabs(g[i]));
    double ed = ref_err(dx, rdx, KR * KC, gmax);
    int zero = 1;
    for (int i = 0; i < KC; i++) zero &= y[4 * KC + i] == 0.0f && dx[4 * KC + i] == 0.0f;
    ok(ey <= 1e-5 && ed <= 1e-5 && zero,
       "softmax_forward/backward at +-1000, rows all near -1000 or +1000, ties, masked rows: finite and equal to "
       "double (%.1e, %.1e), a fully masked row gives 0",
       ey, ed);
}

static void test_crossentropy_kernel(rb_rng *r) {
    /* rows 0, 1, 2, 3 and 6 of range_rows (no -inf logits: a target there
     * would have infinite loss), and a masked row of garbage */
    const int use[5] = {0, 1, 2, 3, 6};
    enum { N = 6 };
    float x[KR * KC], lg[N * KC], losses[N], mask[N], dl[N * KC];
    int tg[N];
    range_rows(x, r);
    for (int n = 0; n < 5; n++) memcpy(lg + n * KC, x + use[n] * KC, sizeof(float) * KC);
    for (int i = 0; i < KC; i++) lg[5 * KC + i] = 1e30f * (i % 2 ? 1 : -1);
    /* targets: the maximum, a middling logit, the minimum, a tied maximum */
    tg[0] = 3, tg[1] = 11, tg[2] = 20, tg[3] = 30, tg[4] = 0, tg[5] = -1;
    for (int n = 0; n < N; n++) mask[n] = n == 5 ? 0.0f : 1.0f;
    memset(dl, 0, sizeof dl);
    double got = crossentropy_forward(losses, lg, tg, mask, N, KC);
    crossentropy_backward(dl, lg, tg, mask, 1.0f / 5.0f, N, KC);
    double rl[N], rd[N * KC], sum = 0, worst = 0;
    for (int n = 0; n < N; n++) {
        double p[KC];
        ref_softmax_row(p, lg + n * KC, KC);
        if (mask[n] == 0) {
            rl[n] = 0;
            for (int i = 0; i < KC; i++) rd[n * KC + i] = 0;
            continue;
        }
        double m = -INFINITY, z = 0;
        for (int i = 0; i < KC; i++) m = fmax(m, lg[n * KC + i]);
        for (int i = 0; i < KC; i++) z += exp(lg[n * KC + i] - m);
        rl[n] = m + log(z) - lg[n * KC + tg[n]];
        sum += rl[n];
        for (int i = 0; i < KC; i++) rd[n * KC + i] = (p[i] - (i == tg[n])) / 5.0;
        /* the loss of a row can be ~2000: compare relative to it, with a floor of 1 */
        worst = fmax(worst, fabs(losses[n] - rl[n]) / fmax(1.0, fabs(rl[n])));
        if (!isfinite(losses[n])) worst = NAN;
    }
    /* backward shifts by the log-sum-exp stored as a float: at |logit| ~ 1000
     * its rounding (ulp 6e-5) moves every probability by up to ~3e-5 relative */
    double ed = ref_err(dl, rd, N * KC, ref_maxabs(rd, N * KC));
    ok(isfinite(got) && fabs(got - sum / 5) / fmax(1.0, sum / 5) <= 1e-6 && worst <= 1e-6 && ed <= 1e-4 &&
           losses[5] == 0.0f,
       "crossentropy forward/backward on logits at +-1000 and rows all near -1000 or +1000: finite, equal to double "
       "(mean %.1e, rows %.1e, dlogits %.1e), a masked row of +-1e30 ignored",
       fabs(got - sum / 5) / fmax(1.0, sum / 5), worst, ed);
}

/* A whole model whose logits reach |1000|: the loss is the double
 * cross-entropy of its own logits, and every gradient is finite. */
static void test_model_logits(void) {
    train_config c;
    train_config_default(&c);
    snprintf(c.task, sizeof c.task, "random");
    c.random_vocab = 16, c.d_model = 16, c.layers = 1, c.heads = 2, c.seq = 8, c.batch = 2;
    char err[256];
    model *m = NULL;
    if (train_config_check(&c, err, sizeof err) || !(m = model_create(&c, err, sizeof err))) {
        ok(0, "model for the logit range test: %s", err);
        return;
    }
    int BT = c.batch * c.seq, tok[16], tgt[16];
    for (int i = 0; i < BT; i++) tok[i] = (i * 5) % c.vocab, tgt[i] = (i * 3 + 1) % c.vocab;
    model_forward(m, tok, tgt, NULL, ATTN_EVAL);
    double mx = 0;
    for (size_t i = 0; i < (size_t)BT * m->V; i++) mx = fmax(mx, fabs(m->logits[i]));
    for (int i = 0; i < m->C; i++) m->params.lnfw[i] *= (float)(1000.0 / mx);
    double loss = model_forward(m, tok, tgt, NULL, ATTN_EVAL), ref = 0, top = 0;
    for (int n = 0; n < BT; n++) {
        const float *x = m->logits + (size_t)n * m->V;
        double mm = -INFINITY, z = 0;
        for (int i = 0; i < m->V; i++) mm = fmax(mm, x[i]), top = fmax(top, fabs(x[i]));
        for (int i = 0; i < m->V; i++) z += exp(x[i] - mm);
        ref += (mm + log(z) - x[tgt[n]]) / BT;
    }
    model_zero_grad(m);
    model_backward(m, 1.0f);
    int fin = 1;
    for (size_t i = 0; i < m->nparams; i++) fin &= isfinite(m->grads_mem[i]) != 0;
    ok(isfinite(loss) && fabs(loss - ref) / ref < 1e-6 && fin,
       "a model with logits up to %.0f: loss %.3f equals the double cross-entropy of its logits (%.3f), gradients "
       "finite",
       top, loss, ref);
    model_free(m);
}

int main(void) {
    rb_set_threads(2);
    test_backends();
    rb_rng r;
    rb_rng_seed(&r, 99);
    test_softmax_kernel(&r);
    test_crossentropy_kernel(&r);
    test_model_logits();
    return tap_done();
}
