/* test_routing.c: the routing attention backend against independent
 * references: a double-precision re-implementation of clustered attention
 * on the backend's own membership, dense attention (one cluster holding
 * everything), central finite differences with the routes held fixed,
 * causality, balance of the top-k clusters and the statistics. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"
#include "tap.h"
#include "util/threads.h"

extern const attn_backend attn_backend_routing;
static const attn_backend *BE = &attn_backend_routing;

typedef struct {
    int B, H, n, d, causal, K, w, share, assign, norm;
    float cw;
} cfg;

static attn_params mkparams(cfg c) {
    attn_params p;
    memset(&p, 0, sizeof p);
    p.batch = c.B, p.heads = c.H, p.seq = c.n, p.head_dim = c.d, p.causal = c.causal;
    p.clusters = c.K, p.window = c.w, p.local_heads = -1, p.share_qk = c.share;
    p.assign = c.assign, p.norm = c.norm, p.decay = 0.999f, p.commit_weight = c.cw;
    p.kmeans_iters = 3, p.seed = 7;
    return p;
}

static attn *make(cfg c, attn_params *p) {
    *p = mkparams(c);
    char err[256];
    if (attn_validate_msg(BE, p, err, sizeof err) != 0) {
        diag("validate: %s", err);
        return NULL;
    }
    attn *a = BE->create(p, err, sizeof err);
    if (!a) diag("create: %s", err);
    else if (a->be != BE) diag("instance does not point back at its backend");
    if (a && a->be != BE) a = NULL;
    return a;
}

static float *randv(size_t n, rb_rng *r, float s) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = s * rb_rng_normal(r);
    return x;
}

static const char *desc(cfg c) {
    static char buf[160];
    snprintf(buf, sizeof buf, "B%d H%d n%d d%d %s K%d w%d %s %s %s cw%g", c.B, c.H, c.n, c.d,
             c.causal ? "causal" : "full", c.K, c.w, c.share ? "shared" : "unshared", c.assign ? "argmax" : "topk",
             c.norm ? "ln" : "l2", (double)c.cw);
    return buf;
}

/* normalised routing vector in double, as the backend documents */
static void norm_row(double *x, const float *v, int d, int norm) {
    if (norm == ATTN_NORM_L2) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)v[j] * v[j];
        double inv = 1.0 / sqrt(ss + 1e-12);
        for (int j = 0; j < d; j++) x[j] = v[j] * inv;
    } else {
        double m = 0, var = 0;
        for (int j = 0; j < d; j++) m += v[j];
        m /= d;
        for (int j = 0; j < d; j++) var += (v[j] - m) * (v[j] - m);
        var /= d;
        for (int j = 0; j < d; j++) x[j] = (v[j] - m) / sqrt(var + 1e-5);
    }
}

/* Reference forward in double on the backend's membership: for each cluster,
 * queries attend (causally by position) the cluster's keys; shared: keys are
 * the normalised queries and self is excluded unless alone; outputs averaged
 * over the clusters that picked the token. */
static void ref_forward(double *out, const attn *a, const attn_params *p, const float *q, const float *k,
                        const float *v) {
    int n = p->seq, d = p->head_dim, shared = p->share_qk;
    size_t nd = (size_t)n * d;
    double *cnt = mallocCheck(n * sizeof(double)), *key = mallocCheck(nd * sizeof(double));
    double *s = mallocCheck(n * sizeof(double));
    double scale = 1.0 / sqrt((double)d);
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->heads; h++) {
            size_t bh = (size_t)b * p->heads + h;
            const float *qb = q + bh * nd, *kb = k + bh * nd, *vb = v + bh * nd;
            double *ob = out + bh * nd;
            for (int i = 0; i < n; i++) {
                if (shared)
                    norm_row(key + (size_t)i * d, qb + (size_t)i * d, d, p->norm);
                else
                    for (int j = 0; j < d; j++) key[(size_t)i * d + j] = kb[(size_t)i * d + j];
            }
            memset(cnt, 0, n * sizeof(double));
            memset(ob, 0, nd * sizeof(double));
            for (int c = 0; c < p->clusters; c++) {
                const int *qm, *km;
                int mq = BE->routes(a, b, h, c, 0, &qm), mk = BE->routes(a, b, h, c, 1, &km);
                for (int r = 0; r < mq; r++) {
                    int i = qm[r];
                    cnt[i] += 1;
                    int nvis = 0, others = 0;
                    for (int t = 0; t < mk; t++)
                        if (!p->causal || km[t] <= i) nvis++, others += km[t] != i;
                    if (nvis == 0) continue;
                    double mx = -INFINITY;
                    for (int t = 0; t < mk; t++) {
                        int j = km[t];
                        int vis = (!p->causal || j <= i) && !(shared && j == i && others > 0);
                        if (!vis) {
                            s[t] = -INFINITY;
                            continue;
                        }
                        double dot = 0;
                        for (int e = 0; e < d; e++) dot += (double)qb[(size_t)i * d + e] * key[(size_t)j * d + e];
                        s[t] = dot * scale;
                        mx = fmax(mx, s[t]);
                    }
                    double z = 0;
                    for (int t = 0; t < mk; t++) z += s[t] == -INFINITY ? 0 : exp(s[t] - mx);
                    for (int t = 0; t < mk; t++) {
                        if (s[t] == -INFINITY) continue;
                        double pr = exp(s[t] - mx) / z;
                        for (int e = 0; e < d; e++) ob[(size_t)i * d + e] += pr * vb[(size_t)km[t] * d + e];
                    }
                }
            }
            for (int i = 0; i < n; i++)
                if (cnt[i] > 0)
                    for (int e = 0; e < d; e++) ob[(size_t)i * d + e] /= cnt[i];
        }
    free(cnt), free(key), free(s);
}

static double stat_of(const attn *a, const char *name) {
    attn_stat st[32];
    int m = BE->stats(a, st, 32);
    for (int i = 0; i < m; i++)
        if (!strcmp(st[i].name, name)) return st[i].value;
    return NAN;
}

/* forward agrees with the reference on the backend's own routes */
static void test_reference(cfg c) {
    attn_params p;
    attn *a = make(c, &p);
    if (!ok(a != NULL, "create %s", desc(c))) return;
    size_t N = (size_t)c.B * c.H * c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 11 + c.n);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1), *out = mallocCheck(N * 4);
    double *ref = mallocCheck(N * sizeof(double));
    BE->forward(a, out, q, k, v, ATTN_TRAIN);
    ref_forward(ref, a, &p, q, k, v);
    double worst = 0, big = 0;
    for (size_t i = 0; i < N; i++) worst = fmax(worst, fabs(out[i] - ref[i])), big = fmax(big, fabs(ref[i]));
    diag("reference %s: max |out - ref| = %.3g (max |ref| %.3g)", desc(c), worst, big);
    ok(worst <= 1e-5 * fmax(1, big), "forward matches the double reference on its routes: %s", desc(c));
    free(q), free(k), free(v), free(out), free(ref);
    BE->destroy(a);
}

/* Central finite differences of L = sum(out * R) + cw * commit_loss, all
 * entries of q, k and v, routes held fixed (ATTN_KEEP_ROUTES). */
static void test_grad(cfg c) {
    attn_params p;
    attn *a = make(c, &p);
    if (!ok(a != NULL, "create %s", desc(c))) return;
    size_t N = (size_t)c.B * c.H * c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 100 + c.n * 3 + c.d);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1), *R = randv(N, &r, 1);
    float *out = mallocCheck(N * 4), *o2 = mallocCheck(N * 4);
    float *g[3] = {mallocCheck(N * 4), mallocCheck(N * 4), mallocCheck(N * 4)};
    BE->forward(a, out, q, k, v, ATTN_TRAIN);
    BE->forward(a, out, q, k, v, ATTN_KEEP_ROUTES);
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < N; i++) g[t][i] = NAN; /* backward must overwrite */
    BE->backward(a, g[0], g[1], g[2], R, q, k, v, out);
    float *xs[3] = {q, k, v};
    const char *nm[3] = {"q", "k", "v"};
    double worst = 0, gmax = 0;
    int finite = 1;
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < N; i++) finite &= isfinite(g[t][i]), gmax = fmax(gmax, fabs(g[t][i]));
    const float eps = 1e-2f;
    char where[64] = "";
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < N; i++) {
            float x0 = xs[t][i];
            xs[t][i] = x0 + eps;
            BE->forward(a, o2, q, k, v, ATTN_KEEP_ROUTES);
            double cp = stat_of(a, "commit_loss");
            xs[t][i] = x0 - eps;
            BE->forward(a, out, q, k, v, ATTN_KEEP_ROUTES);
            double cm = stat_of(a, "commit_loss");
            double step = (double)(x0 + eps) - (double)(x0 - eps);
            xs[t][i] = x0;
            double num = 0;
            for (size_t j = 0; j < N; j++) num += ((double)o2[j] - out[j]) * R[j];
            num = (num + c.cw * (cp - cm)) / step;
            double err = fabs(num - g[t][i]);
            if (err > worst) worst = err, snprintf(where, sizeof where, "d%s[%zu] %.5g vs %.5g", nm[t], i, g[t][i], num);
        }
    int dk_zero = 1;
    if (p.share_qk)
        for (size_t i = 0; i < N; i++) dk_zero &= g[1][i] == 0.0f;
    diag("grad %s: max |analytic - numeric| = %.3g (max |grad| %.3g) at %s", desc(c), worst, gmax, where);
    ok(finite && worst <= 5e-3 * fmax(gmax, 0.1), "gradients match central differences: %s", desc(c));
    if (p.share_qk) ok(dk_zero, "shared Q=K writes dk = 0: %s", desc(c));
    free(q), free(k), free(v), free(R), free(out), free(o2);
    for (int t = 0; t < 3; t++) free(g[t]);
    BE->destroy(a);
}

/* Double-precision dense attention and its gradients. */
static void dense_ref(double *out, double *dq, double *dk, double *dv, const float *q, const float *k,
                      const float *v, const float *dout, int BH, int n, int d, int causal) {
    double scale = 1.0 / sqrt((double)d);
    double *P = mallocCheck((size_t)n * sizeof(double)), *dP = mallocCheck((size_t)n * sizeof(double));
    size_t nd = (size_t)n * d;
    memset(dq, 0, BH * nd * sizeof(double)), memset(dk, 0, BH * nd * sizeof(double));
    memset(dv, 0, BH * nd * sizeof(double));
    for (int bh = 0; bh < BH; bh++) {
        const float *Q = q + bh * nd, *Kk = k + bh * nd, *V = v + bh * nd, *G = dout + bh * nd;
        for (int i = 0; i < n; i++) {
            int L = causal ? i + 1 : n;
            double mx = -INFINITY, z = 0;
            for (int j = 0; j < L; j++) {
                double s = 0;
                for (int e = 0; e < d; e++) s += (double)Q[i * d + e] * Kk[j * d + e];
                P[j] = s * scale, mx = fmax(mx, P[j]);
            }
            for (int j = 0; j < L; j++) P[j] = exp(P[j] - mx), z += P[j];
            double Dsum = 0;
            for (int e = 0; e < d; e++) {
                double o = 0;
                for (int j = 0; j < L; j++) o += P[j] / z * V[j * d + e];
                out[bh * nd + i * d + e] = o;
                Dsum += o * G[i * d + e];
            }
            for (int j = 0; j < L; j++) {
                P[j] /= z;
                double s = 0;
                for (int e = 0; e < d; e++) s += (double)G[i * d + e] * V[j * d + e];
                dP[j] = s;
                for (int e = 0; e < d; e++) dv[bh * nd + j * d + e] += P[j] * G[i * d + e];
                double ds = P[j] * (dP[j] - Dsum) * scale;
                for (int e = 0; e < d; e++) {
                    dq[bh * nd + i * d + e] += ds * Kk[j * d + e];
                    dk[bh * nd + j * d + e] += ds * Q[i * d + e];
                }
            }
        }
    }
    free(P), free(dP);
}

static void test_dense(cfg c) {
    attn_params p;
    attn *a = make(c, &p);
    if (!ok(a != NULL, "create %s", desc(c))) return;
    ok(BE->equals_dense(&p), "equals_dense says so for %s", desc(c));
    size_t N = (size_t)c.B * c.H * c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 5 + c.n);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1), *g = randv(N, &r, 1);
    float *out = mallocCheck(N * 4), *dq = mallocCheck(N * 4), *dk = mallocCheck(N * 4), *dv = mallocCheck(N * 4);
    double *ro = mallocCheck(N * 8), *rq = mallocCheck(N * 8), *rk = mallocCheck(N * 8), *rv = mallocCheck(N * 8);
    BE->forward(a, out, q, k, v, ATTN_TRAIN);
    BE->backward(a, dq, dk, dv, g, q, k, v, out);
    dense_ref(ro, rq, rk, rv, q, k, v, g, c.B * c.H, c.n, c.d, c.causal);
    double worst[4] = {0}, big = 0;
    const float *mine[4] = {out, dq, dk, dv};
    const double *ref[4] = {ro, rq, rk, rv};
    for (int t = 0; t < 4; t++)
        for (size_t i = 0; i < N; i++)
            worst[t] = fmax(worst[t], fabs(mine[t][i] - ref[t][i])), big = fmax(big, fabs(ref[t][i]));
    diag("dense %s: max abs err out %.3g dq %.3g dk %.3g dv %.3g (max |ref| %.3g)", desc(c), worst[0], worst[1],
         worst[2], worst[3], big);
    ok(fmax(fmax(worst[0], worst[1]), fmax(worst[2], worst[3])) <= 2e-5 * fmax(1, big),
       "one cluster, window = seq, unshared equals dense (forward and gradients): %s", desc(c));
    free(q), free(k), free(v), free(g), free(out), free(dq), free(dk), free(dv);
    free(ro), free(rq), free(rk), free(rv);
    BE->destroy(a);
}

/* Causality: perturbing V (and, for argmax, Q and K) after position i never
 * changes output i. For topk, report how much later Q/K move output i. */
static void test_causal(cfg c) {
    attn_params p;
    attn *a = make(c, &p);
    if (!ok(a != NULL, "create %s", desc(c))) return;
    size_t N = (size_t)c.B * c.H * c.n * c.d, nd = (size_t)c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 77 + c.n);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1);
    float *o0 = mallocCheck(N * 4), *o1 = mallocCheck(N * 4);
    float *q2 = mallocCheck(N * 4), *k2 = mallocCheck(N * 4), *v2 = mallocCheck(N * 4);
    BE->forward(a, o0, q, k, v, ATTN_TRAIN); /* initialise centroids; then evaluation passes only */
    BE->forward(a, o0, q, k, v, ATTN_EVAL);
    double vleak = 0, qkleak = 0;
    int trials = 6;
    for (int t = 0; t < trials; t++) {
        int i = (int)rb_rng_below(&r, (uint32_t)(c.n - 1));
        for (int which = 0; which < 2; which++) { /* 0: V only; 1: Q and K */
            memcpy(q2, q, N * 4), memcpy(k2, k, N * 4), memcpy(v2, v, N * 4);
            for (size_t bh = 0; bh < (size_t)c.B * c.H; bh++)
                for (size_t e = bh * nd + (size_t)(i + 1) * c.d; e < (bh + 1) * nd; e++) {
                    if (which == 0) v2[e] += 3.0f * rb_rng_normal(&r);
                    else q2[e] += 3.0f * rb_rng_normal(&r), k2[e] += 3.0f * rb_rng_normal(&r);
                }
            BE->forward(a, o1, q2, k2, v2, ATTN_EVAL);
            double m = 0;
            for (size_t bh = 0; bh < (size_t)c.B * c.H; bh++)
                for (size_t e = bh * nd; e < bh * nd + (size_t)(i + 1) * c.d; e++) m = fmax(m, fabs(o1[e] - o0[e]));
            if (which == 0) vleak = fmax(vleak, m);
            else qkleak = fmax(qkleak, m);
        }
    }
    diag("causal %s: max change of out[<=i] from later V %.3g, from later Q/K %.3g", desc(c), vleak, qkleak);
    ok(vleak == 0.0, "later V never changes earlier outputs: %s", desc(c));
    if (c.assign == ATTN_ASSIGN_ARGMAX)
        /* routes of earlier tokens cannot change; only float rounding may, since
         * a cluster's size sets the sgemm tile shapes of all its rows */
        ok(qkleak <= 1e-5, "argmax: later Q/K never change earlier outputs beyond rounding: %s", desc(c));
    else
        ok(qkleak > 1e-3, "topk: later Q/K do move earlier outputs through the balanced choice (%.3g): %s", qkleak,
           desc(c));
    free(q), free(k), free(v), free(o0), free(o1), free(q2), free(k2), free(v2);
    BE->destroy(a);
}

/* Balance and statistics counted here from routes(); topk membership really
 * is each centroid's nearest `window`, argmax each token's nearest centroid. */
static void test_balance(cfg c) {
    attn_params p;
    attn *a = make(c, &p);
    if (!ok(a != NULL, "create %s", desc(c))) return;
    size_t N = (size_t)c.B * c.H * c.n * c.d, nd = (size_t)c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 3 + c.n);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1), *out = mallocCheck(N * 4);
    BE->forward(a, out, q, k, v, ATTN_EVAL);
    const float *mu = BE->centroids(a);
    int K = p.clusters, n = c.n, d = c.d, W = p.window;
    int *cnt = mallocCheck(n * sizeof(int));
    double *x = mallocCheck(nd * sizeof(double)), *dist = mallocCheck(n * sizeof(double));
    int sorted = 1, sizes_ok = 1, nearest_ok = 1, unrouted_zero = 1;
    double smin = 1e300, smax = 0, ssum = 0, unr = 0, multi = 0;
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++) {
            size_t bh = (size_t)b * c.H + h;
            for (int s = 0; s < (p.share_qk ? 1 : 2); s++) {
                const float *src = (s == 0 ? q : k) + bh * nd;
                for (int i = 0; i < n; i++) norm_row(x + (size_t)i * d, src + (size_t)i * d, d, c.norm);
                int total = 0;
                for (int cl = 0; cl < K; cl++) {
                    const int *m;
                    int cntm = BE->routes(a, b, h, cl, s, &m);
                    total += cntm;
                    if (c.assign == ATTN_ASSIGN_TOPK && cntm != W) sizes_ok = 0;
                    for (int t = 1; t < cntm; t++) sorted &= m[t] > m[t - 1];
                    if (s == 0) smin = fmin(smin, cntm), smax = fmax(smax, cntm), ssum += cntm;
                    /* distances of every token to this centroid */
                    const float *mc = mu + ((size_t)h * K + cl) * d;
                    for (int i = 0; i < n; i++) {
                        double t2 = 0;
                        for (int e = 0; e < d; e++) t2 += (x[(size_t)i * d + e] - mc[e]) * (x[(size_t)i * d + e] - mc[e]);
                        dist[i] = t2;
                    }
                    if (c.assign == ATTN_ASSIGN_TOPK) {
                        char *in = calloc(n, 1);
                        double worst_in = -1, best_out = 1e300;
                        for (int t = 0; t < cntm; t++) in[m[t]] = 1, worst_in = fmax(worst_in, dist[m[t]]);
                        for (int i = 0; i < n; i++)
                            if (!in[i]) best_out = fmin(best_out, dist[i]);
                        if (worst_in > best_out + 1e-5) nearest_ok = 0;
                        free(in);
                    } else {
                        for (int t = 0; t < cntm; t++) {
                            int i = m[t];
                            for (int o = 0; o < K; o++) {
                                const float *mo = mu + ((size_t)h * K + o) * d;
                                double t2 = 0;
                                for (int e = 0; e < d; e++)
                                    t2 += (x[(size_t)i * d + e] - mo[e]) * (x[(size_t)i * d + e] - mo[e]);
                                if (t2 < dist[i] - 1e-5) nearest_ok = 0;
                            }
                        }
                    }
                }
                if (c.assign == ATTN_ASSIGN_ARGMAX && total != n) sizes_ok = 0;
            }
            memset(cnt, 0, n * sizeof(int));
            for (int cl = 0; cl < K; cl++) {
                const int *m;
                int cm = BE->routes(a, b, h, cl, 0, &m);
                for (int t = 0; t < cm; t++) cnt[m[t]]++;
            }
            for (int i = 0; i < n; i++) {
                unr += cnt[i] == 0, multi += cnt[i] > 1;
                if (cnt[i] == 0)
                    for (int e = 0; e < d; e++) unrouted_zero &= out[bh * nd + (size_t)i * d + e] == 0.0f;
            }
        }
    double tok = (double)c.B * c.H * n;
    diag("balance %s: sizes %g..%g mean %g, unrouted %.3f multi %.3f; backend says %g..%g mean %g, %.3f %.3f",
         desc(c), smin, smax, ssum / (c.B * c.H * K), unr / tok, multi / tok, stat_of(a, "cluster_size_min"),
         stat_of(a, "cluster_size_max"), stat_of(a, "cluster_size_mean"), stat_of(a, "unrouted_share"),
         stat_of(a, "multi_routed_share"));
    ok(sizes_ok, c.assign == ATTN_ASSIGN_TOPK ? "topk: every cluster has exactly window members: %s"
                                             : "argmax: every token in exactly one cluster: %s",
       desc(c));
    ok(sorted, "members are in position order: %s", desc(c));
    ok(nearest_ok, "membership is the nearest by distance to the centroids: %s", desc(c));
    ok(unrouted_zero, "tokens no cluster picked get zero output: %s", desc(c));
    ok(stat_of(a, "cluster_size_min") == smin && stat_of(a, "cluster_size_max") == smax &&
           fabs(stat_of(a, "cluster_size_mean") - ssum / (c.B * c.H * K)) < 1e-9 &&
           fabs(stat_of(a, "unrouted_share") - unr / tok) < 1e-9 &&
           fabs(stat_of(a, "multi_routed_share") - multi / tok) < 1e-9,
       "statistics match a count from the routes: %s", desc(c));
    double cl = stat_of(a, "commit_loss"), obj = stat_of(a, "kmeans_objective");
    ok(isfinite(cl) && cl >= 0 && isfinite(obj) && fabs(obj - cl * n * (p.share_qk ? 1 : 2)) <= 1e-6 * fmax(1, obj),
       "commit_loss %.4g and kmeans_objective %.4g are reported and consistent: %s", cl, obj, desc(c));
    free(q), free(k), free(v), free(out), free(cnt), free(x), free(dist);
    BE->destroy(a);
}

static void test_validate(void) {
    struct {
        cfg c;
        const char *why;
    } bad[] = {
        {{1, 1, 16, 8, 1, 17, 0, -1, 0, 0, 0}, "clusters > seq"},
        {{1, 1, 16, 8, 1, 4, 17, -1, 0, 0, 0}, "window > seq"},
        {{1, 1, 16, 8, 1, 4, 4, 2, 0, 0, 0}, "share_qk out of range"},
        {{1, 1, 16, 8, 1, 4, 4, -1, 5, 0, 0}, "assign out of range"},
        {{1, 1, 16, 8, 1, 4, 4, -1, 0, 3, 0}, "norm out of range"},
        {{1, 1, 16, 8, 1, -1, 4, -1, 0, 0, 0}, "negative clusters"},
        {{1, 1, 16, 8, 1, 4, 4, -1, 0, 0, -1}, "negative commit weight"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        attn_params p = mkparams(bad[i].c);
        char err[256] = "";
        int rc = attn_validate_msg(BE, &p, err, sizeof err);
        ok(rc != 0 && err[0], "validate refuses %s (%s)", bad[i].why, err);
    }
    attn_params p = mkparams((cfg){1, 1, 100, 8, 1, 0, 0, -1, 0, 0, 0});
    char err[256];
    ok(attn_validate_msg(BE, &p, err, sizeof err) == 0 && p.clusters == 10 && p.window == 10 && p.share_qk == 1,
       "defaults: seq 100 -> clusters 10, window 10, shared when causal");
    p = mkparams((cfg){1, 1, 50, 8, 0, 0, 0, -1, 0, 0, 0});
    ok(attn_validate_msg(BE, &p, err, sizeof err) == 0 && p.clusters == 7 && p.window == 8 && p.share_qk == 0,
       "defaults: seq 50 -> clusters round(sqrt) = 7, window ceil(50/7) = 8, unshared when not causal");
}

/* Same inputs, same thread count: bit-identical outputs and gradients. */
static void test_determinism(cfg c) {
    size_t N = (size_t)c.B * c.H * c.n * c.d;
    rb_rng r;
    rb_rng_seed(&r, 9);
    float *q = randv(N, &r, 1), *k = randv(N, &r, 1), *v = randv(N, &r, 1), *g = randv(N, &r, 1);
    float *o[2], *dq[2], *dk[2], *dv[2];
    for (int t = 0; t < 2; t++) {
        attn_params p;
        attn *a = make(c, &p);
        o[t] = mallocCheck(N * 4), dq[t] = mallocCheck(N * 4), dk[t] = mallocCheck(N * 4), dv[t] = mallocCheck(N * 4);
        BE->forward(a, o[t], q, k, v, ATTN_TRAIN);
        BE->forward(a, o[t], q, k, v, ATTN_TRAIN);
        BE->backward(a, dq[t], dk[t], dv[t], g, q, k, v, o[t]);
        BE->destroy(a);
    }
    ok(!memcmp(o[0], o[1], N * 4) && !memcmp(dq[0], dq[1], N * 4) && !memcmp(dk[0], dk[1], N * 4) &&
           !memcmp(dv[0], dv[1], N * 4),
       "two instances with the same seed give identical results: %s", desc(c));
    for (int t = 0; t < 2; t++) free(o[t]), free(dq[t]), free(dk[t]), free(dv[t]);
    free(q), free(k), free(v), free(g);
}

int main(void) {
    rb_set_threads(0);
    test_validate();
    /* B H n d causal K w share assign norm cw */
    cfg refs[] = {
        {2, 2, 40, 8, 1, 6, 8, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {2, 2, 40, 8, 0, 6, 8, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 3, 37, 8, 1, 5, 0, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0},
        {1, 2, 37, 8, 0, 5, 0, 1, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0},
        {2, 2, 40, 8, 1, 4, 0, -1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
        {2, 1, 40, 8, 1, 4, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
        {1, 2, 40, 8, 0, 4, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 0},
        {1, 1, 300, 16, 1, 3, 100, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0}, /* multi-tile clusters, unrouted tokens */
        {1, 2, 300, 16, 1, 3, 0, -1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) test_reference(refs[i]);

    cfg grads[] = {
        {1, 2, 12, 4, 1, 3, 4, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {2, 1, 12, 4, 0, 3, 5, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 2, 12, 4, 1, 3, 4, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0},
        {1, 1, 16, 6, 1, 3, 0, -1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
        {1, 2, 12, 4, 0, 2, 0, 1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 0},
        {1, 2, 12, 4, 1, 3, 4, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0.5f},
        {1, 1, 12, 4, 0, 3, 4, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0.5f},
        {2, 1, 12, 4, 1, 2, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0.5f},
        {1, 1, 12, 4, 1, 2, 0, 1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 0.5f},
        {1, 1, 70, 4, 1, 2, 70, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0.1f}, /* two query tiles */
        /* window <= 4 head_dim: forward keeps the probabilities, backward reads them; two query tiles */
        {1, 1, 90, 24, 1, 2, 80, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0.1f},
        {1, 1, 90, 24, 1, 2, 80, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
    };
    for (size_t i = 0; i < sizeof grads / sizeof grads[0]; i++) test_grad(grads[i]);

    /* every query sees one key only (singleton clusters): dq must be exactly 0 */
    {
        cfg c = {1, 2, 7, 4, 0, 7, 1, 1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0};
        attn_params p;
        attn *a = make(c, &p);
        size_t N = (size_t)c.B * c.H * c.n * c.d;
        rb_rng r;
        rb_rng_seed(&r, 4);
        float *q = randv(N, &r, 1), *v = randv(N, &r, 1), *g = randv(N, &r, 1), *o = mallocCheck(N * 4);
        float *dq = mallocCheck(N * 4), *dk = mallocCheck(N * 4), *dv = mallocCheck(N * 4);
        BE->forward(a, o, q, q, v, ATTN_TRAIN);
        BE->backward(a, dq, dk, dv, g, q, q, v, o);
        double m = 0;
        for (size_t i = 0; i < N; i++) m = fmax(m, fabs(dq[i]));
        ok(m == 0.0, "a query with a single visible key gets exactly zero dq (max %.3g)", m);
        free(q), free(v), free(g), free(o), free(dq), free(dk), free(dv);
        BE->destroy(a);
    }

    cfg dense[] = {
        {2, 2, 33, 8, 1, 1, 33, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 3, 33, 8, 0, 1, 33, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 1, 150, 16, 1, 1, 150, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0},
        {1, 2, 100, 32, 1, 1, 100, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0}, /* kept probabilities, two tiles */
        {1, 2, 40, 8, 1, 1, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
    };
    for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) test_dense(dense[i]);

    cfg causal[] = {
        {1, 2, 64, 8, 1, 8, 8, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 2, 64, 8, 1, 8, 8, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 2, 64, 8, 1, 8, 0, -1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
        {1, 2, 64, 8, 1, 8, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 0},
    };
    for (size_t i = 0; i < sizeof causal / sizeof causal[0]; i++) test_causal(causal[i]);

    cfg bal[] = {
        {2, 2, 64, 8, 1, 8, 8, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {1, 2, 64, 8, 0, 8, 5, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_LAYERNORM, 0},
        {1, 2, 64, 8, 1, 8, 12, 0, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0},
        {2, 2, 64, 8, 1, 6, 0, -1, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0},
        {1, 1, 64, 8, 0, 6, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 0},
    };
    for (size_t i = 0; i < sizeof bal / sizeof bal[0]; i++) test_balance(bal[i]);

    test_determinism((cfg){2, 2, 256, 16, 1, 0, 0, -1, ATTN_ASSIGN_TOPK, ATTN_NORM_L2, 0.1f});
    test_determinism((cfg){1, 2, 256, 16, 1, 8, 0, 0, ATTN_ASSIGN_ARGMAX, ATTN_NORM_L2, 0.1f});
    return tap_done();
}
