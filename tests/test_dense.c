/* test_dense.c: the two exact attention backends (dense, dense-naive) against
 * a triple-loop reference in double written here, whose gradients are
 * derived by hand and themselves checked by central differences; dense
 * against dense-naive; exact causality; bit-identical reruns; the analytic
 * counts; and the messages for bad sizes and unknown names. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"
#include "tap.h"
#include "util/threads.h"
#include "testutil.h"

typedef struct {
    int b, h, n, d, causal;
} shape;

static size_t sh_elems(shape s) { return (size_t)s.b * s.h * s.n * s.d; }

/* Reference attention in double for one shape. Inputs (B,H,n,d) float; out,
 * dq, dk, dv (B,H,n,d) double. Gradients of L = sum(dout * out), by hand:
 *   p_ij = softmax_j(s_ij), s_ij = scale q_i.k_j (j visible)
 *   dv_j = sum_i p_ij dout_i;  dp_ij = dout_i.v_j;  D_i = sum_j p_ij dp_ij
 *   ds_ij = p_ij (dp_ij - D_i);  dq_i = scale sum_j ds_ij k_j;  dk_j = scale sum_i ds_ij q_i */
static void ref_attn(double *out, double *dq, double *dk, double *dv, const double *q, const double *k,
                     const double *v, const double *dout, shape s) {
    int n = s.n, d = s.d;
    double scale = 1.0 / sqrt((double)d);
    double *p = malloc(sizeof(double) * n), *dp = malloc(sizeof(double) * n);
    size_t hs = (size_t)n * d;
    if (dq) memset(dq, 0, sizeof(double) * sh_elems(s));
    if (dk) memset(dk, 0, sizeof(double) * sh_elems(s));
    if (dv) memset(dv, 0, sizeof(double) * sh_elems(s));
    for (int bh = 0; bh < s.b * s.h; bh++) {
        const double *Q = q + bh * hs, *K = k + bh * hs, *V = v + bh * hs, *G = dout ? dout + bh * hs : NULL;
        for (int i = 0; i < n; i++) {
            int nv = s.causal ? i + 1 : n;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < nv; j++) {
                double acc = 0.0;
                for (int c = 0; c < d; c++) acc += Q[i * d + c] * K[j * d + c];
                p[j] = acc * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < nv; j++) sum += (p[j] = exp(p[j] - mx));
            for (int j = 0; j < nv; j++) p[j] /= sum;
            for (int c = 0; c < d; c++) {
                double acc = 0.0;
                for (int j = 0; j < nv; j++) acc += p[j] * V[j * d + c];
                out[bh * hs + i * d + c] = acc;
            }
            if (!G) continue;
            double D = 0.0;
            for (int j = 0; j < nv; j++) {
                double acc = 0.0;
                for (int c = 0; c < d; c++) acc += G[i * d + c] * V[j * d + c];
                dp[j] = acc;
                D += p[j] * acc;
            }
            for (int j = 0; j < nv; j++) {
                double ds = p[j] * (dp[j] - D);
                for (int c = 0; c < d; c++) {
                    dv[bh * hs + j * d + c] += p[j] * G[i * d + c];
                    dq[bh * hs + i * d + c] += scale * ds * K[j * d + c];
                    dk[bh * hs + j * d + c] += scale * ds * Q[i * d + c];
                }
            }
        }
    }
    free(p);
    free(dp);
}

static double ref_loss(const double *q, const double *k, const double *v, const double *dout, shape s, double *tmp) {
    ref_attn(tmp, NULL, NULL, NULL, q, k, v, NULL, s);
    double l = 0.0;
    for (size_t i = 0; i < sh_elems(s); i++) l += dout[i] * tmp[i];
    return l;
}

/* The hand-derived reference gradients against central differences of the
 * reference forward, in double, on every entry of a small case. */
static void test_reference_gradients(int causal) {
    shape s = {1, 2, 9, 5, causal};
    size_t ne = sh_elems(s);
    rb_rng r;
    rb_rng_seed(&r, 7 + causal);
    double *x[4], *g[3], *out = malloc(sizeof(double) * ne), *tmp = malloc(sizeof(double) * ne);
    for (int t = 0; t < 4; t++) {
        x[t] = malloc(sizeof(double) * ne);
        for (size_t i = 0; i < ne; i++) x[t][i] = 1.5 * rb_rng_normal(&r);
    }
    for (int t = 0; t < 3; t++) g[t] = malloc(sizeof(double) * ne);
    ref_attn(out, g[0], g[1], g[2], x[0], x[1], x[2], x[3], s);
    double worst = 0.0, worst_rel = 0.0;
    int bad = 0;
    const double h = 1e-5;
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < ne; i++) {
            double keep = x[t][i];
            x[t][i] = keep + h;
            double lp = ref_loss(x[0], x[1], x[2], x[3], s, tmp);
            x[t][i] = keep - h;
            double lm = ref_loss(x[0], x[1], x[2], x[3], s, tmp);
            x[t][i] = keep;
            double num = (lp - lm) / (2 * h), e = fabs(num - g[t][i]);
            if (!(e <= 1e-7 + 1e-6 * fabs(num))) bad++;
            if (!(e <= worst)) worst = e;
            if (!(e / (fabs(num) + 1e-3) <= worst_rel)) worst_rel = e / (fabs(num) + 1e-3);
        }
    diag("reference gradients vs central differences (%s): worst abs err %.3g, rel %.3g", causal ? "causal" : "full",
         worst, worst_rel);
    ok(bad == 0, "hand-derived reference gradients match finite differences (%s)", causal ? "causal" : "full");
    for (int t = 0; t < 4; t++) free(x[t]);
    for (int t = 0; t < 3; t++) free(g[t]);
    free(out);
    free(tmp);
}

static void params_for(attn_params *p, shape s) {
    attn_params_default(p);
    p->batch = s.b;
    p->heads = s.h;
    p->seq = s.n;
    p->head_dim = s.d;
    p->causal = s.causal;
}

/* One shape's tensors (tests/testutil.h's tu_io), q scaled by 1.5 so some
 * rows are peaked and some flat. */
typedef tu_io bufs;
static void bufs_alloc(bufs *b, shape s, uint64_t seed) {
    attn_params p;
    params_for(&p, s);
    tu_io_make(b, &p, seed);
    for (size_t i = 0; i < b->N; i++) b->q[i] *= 1.5f;
}

/* Runs forward and backward of a backend into b->out, dq, dk, dv. */
static int run_backend(const char *name, bufs *b, shape s) {
    attn_params p;
    params_for(&p, s);
    char err[512];
    attn *a = attn_make(name, &p, err, sizeof err);
    if (!a) {
        diag("%s: %s", name, err);
        return -1;
    }
    a->be->forward(a, b->out, b->q, b->k, b->v, ATTN_TRAIN);
    a->be->backward(a, b->dq, b->dk, b->dv, b->dout, b->q, b->k, b->v, b->out);
    attn_free(a);
    return 0;
}

/* worst |x - ref| and worst |x - ref| / (|ref| + 1e-2); fails when any
 * element is off by more than atol + rtol |ref|. */
static int compare(const float *x, const double *ref, size_t n, double atol, double rtol, double *wabs, double *wrel) {
    int good = 1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]);
        if (!(e <= atol + rtol * fabs(ref[i]))) good = 0;
        if (!(e <= *wabs)) *wabs = e;
        double rel = e / (fabs(ref[i]) + 1e-2);
        if (!(rel <= *wrel)) *wrel = rel;
    }
    return good;
}

static void test_against_reference(const char *name, shape s) {
    size_t ne = sh_elems(s);
    bufs b;
    bufs_alloc(&b, s, 1000 + (uint64_t)s.n * 7 + (uint64_t)s.d + (uint64_t)s.causal);
    double *dx[4], *ro = malloc(sizeof(double) * ne), *rg[3];
    const float *src[4] = {b.q, b.k, b.v, b.dout};
    for (int t = 0; t < 4; t++) {
        dx[t] = malloc(sizeof(double) * ne);
        for (size_t i = 0; i < ne; i++) dx[t][i] = src[t][i];
    }
    for (int t = 0; t < 3; t++) rg[t] = malloc(sizeof(double) * ne);
    ref_attn(ro, rg[0], rg[1], rg[2], dx[0], dx[1], dx[2], dx[3], s);
    if (run_backend(name, &b, s) != 0) {
        ok(0, "%s b%d h%d n%d d%d %s: made", name, s.b, s.h, s.n, s.d, s.causal ? "causal" : "full");
    } else {
        const char *tn[4] = {"out", "dq", "dk", "dv"};
        const float *got[4] = {b.out, b.dq, b.dk, b.dv};
        const double *want[4] = {ro, rg[0], rg[1], rg[2]};
        int all = 1;
        char line[512];
        size_t off = 0;
        for (int t = 0; t < 4; t++) {
            double wa = 0.0, wr = 0.0;
            /* float32 storage: a few ulps per term of sums of up to n terms */
            int good = compare(got[t], want[t], ne, 2e-5, 2e-4, &wa, &wr);
            all &= good;
            off += (size_t)snprintf(line + off, sizeof line - off, " %s abs %.2g rel %.2g%s;", tn[t], wa, wr,
                                    good ? "" : " (FAIL)");
        }
        diag("%s b%d h%d n%d d%d %s:%s", name, s.b, s.h, s.n, s.d, s.causal ? "causal" : "full", line);
        ok(all, "%s b%d h%d n%d d%d %s matches the double reference (out, dq, dk, dv)", name, s.b, s.h, s.n, s.d,
           s.causal ? "causal" : "full");
    }
    for (int t = 0; t < 4; t++) free(dx[t]);
    for (int t = 0; t < 3; t++) free(rg[t]);
    free(ro);
    tu_io_free(&b);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= w)) w = e;
    }
    return w;
}

static void test_dense_vs_naive(shape s) {
    size_t ne = sh_elems(s);
    bufs a, b;
    bufs_alloc(&a, s, 77 + (uint64_t)s.n);
    bufs_alloc(&b, s, 77 + (uint64_t)s.n);
    int made = run_backend("dense", &a, s) == 0 && run_backend("dense-naive", &b, s) == 0;
    double w[4] = {max_abs_diff(a.out, b.out, ne), max_abs_diff(a.dq, b.dq, ne), max_abs_diff(a.dk, b.dk, ne),
                   max_abs_diff(a.dv, b.dv, ne)};
    diag("dense vs dense-naive b%d h%d n%d d%d %s: max abs diff out %.2g dq %.2g dk %.2g dv %.2g", s.b, s.h, s.n, s.d,
         s.causal ? "causal" : "full", w[0], w[1], w[2], w[3]);
    ok(made && w[0] < 1e-4 && w[1] < 1e-3 && w[2] < 1e-3 && w[3] < 1e-4,
       "dense and dense-naive agree at b%d h%d n%d d%d %s", s.b, s.h, s.n, s.d, s.causal ? "causal" : "full");
    tu_io_free(&a);
    tu_io_free(&b);
}

/* Output rows 0..pos must not change, bit for bit, when q, k and v after pos
 * change. */
static void test_causality(const char *name, shape s, int pos) {
    size_t ne = sh_elems(s);
    attn_params p;
    params_for(&p, s);
    char err[512];
    attn *a = attn_make(name, &p, err, sizeof err);
    if (!a) {
        ok(0, "%s causality: %s", name, err);
        return;
    }
    bufs b;
    bufs_alloc(&b, s, 5);
    float *out2 = malloc(sizeof(float) * ne);
    a->be->forward(a, b.out, b.q, b.k, b.v, ATTN_EVAL);
    rb_rng r;
    rb_rng_seed(&r, 99);
    size_t hs = (size_t)s.n * s.d;
    for (int bh = 0; bh < s.b * s.h; bh++)
        for (size_t e = (size_t)(pos + 1) * s.d; e < hs; e++) {
            b.q[bh * hs + e] += 3.0f * rb_rng_normal(&r);
            b.k[bh * hs + e] += 3.0f * rb_rng_normal(&r);
            b.v[bh * hs + e] += 3.0f * rb_rng_normal(&r);
        }
    a->be->forward(a, out2, b.q, b.k, b.v, ATTN_EVAL);
    int same = 1, changed = 0;
    for (int bh = 0; bh < s.b * s.h; bh++) {
        if (memcmp(b.out + bh * hs, out2 + bh * hs, sizeof(float) * (size_t)(pos + 1) * s.d) != 0) same = 0;
        if (memcmp(b.out + bh * hs + (size_t)(pos + 1) * s.d, out2 + bh * hs + (size_t)(pos + 1) * s.d,
                   sizeof(float) * (hs - (size_t)(pos + 1) * s.d)) != 0)
            changed = 1;
    }
    ok(same && changed, "%s n%d: outputs 0..%d bit-identical after changing q, k, v beyond (later ones did change)",
       name, s.n, pos);
    free(out2);
    tu_io_free(&b);
    attn_free(a);
}

/* Two forward+backward passes, one on a fresh instance, are bit-identical. */
static void test_determinism(const char *name, shape s) {
    size_t ne = sh_elems(s);
    bufs a, b;
    bufs_alloc(&a, s, 11);
    bufs_alloc(&b, s, 11);
    attn_params p;
    params_for(&p, s);
    char err[512];
    attn *x = attn_make(name, &p, err, sizeof err);
    int good = x != NULL && run_backend(name, &b, s) == 0;
    if (x) {
        for (int rep = 0; rep < 2 && good; rep++) {
            x->be->forward(x, a.out, a.q, a.k, a.v, ATTN_TRAIN);
            x->be->backward(x, a.dq, a.dk, a.dv, a.dout, a.q, a.k, a.v, a.out);
            good &= memcmp(a.out, b.out, ne * 4) == 0 && memcmp(a.dq, b.dq, ne * 4) == 0 &&
                    memcmp(a.dk, b.dk, ne * 4) == 0 && memcmp(a.dv, b.dv, ne * 4) == 0;
        }
        attn_free(x);
    }
    ok(good, "%s b%d h%d n%d: reruns give bit-identical out, dq, dk, dv (%d threads)", name, s.b, s.h, s.n,
       rb_threads());
    tu_io_free(&a);
    tu_io_free(&b);
}

static void test_bad_input(void) {
    char err[512];
    const char *names[2] = {"dense", "dense-naive"};
    for (int i = 0; i < 2; i++) {
        struct {
            int field, value;
            const char *word;
        } cases[] = {{0, 0, "batch"}, {1, -2, "heads"}, {2, 0, "seq"}, {3, -1, "head_dim"}};
        for (int c = 0; c < 4; c++) {
            attn_params p;
            attn_params_default(&p);
            p.seq = 16;
            int *f[4] = {&p.batch, &p.heads, &p.seq, &p.head_dim};
            *f[cases[c].field] = cases[c].value;
            err[0] = 0;
            attn *a = attn_make(names[i], &p, err, sizeof err);
            ok(a == NULL && strstr(err, cases[c].word) != NULL, "%s refuses %s = %d: \"%s\"", names[i],
               cases[c].word, cases[c].value, err);
            attn_free(a);
        }
    }
    attn_params p;
    attn_params_default(&p);
    p.seq = 16;
    err[0] = 0;
    attn *a = attn_make("no-such-attention", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "no-such-attention") && strstr(err, "dense") && strstr(err, "dense-naive"),
       "unknown backend names the known ones: \"%s\"", err);
    attn_free(a);
    char all[1024];
    attn_names(all, sizeof all);
    ok(strstr(all, "dense-naive") != NULL && attn_find("dense") != NULL && attn_find("dense-naive") != NULL,
       "registry lists dense and dense-naive (%s)", all);

    /* dense-naive at a size no machine here has is refused by attn_make's memory check, without allocating */
    attn_params_default(&p);
    p.seq = 1 << 20;
    p.heads = 8;
    err[0] = 0;
    a = attn_make("dense-naive", &p, err, sizeof err);
    ok(a == NULL && strstr(err, "needs") && strstr(err, "GiB") && strstr(err, "this machine has"),
       "dense-naive refuses seq 2^20 x 8 heads: \"%s\"", err);
    attn_free(a);
}

static void test_counts(void) {
    const attn_backend *be[2] = {attn_find("dense"), attn_find("dense-naive")};
    for (int i = 0; i < 2; i++) {
        if (!be[i]) {
            ok(0, "backend %d found", i);
            continue;
        }
        attn_params p;
        attn_params_default(&p);
        p.batch = 2;
        p.heads = 3;
        p.seq = 10;
        p.head_dim = 4;
        p.causal = 1;
        char err[256];
        attn_validate_msg(be[i], &p, err, sizeof err);
        /* causal: 55 pairs per head, 6 heads; 4d forward, 8d backward */
        double f = be[i]->flops(&p, ATTN_PASS_FWD), bw = be[i]->flops(&p, ATTN_PASS_BWD);
        p.causal = 0;
        double ff = be[i]->flops(&p, ATTN_PASS_FWD);
        ok(f == 6 * 55 * 16.0 && bw == 6 * 55 * 32.0 && ff == 6 * 100 * 16.0,
           "%s flops: causal fwd %.0f bwd %.0f, full fwd %.0f", be[i]->name, f, bw, ff);
    }
    attn_params p;
    attn_params_default(&p);
    p.seq = 16384;
    p.head_dim = 64;
    size_t dense_b = be[0]->act_bytes(&p), naive_b = be[1]->act_bytes(&p);
    diag("act_bytes at seq 16384 d 64: dense %.2f MiB, dense-naive %.2f MiB", dense_b / 1048576.0,
         naive_b / 1048576.0);
    ok(dense_b < (64u << 20) && naive_b >= (size_t)16384 * 16384 * 4,
       "act_bytes: dense O(n) under 64 MiB, dense-naive holds n^2 floats");
    char err[256];
    attn *a = attn_make("dense", &p, err, sizeof err);
    ok(a && a->bytes == dense_b, "dense instance holds what act_bytes says (%zu vs %zu)", a ? a->bytes : 0, dense_b);
    attn_free(a);
    p.seq = 300;
    a = attn_make("dense-naive", &p, err, sizeof err);
    ok(a && a->bytes == be[1]->act_bytes(&p), "dense-naive instance holds what act_bytes says");
    attn_free(a);
}

int main(void) {
    /* 2 threads whatever the machine: 1 and 3 heads exercise the split of
     * each head's tiles across threads, 2 and 6 the head-parallel backward. */
    rb_set_threads(2);
    test_reference_gradients(1);
    test_reference_gradients(0);

    shape shapes[] = {
        {2, 3, 1, 8, 0},   {2, 3, 7, 8, 0},    {1, 2, 64, 64, 0},  {2, 3, 100, 8, 0},
        {1, 1, 257, 64, 0}, {1, 1, 530, 16, 0}, {1, 3, 300, 8, 0},
    };
    const char *names[2] = {"dense", "dense-naive"};
    for (int i = 0; i < 2; i++)
        for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++)
            for (int causal = 0; causal < 2; causal++) {
                shape s = shapes[c];
                s.causal = causal;
                test_against_reference(names[i], s);
            }

    shape cmp[] = {{1, 1, 700, 64, 1}, {1, 1, 700, 64, 0}, {2, 2, 300, 32, 1}};
    for (size_t c = 0; c < sizeof cmp / sizeof cmp[0]; c++) test_dense_vs_naive(cmp[c]);

    for (int i = 0; i < 2; i++) {
        test_causality(names[i], (shape){1, 2, 300, 16, 1}, 130);
        test_causality(names[i], (shape){1, 1, 530, 8, 1}, 255);
        test_causality(names[i], (shape){1, 1, 530, 8, 1}, 0);
    }

    for (int i = 0; i < 2; i++) {
        test_determinism(names[i], (shape){1, 1, 530, 32, 1});
        test_determinism(names[i], (shape){2, 3, 200, 16, 0});
        test_determinism(names[i], (shape){1, 3, 300, 16, 1});
    }
    rb_set_threads(1);
    test_determinism("dense", (shape){1, 1, 530, 32, 1});
    rb_set_threads(2);

    test_bad_input();
    test_counts();
    return tap_done();
}
