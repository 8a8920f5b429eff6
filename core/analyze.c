/* analyze.c: the attention analysis of analyze.h. The probabilities come
 * from the backends themselves (one-hot V through their forward with the
 * routes of the model's pass kept), so what is measured is what training
 * used; only the dense reference is computed here, in double. Work is
 * parallel over (batch, head) and over head pairs; every sum is kept per
 * (batch, head) or per pair and reduced in a fixed order, and the random
 * floor draws from a stream seeded per (layer, call, batch, head), so the
 * numbers do not depend on the thread count. */
#include "analyze.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "plot.h"
#include "tasks.h"

/* ---- kinds ---- */

const char *analyze_kind_name(int kind) {
    static const char *const names[ANALYZE_NKINDS] = {"dense", "local", "routing"};
    return kind >= 0 && kind < ANALYZE_NKINDS ? names[kind] : "?";
}

const char *analyze_pair_name(int pair) {
    static const char *const names[ANALYZE_NPAIRS] = {"local_local", "local_routing", "routing_routing",
                                                      "dense_dense", "dense_local",   "dense_routing"};
    return pair >= 0 && pair < ANALYZE_NPAIRS ? names[pair] : "?";
}

int analyze_pair_of(int a, int b) {
    if (a > b) {
        int t = a;
        a = b, b = t;
    }
    if (a == ANALYZE_HEAD_LOCAL) return b == ANALYZE_HEAD_LOCAL ? ANALYZE_PAIR_LL : ANALYZE_PAIR_LR;
    if (a == ANALYZE_HEAD_ROUTING) return ANALYZE_PAIR_RR;
    return b == ANALYZE_HEAD_DENSE ? ANALYZE_PAIR_DD : b == ANALYZE_HEAD_LOCAL ? ANALYZE_PAIR_DL : ANALYZE_PAIR_DR;
}

/* Kinds are read off what the backend says it uses, so a new backend gets a
 * label without this file knowing its name: a head split (hybrid) puts the
 * local heads first, clusters mean content-based routing, a window alone
 * means a fixed local pattern. */
void analyze_head_kinds(const attn *a, int *kinds) {
    unsigned u = a->be->uses;
    int H = a->p.heads;
    for (int h = 0; h < H; h++) {
        if (u & ATTN_USES_LOCAL_HEADS) kinds[h] = h < a->p.local_heads ? ANALYZE_HEAD_LOCAL : ANALYZE_HEAD_ROUTING;
        else if (u & ATTN_USES_CLUSTERS) kinds[h] = ANALYZE_HEAD_ROUTING;
        else if (u & ATTN_USES_WINDOW) kinds[h] = ANALYZE_HEAD_LOCAL;
        else kinds[h] = ANALYZE_HEAD_DENSE;
    }
}

int analyze_head_shares_qk(const attn *a, int kind) {
    return kind == ANALYZE_HEAD_ROUTING && (a->be->uses & ATTN_USES_SHARE_QK) && a->p.share_qk == 1;
}

/* ---- per-row measures ---- */

static double row_sum(const float *p, int n) {
    double s = 0.0;
    for (int j = 0; j < n; j++) s += p[j];
    return s;
}

double analyze_entropy(const float *p, int n) {
    double s = row_sum(p, n);
    if (!(s > 0.0)) return NAN;
    double t = 0.0;
    for (int j = 0; j < n; j++)
        if (p[j] > 0.0f) {
            double x = p[j] / s;
            t -= x * log(x);
        }
    return t;
}

double analyze_jsd(const float *p, const float *q, int n) {
    double sp = row_sum(p, n), sq = row_sum(q, n);
    if (!(sp > 0.0) || !(sq > 0.0)) return NAN;
    double t = 0.0;
    for (int j = 0; j < n; j++) {
        double x = p[j] > 0.0f ? p[j] / sp : 0.0, y = q[j] > 0.0f ? q[j] / sq : 0.0, m = 0.5 * (x + y);
        if (x > 0.0) t += 0.5 * x * log(x / m);
        if (y > 0.0) t += 0.5 * y * log(y / m);
    }
    return t < 0.0 ? 0.0 : t; /* rounding can leave -1e-17 */
}

double analyze_kept_mass(const float *p, const double *pd, int n) {
    double s = 0.0;
    for (int j = 0; j < n; j++)
        if (p[j] > 0.0f) s += pd[j];
    return s;
}

double analyze_random_mass(const double *pd, int allowed, int size, int *idx, rb_rng *rng) {
    if (size > allowed) size = allowed;
    for (int j = 0; j < allowed; j++) idx[j] = j;
    double s = 0.0;
    /* partial Fisher-Yates: the first `size` entries are a uniform sample */
    for (int t = 0; t < size; t++) {
        int r = t + (int)rb_rng_below(rng, (uint32_t)(allowed - t));
        int x = idx[r];
        idx[r] = idx[t], idx[t] = x;
        s += pd[x];
    }
    return s;
}

void analyze_dense_probs(double *pd, const float *q, const float *keys, int n, int d, int causal) {
    double scale = 1.0 / sqrt((double)d);
    for (int i = 0; i < n; i++) {
        double *row = pd + (size_t)i * n;
        const float *qi = q + (size_t)i * d;
        int m = causal ? i + 1 : n;
        double mx = -INFINITY;
        for (int j = 0; j < m; j++) {
            const float *kj = keys + (size_t)j * d;
            double s = 0.0;
            for (int c = 0; c < d; c++) s += (double)qi[c] * kj[c];
            row[j] = s * scale;
            if (row[j] > mx) mx = row[j];
        }
        double z = 0.0;
        for (int j = 0; j < m; j++) z += row[j] = exp(row[j] - mx);
        for (int j = 0; j < m; j++) row[j] /= z;
        for (int j = m; j < n; j++) row[j] = 0.0;
    }
}

void analyze_probs(float *P, float *vbuf, float *obuf, attn *a, const float *q, const float *k) {
    int B = a->p.batch, H = a->p.heads, n = a->p.seq, d = a->p.head_dim;
    size_t BH = (size_t)B * H;
    for (int j0 = 0; j0 < n; j0 += d) {
        /* V[.,.,j,c] = 1 where j == j0 + c, so out[i, c] = P[i, j0 + c] */
        memset(vbuf, 0, BH * n * d * sizeof(float));
        for (size_t bh = 0; bh < BH; bh++)
            for (int c = 0; c < d && j0 + c < n; c++) vbuf[(bh * n + j0 + c) * d + c] = 1.0f;
        a->be->forward(a, obuf, q, k, vbuf, ATTN_EVAL | ATTN_KEEP_ROUTES);
        int w = RB_MIN(d, n - j0);
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < BH * n; r++) memcpy(P + r * n + j0, obuf + r * d, (size_t)w * sizeof(float));
    }
}

/* ---- accumulator ---- */

analyze_acc *analyze_acc_create(int L, int H, uint64_t seed) {
    assert(L > 0 && L <= TRAIN_MAX_LAYERS && H > 0);
    analyze_acc *acc = callocCheck(1, sizeof *acc);
    acc->L = L, acc->H = H, acc->seed = seed;
    size_t LH = (size_t)L * H;
    acc->kinds = callocCheck(LH, sizeof(int));
    acc->analysed = callocCheck(L, sizeof(int));
    acc->ent_sum = callocCheck(LH, sizeof(double));
    acc->kept_sum = callocCheck(LH, sizeof(double));
    acc->rand_sum = callocCheck(LH, sizeof(double));
    acc->rows = callocCheck(LH, sizeof(double));
    acc->unrouted = callocCheck(LH, sizeof(double));
    acc->jsd_sum = callocCheck(LH * H, sizeof(double));
    acc->jsd_rows = callocCheck(LH * H, sizeof(double));
    return acc;
}

void analyze_acc_free(analyze_acc *acc) {
    if (!acc) return;
    free(acc->kinds), free(acc->analysed), free(acc->ent_sum), free(acc->kept_sum), free(acc->rand_sum);
    free(acc->rows), free(acc->unrouted), free(acc->jsd_sum), free(acc->jsd_rows);
    free(acc->P), free(acc->vbuf), free(acc->obuf), free(acc->pd), free(acc->idx);
    free(acc);
}

/* Grow *buf to at least need elements of size sz; 0 or -1. */
static int grow(void **buf, size_t *have, size_t need, size_t sz) {
    if (*have >= need) return 0;
    void *p = rb_aligned_alloc(need * sz);
    if (!p) return -1;
    free(*buf);
    *buf = p;
    *have = need;
    return 0;
}

static void add_stats(analyze_acc *acc, int l, const attn *a) {
    acc->stat_batches[l]++;
    if (!a->be->stats) return;
    attn_stat st[64];
    int ns = a->be->stats(a, st, 64);
    for (int i = 0; i < ns; i++) {
        int j = 0;
        while (j < acc->nstats[l] && strcmp(acc->stat_names[l][j], st[i].name) != 0) j++;
        if (j == acc->nstats[l]) {
            if (j == ANALYZE_MAX_STATS) continue;
            snprintf(acc->stat_names[l][j], sizeof acc->stat_names[l][j], "%s", st[i].name);
            acc->stat_sum[l][j] = 0.0;
            acc->nstats[l]++;
        }
        acc->stat_sum[l][j] += st[i].value;
    }
}

int analyze_layer(analyze_acc *acc, int l, attn *a, const float *q, const float *k, char *err, size_t errlen) {
    assert(l >= 0 && l < acc->L && a->p.heads == acc->H);
    int B = a->p.batch, H = a->p.heads, n = a->p.seq, d = a->p.head_dim, causal = a->p.causal;
    size_t BH = (size_t)B * H, nn = (size_t)n * n;
    int nthr = omp_get_max_threads();
    size_t io = BH * n * d, pfl = BH * nn, pdd = (size_t)nthr * nn;
    if (grow((void **)&acc->P, &acc->P_floats, pfl, sizeof(float)) ||
        grow((void **)&acc->pd, &acc->pd_doubles, pdd, sizeof(double)))
        return rb_fail(err, errlen, "out of memory: the analysis holds %.1f MB of probabilities (batch * heads * seq^2)",
                       (pfl * 4.0 + pdd * 8.0) / 1e6);
    if (acc->io_floats < io) {
        free(acc->vbuf), free(acc->obuf), free(acc->idx);
        acc->vbuf = rb_aligned_alloc(io * sizeof(float));
        acc->obuf = rb_aligned_alloc(io * sizeof(float));
        acc->idx = rb_aligned_alloc((size_t)nthr * n * sizeof(int));
        acc->io_floats = acc->vbuf && acc->obuf && acc->idx ? io : 0;
        if (!acc->io_floats) return rb_fail(err, errlen, "out of memory for the analysis buffers");
    }
    int *kinds = acc->kinds + (size_t)l * H;
    analyze_head_kinds(a, kinds);
    acc->analysed[l] = 1;
    acc->layer_p[l] = a->p;
    acc->layer_backend[l] = a->be->name;
    long call = acc->stat_batches[l];
    add_stats(acc, l, a); /* the model's pass; before our passes replace the instance's state */

    analyze_probs(acc->P, acc->vbuf, acc->obuf, a, q, k);

    /* per (b,h): entropy, kept and random mass, rows, unrouted */
    double *part = callocCheck(5 * BH, sizeof(double));
    const float *P = acc->P;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t bh = 0; bh < BH; bh++) {
        int h = (int)(bh % H), t = omp_get_thread_num();
        double *pd = acc->pd + (size_t)t * nn;
        int *idx = acc->idx + (size_t)t * n;
        const float *qh = q + bh * n * d, *kh = (analyze_head_shares_qk(a, kinds[h]) ? q : k) + bh * n * d;
        int sparse = kinds[h] != ANALYZE_HEAD_DENSE;
        rb_rng rng;
        rb_rng_seed(&rng, acc->seed * 0x9E3779B97F4A7C15ull + (((uint64_t)l * 1000003u + (uint64_t)call) * 1000033u +
                                                                 bh) * 2654435761u + 12345u);
        if (sparse) analyze_dense_probs(pd, qh, kh, n, d, causal);
        double ent = 0, kept = 0, rnd = 0, rows = 0, unr = 0;
        for (int i = 0; i < n; i++) {
            const float *row = P + (bh * n + i) * n;
            double e = analyze_entropy(row, n);
            if (isnan(e)) {
                unr++;
                continue;
            }
            rows++;
            ent += e;
            if (sparse) {
                int size = 0;
                for (int j = 0; j < n; j++) size += row[j] > 0.0f;
                kept += analyze_kept_mass(row, pd + (size_t)i * n, n);
                rnd += analyze_random_mass(pd + (size_t)i * n, causal ? i + 1 : n, size, idx, &rng);
            }
        }
        double *o = part + 5 * bh;
        o[0] = ent, o[1] = kept, o[2] = rnd, o[3] = rows, o[4] = unr;
    }
    for (size_t bh = 0; bh < BH; bh++) {
        size_t lh = (size_t)l * H + bh % H;
        const double *o = part + 5 * bh;
        acc->ent_sum[lh] += o[0], acc->kept_sum[lh] += o[1], acc->rand_sum[lh] += o[2];
        acc->rows[lh] += o[3], acc->unrouted[lh] += o[4];
    }
    free(part);

    /* every pair of heads, over the rows both route */
    int npairs = H * (H - 1) / 2;
    if (npairs > 0) {
        double *js = callocCheck(2 * (size_t)npairs, sizeof(double));
#pragma omp parallel for schedule(dynamic, 1)
        for (int pi = 0; pi < npairs; pi++) {
            int h1 = 0, r = pi;
            while (r >= H - 1 - h1) r -= H - 1 - h1, h1++;
            int h2 = h1 + 1 + r;
            double s = 0, c = 0;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < n; i++) {
                    double v = analyze_jsd(P + (((size_t)b * H + h1) * n + i) * n, P + (((size_t)b * H + h2) * n + i) * n, n);
                    if (!isnan(v)) s += v, c++;
                }
            js[2 * pi] = s, js[2 * pi + 1] = c;
        }
        for (int h1 = 0, pi = 0; h1 < H; h1++)
            for (int h2 = h1 + 1; h2 < H; h2++, pi++) {
                size_t o = ((size_t)l * H + h1) * H + h2;
                acc->jsd_sum[o] += js[2 * pi], acc->jsd_rows[o] += js[2 * pi + 1];
            }
        free(js);
    }
    return 0;
}

/* ---- summaries ---- */

double analyze_head_entropy(const analyze_acc *acc, int l, int h) {
    size_t lh = (size_t)l * acc->H + h;
    return acc->rows[lh] > 0 ? acc->ent_sum[lh] / acc->rows[lh] : NAN;
}

double analyze_head_kept(const analyze_acc *acc, int l, int h) {
    size_t lh = (size_t)l * acc->H + h;
    return acc->rows[lh] > 0 && acc->kinds[lh] != ANALYZE_HEAD_DENSE ? acc->kept_sum[lh] / acc->rows[lh] : NAN;
}

double analyze_head_random(const analyze_acc *acc, int l, int h) {
    size_t lh = (size_t)l * acc->H + h;
    return acc->rows[lh] > 0 && acc->kinds[lh] != ANALYZE_HEAD_DENSE ? acc->rand_sum[lh] / acc->rows[lh] : NAN;
}

/* Mean over heads of kind (each head's own mean; heads weigh the same). */
static double kind_mean(const analyze_acc *acc, int l, int kind, double (*f)(const analyze_acc *, int, int)) {
    double s = 0;
    int c = 0;
    for (int ll = l < 0 ? 0 : l; ll < (l < 0 ? acc->L : l + 1); ll++) {
        if (!acc->analysed[ll]) continue;
        for (int h = 0; h < acc->H; h++) {
            if (acc->kinds[(size_t)ll * acc->H + h] != kind) continue;
            double v = f(acc, ll, h);
            if (!isnan(v)) s += v, c++;
        }
    }
    return c ? s / c : NAN;
}

double analyze_kind_kept(const analyze_acc *acc, int l, int kind) { return kind_mean(acc, l, kind, analyze_head_kept); }
double analyze_kind_random(const analyze_acc *acc, int l, int kind) {
    return kind_mean(acc, l, kind, analyze_head_random);
}

double analyze_pair_jsd(const analyze_acc *acc, int l, int pair, double *std, int *npairs) {
    double s = 0, s2 = 0;
    int c = 0, H = acc->H;
    for (int ll = l < 0 ? 0 : l; ll < (l < 0 ? acc->L : l + 1); ll++) {
        if (!acc->analysed[ll]) continue;
        const int *kd = acc->kinds + (size_t)ll * H;
        for (int h1 = 0; h1 < H; h1++)
            for (int h2 = h1 + 1; h2 < H; h2++) {
                size_t o = ((size_t)ll * H + h1) * H + h2;
                if (analyze_pair_of(kd[h1], kd[h2]) != pair || !(acc->jsd_rows[o] > 0)) continue;
                double v = acc->jsd_sum[o] / acc->jsd_rows[o];
                s += v, s2 += v * v, c++;
            }
    }
    if (npairs) *npairs = c;
    double mean = c ? s / c : NAN;
    if (std) *std = c > 1 ? sqrt(fmax(0.0, (s2 - c * mean * mean) / (c - 1))) : c == 1 ? 0.0 : NAN;
    return mean;
}

/* ---- output ---- */

int analyze_metrics_max(const analyze_acc *acc) {
    return 7 + acc->L * (acc->H * 5 + 2 * ANALYZE_NKINDS + 2 * ANALYZE_NPAIRS + ANALYZE_MAX_STATS) +
           2 * ANALYZE_NKINDS + 2 * ANALYZE_NPAIRS;
}

static void put(store_metric *out, int *n, int max, const char *name, double v) {
    if (*n >= max || isnan(v)) return;
    out[*n].step = -1;
    snprintf(out[*n].name, sizeof out[*n].name, "%s", name);
    out[*n].value = v;
    (*n)++;
}

int analyze_metrics(const analyze_acc *acc, store_metric *out, int max) {
    int n = 0;
    char nm[64];
    for (int l = 0; l < acc->L; l++) {
        if (!acc->analysed[l]) continue;
        for (int h = 0; h < acc->H; h++) {
            size_t lh = (size_t)l * acc->H + h;
            snprintf(nm, sizeof nm, "analyze.L%d.H%d.entropy", l, h), put(out, &n, max, nm, analyze_head_entropy(acc, l, h));
            snprintf(nm, sizeof nm, "analyze.L%d.H%d.kept_mass", l, h), put(out, &n, max, nm, analyze_head_kept(acc, l, h));
            snprintf(nm, sizeof nm, "analyze.L%d.H%d.random_mass", l, h),
                put(out, &n, max, nm, analyze_head_random(acc, l, h));
            snprintf(nm, sizeof nm, "analyze.L%d.H%d.rows", l, h), put(out, &n, max, nm, acc->rows[lh]);
            snprintf(nm, sizeof nm, "analyze.L%d.H%d.unrouted_rows", l, h), put(out, &n, max, nm, acc->unrouted[lh]);
        }
        for (int k = ANALYZE_HEAD_LOCAL; k < ANALYZE_NKINDS; k++) {
            snprintf(nm, sizeof nm, "analyze.L%d.kept_mass.%s", l, analyze_kind_name(k));
            put(out, &n, max, nm, analyze_kind_kept(acc, l, k));
            snprintf(nm, sizeof nm, "analyze.L%d.random_mass.%s", l, analyze_kind_name(k));
            put(out, &n, max, nm, analyze_kind_random(acc, l, k));
        }
        for (int p = 0; p < ANALYZE_NPAIRS; p++) {
            double sd;
            double m = analyze_pair_jsd(acc, l, p, &sd, NULL);
            snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s", l, analyze_pair_name(p)), put(out, &n, max, nm, m);
            snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s.std", l, analyze_pair_name(p)), put(out, &n, max, nm, sd);
        }
        for (int s = 0; s < acc->nstats[l]; s++) {
            snprintf(nm, sizeof nm, "analyze.L%d.%.40s", l, acc->stat_names[l][s]);
            put(out, &n, max, nm, acc->stat_sum[l][s] / acc->stat_batches[l]);
        }
    }
    for (int k = ANALYZE_HEAD_LOCAL; k < ANALYZE_NKINDS; k++) {
        snprintf(nm, sizeof nm, "analyze.kept_mass.%s", analyze_kind_name(k));
        put(out, &n, max, nm, analyze_kind_kept(acc, -1, k));
        snprintf(nm, sizeof nm, "analyze.random_mass.%s", analyze_kind_name(k));
        put(out, &n, max, nm, analyze_kind_random(acc, -1, k));
    }
    for (int p = 0; p < ANALYZE_NPAIRS; p++) {
        double sd;
        double m = analyze_pair_jsd(acc, -1, p, &sd, NULL);
        snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p)), put(out, &n, max, nm, m);
        snprintf(nm, sizeof nm, "analyze.jsd.%s.std", analyze_pair_name(p)), put(out, &n, max, nm, sd);
    }
    if (acc->loss_batches > 0) put(out, &n, max, "analyze.eval_loss", acc->loss_sum / acc->loss_batches);
    /* the resolved cluster count and window (auto in the configuration), the
     * kept-mass figure's x axis: from the first layer whose backend uses each */
    int have_k = 0, have_w = 0;
    for (int l = 0; l < acc->L; l++) {
        const attn_backend *be = acc->analysed[l] ? attn_find(acc->layer_backend[l]) : NULL;
        if (!be) continue;
        if (!have_k && (be->uses & ATTN_USES_CLUSTERS)) put(out, &n, max, "analyze.clusters", acc->layer_p[l].clusters), have_k = 1;
        if (!have_w && (be->uses & ATTN_USES_WINDOW)) put(out, &n, max, "analyze.window", acc->layer_p[l].window), have_w = 1;
    }
    return n;
}

static void print_num(FILE *f, double v, int width) {
    if (isnan(v)) fprintf(f, " %*s", width, "-");
    else fprintf(f, " %*.4f", width, v);
}

static void print_pm(FILE *f, double m, double sd, int width) {
    char buf[64];
    if (isnan(m)) snprintf(buf, sizeof buf, "-");
    else snprintf(buf, sizeof buf, "%.4f ± %.4f", m, sd);
    /* "±" is two bytes and one column */
    fprintf(f, " %*s", width + (isnan(m) ? 0 : 1), buf);
}

void analyze_print(FILE *f, const analyze_acc *acc) {
    fprintf(f, "Per head (entropy in nats over routed queries; kept = share of the dense softmax mass on the keys\n"
               "the head sees, random = the same for a random key set of the same size):\n\n");
    fprintf(f, "%5s %4s %-8s %9s %9s %9s %9s %9s\n", "layer", "head", "kind", "entropy", "kept", "random", "rows",
            "unrouted");
    for (int l = 0; l < acc->L; l++) {
        if (!acc->analysed[l]) continue;
        for (int h = 0; h < acc->H; h++) {
            size_t lh = (size_t)l * acc->H + h;
            fprintf(f, "%5d %4d %-8s", l, h, analyze_kind_name(acc->kinds[lh]));
            print_num(f, analyze_head_entropy(acc, l, h), 9);
            print_num(f, analyze_head_kept(acc, l, h), 9);
            print_num(f, analyze_head_random(acc, l, h), 9);
            fprintf(f, " %9.0f %9.0f\n", acc->rows[lh], acc->unrouted[lh]);
        }
    }
    /* the paper's table: one row per layer, three pair groups */
    int shown[ANALYZE_NPAIRS] = {0}, any = 0;
    for (int p = 0; p < ANALYZE_NPAIRS; p++) {
        int c;
        analyze_pair_jsd(acc, -1, p, NULL, &c);
        shown[p] = c > 0 || p <= ANALYZE_PAIR_RR;
        any |= c > 0;
    }
    if (any) {
        fprintf(f, "\nJensen-Shannon divergence between the attention distributions of pairs of heads\n"
                   "(nats, at most ln 2 = 0.6931; mean ± std over the pairs of the layer):\n\n%5s", "layer");
        for (int p = 0; p < ANALYZE_NPAIRS; p++)
            if (shown[p]) fprintf(f, " %17s", analyze_pair_name(p));
        fprintf(f, "\n");
        for (int l = 0; l < acc->L; l++) {
            if (!acc->analysed[l]) continue;
            fprintf(f, "%5d", l);
            for (int p = 0; p < ANALYZE_NPAIRS; p++) {
                if (!shown[p]) continue;
                double sd, m = analyze_pair_jsd(acc, l, p, &sd, NULL);
                print_pm(f, m, sd, 17);
            }
            fprintf(f, "\n");
        }
        fprintf(f, "%5s", "all");
        for (int p = 0; p < ANALYZE_NPAIRS; p++) {
            if (!shown[p]) continue;
            double sd, m = analyze_pair_jsd(acc, -1, p, &sd, NULL);
            print_pm(f, m, sd, 17);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\nKept dense mass against the random floor (mean over heads of the kind):\n\n%5s %13s %13s %13s %13s\n",
            "layer", "local", "local random", "routing", "rout. random");
    for (int l = 0; l <= acc->L; l++) {
        int ll = l == acc->L ? -1 : l;
        if (ll >= 0 && !acc->analysed[ll]) continue;
        if (ll < 0) fprintf(f, "%5s", "all");
        else fprintf(f, "%5d", ll);
        print_num(f, analyze_kind_kept(acc, ll, ANALYZE_HEAD_LOCAL), 13);
        print_num(f, analyze_kind_random(acc, ll, ANALYZE_HEAD_LOCAL), 13);
        print_num(f, analyze_kind_kept(acc, ll, ANALYZE_HEAD_ROUTING), 13);
        print_num(f, analyze_kind_random(acc, ll, ANALYZE_HEAD_ROUTING), 13);
        fprintf(f, "\n");
    }
    int hdr = 0;
    for (int l = 0; l < acc->L; l++) {
        if (!acc->nstats[l] || !acc->stat_batches[l]) continue;
        if (!hdr) fprintf(f, "\nBackend statistics (mean over the evaluation batches):\n\n"), hdr = 1;
        fprintf(f, "layer %d:", l);
        for (int s = 0; s < acc->nstats[l]; s++)
            fprintf(f, "%s %s %.6g", s ? "," : "", acc->stat_names[l][s], acc->stat_sum[l][s] / acc->stat_batches[l]);
        fprintf(f, "\n");
    }
}

/* ---- a whole model ---- */

int analyze_checkpoint(const train_config *cin, const char *ckpt, const analyze_options *o, analyze_acc **out,
                       char *err, size_t errlen) {
    *out = NULL;
    train_config c = *cin;
    char msg[1024];
    if (train_config_check(&c, msg, sizeof msg) != 0) return rb_fail(err, errlen, "configuration: %s", msg);
    if (o->batches < 1) return rb_fail(err, errlen, "batches must be at least 1 (got %d)", o->batches);
    if (o->split != TASK_VAL && o->split != TASK_TEST)
        return rb_fail(err, errlen, "the analysis reads held-out data: validation or test split");
    model *m = model_create(&c, msg, sizeof msg);
    if (!m) return rb_fail(err, errlen, "%s", msg);
    int step = 0;
    rb_rng rng;
    rb_rng_seed(&rng, 0);
    if (checkpoint_load(ckpt, m, &step, &rng, train_config_hash(&c), msg, sizeof msg) != 0) {
        model_free(m);
        return rb_fail(err, errlen, "%s (options that change the model's shape or backends do not apply to a checkpoint; a version-1 checkpoint needs every option it was trained with)", msg);
    }
    task *t = task_open(&c, msg, sizeof msg);
    if (!t) {
        model_free(m);
        return rb_fail(err, errlen, "%s", msg);
    }
    size_t BT = (size_t)m->B * m->T;
    int *tokens = mallocCheck(BT * sizeof(int)), *targets = mallocCheck(BT * sizeof(int));
    float *mask = mallocCheck(BT * sizeof(float));
    analyze_acc *acc = analyze_acc_create(m->L, m->H, c.seed);
    /* the same held-out sequences the training run's evaluation saw */
    rb_rng_seed(&rng, task_stream_seed(c.seed, o->split, 1));
    int rc = 0;
    for (int i = 0; i < o->batches && rc == 0; i++) {
        if (task_batch(t, o->split, &rng, m->B, m->T, tokens, targets, mask, msg, sizeof msg) != 0) {
            rc = rb_fail(err, errlen, "%s", msg);
            break;
        }
        model_forward(m, tokens, targets, mask, ATTN_EVAL);
        acc->loss_sum += m->ce_loss, acc->loss_batches++;
        for (int l = 0; l < m->L && rc == 0; l++) {
            const float *q, *k;
            model_layer_qkv(m, l, &q, &k, NULL);
            rc = analyze_layer(acc, l, model_layer_attn(m, l), q, k, err, errlen);
        }
    }
    free(tokens), free(targets), free(mask);
    task_free(t);
    model_free(m);
    if (rc != 0) {
        analyze_acc_free(acc);
        return -1;
    }
    *out = acc;
    return 0;
}

/* ---- results databases ---- */

/* Mean and std over the done trials of g of metric name; *n of them. */
static double group_metric(const rpt_db *d, const rpt_group *g, const char *name, double *sd, int *n) {
    double s = 0, s2 = 0;
    int c = 0;
    for (int i = 0; i < g->n; i++) {
        const rpt_trial *t = &d->t[g->ti[i]];
        if (strcmp(t->status, ST_DONE) != 0) continue;
        double v = rpt_metric(t, name);
        if (isnan(v)) continue;
        s += v, s2 += v * v, c++;
    }
    *n = c;
    double m = c ? s / c : NAN;
    *sd = c > 1 ? sqrt(fmax(0.0, (s2 - c * m * m) / (c - 1))) : NAN;
    return m;
}

int analyze_jsd_table(rpt_table *tb, const rpt_db *d, int format, char *err, size_t errlen) {
    rpt_group *g;
    int ng;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen) != 0) return -1;
    int *varying = callocCheck((size_t)(d->np ? d->np : 1), sizeof(int));
    rpt_varying(d, g, ng, varying);
    /* which pair groups appear at all */
    int show[ANALYZE_NPAIRS] = {0}, any = 0, multi = 0;
    char nm[64];
    for (int gi = 0; gi < ng; gi++)
        for (int p = 0; p < ANALYZE_NPAIRS; p++) {
            double sd;
            int n;
            snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p));
            group_metric(d, &g[gi], nm, &sd, &n);
            if (n > 0) show[p] = 1, any = 1;
            if (n > 1) multi = 1;
        }
    if (!any) {
        free(varying), rpt_groups_free(g, ng);
        return rb_fail(err, errlen, "%s has no analyze measures (analyze.jsd.*): run `routebench analyze CHECKPOINT --db` "
                                    "or an analyze sweep first", d->path);
    }
    for (int p = 0; p <= ANALYZE_PAIR_RR; p++) show[p] = 1; /* the paper's three always */
    const char *head[2 + 2 * ANALYZE_NPAIRS];
    char hbuf[ANALYZE_NPAIRS][2][64], align[2 + 2 * ANALYZE_NPAIRS + 1];
    int nc = 0;
    head[nc] = "configuration", align[nc++] = 'l';
    head[nc] = "layer", align[nc++] = 'r';
    for (int p = 0; p < ANALYZE_NPAIRS; p++) {
        if (!show[p]) continue;
        snprintf(hbuf[p][0], sizeof hbuf[p][0], "%s", analyze_pair_name(p));
        for (char *c = hbuf[p][0]; *c; c++)
            if (*c == '_') *c = '-';
        head[nc] = hbuf[p][0], align[nc++] = 'r';
        if (format == RPT_CSV) {
            memcpy(hbuf[p][1], hbuf[p][0], sizeof hbuf[p][0]);
            strncat(hbuf[p][1], " std", sizeof hbuf[p][1] - strlen(hbuf[p][1]) - 1);
            head[nc] = hbuf[p][1], align[nc++] = 'r';
        }
    }
    align[nc] = 0;
    rpt_table_init(tb, nc, head, align);
    snprintf(tb->caption, sizeof tb->caption,
             "Jensen-Shannon divergence (nats, at most ln 2 = 0.6931) between the attention distributions of pairs "
             "of heads, per layer, on held-out data: mean %s.",
             multi ? "± std over seeds (trials of the configuration)"
                   : "± std over the head pairs of the layer (one trial per configuration)");
    char cells[2 + 2 * ANALYZE_NPAIRS][300];
    const char *row[2 + 2 * ANALYZE_NPAIRS];
    for (int gi = 0; gi < ng; gi++) {
        char label[256];
        rpt_group_label(d, &g[gi], varying, label, sizeof label);
        if (!label[0]) snprintf(label, sizeof label, "%s", d->t[g[gi].first].backend ? d->t[g[gi].first].backend : "");
        /* a layer is shown when it has any pair measure; ll = -1: all layers, last */
        for (int step = 0; step <= TRAIN_MAX_LAYERS; step++) {
            int ll = step < TRAIN_MAX_LAYERS ? step : -1, have = 0, c = 0;
            snprintf(cells[c], sizeof cells[c], "%s", label), row[c] = cells[c], c++;
            if (ll < 0) snprintf(cells[c], sizeof cells[c], "all");
            else snprintf(cells[c], sizeof cells[c], "%d", ll);
            row[c] = cells[c], c++;
            for (int p = 0; p < ANALYZE_NPAIRS; p++) {
                if (!show[p]) continue;
                double sd, dummy;
                int n, n2;
                if (ll < 0) snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p));
                else snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s", ll, analyze_pair_name(p));
                double m = group_metric(d, &g[gi], nm, &sd, &n);
                strncat(nm, ".std", sizeof nm - strlen(nm) - 1);
                double psd = group_metric(d, &g[gi], nm, &dummy, &n2);
                double spread = n > 1 ? sd : psd;
                have |= n > 0;
                if (format == RPT_CSV) {
                    if (n > 0) snprintf(cells[c], sizeof cells[c], "%.6g", m);
                    else cells[c][0] = 0;
                    row[c] = cells[c], c++;
                    if (n > 0 && !isnan(spread)) snprintf(cells[c], sizeof cells[c], "%.6g", spread);
                    else cells[c][0] = 0;
                    row[c] = cells[c], c++;
                } else {
                    if (n == 0) snprintf(cells[c], sizeof cells[c], "-");
                    else if (isnan(spread)) snprintf(cells[c], sizeof cells[c], "%.4f", m);
                    else snprintf(cells[c], sizeof cells[c], format == RPT_TEX ? "%.4f $\\pm$ %.4f" : "%.4f ± %.4f", m,
                                  spread);
                    row[c] = cells[c], c++;
                }
            }
            if (have) rpt_table_add_row(tb, row);
        }
    }
    free(varying), rpt_groups_free(g, ng);
    return 0;
}

/* s inside a single-quoted gnuplot string */
static void gp_quote(char *out, size_t len, const char *s) {
    size_t o = 0;
    for (; s && *s && o + 3 < len; s++) {
        if (*s == '\'') out[o++] = '\'';
        out[o++] = (unsigned char)*s < 32 ? ' ' : *s;
    }
    out[o] = 0;
}

typedef struct {
    double x, kept, rnd;
} kept_pt;

static int cmp_kept_pt(const void *a, const void *b) {
    double x = ((const kept_pt *)a)->x, y = ((const kept_pt *)b)->x;
    return (x > y) - (x < y);
}

int analyze_plot_kept(const rpt_db *d, const char *dir, const char *format, int dumb, int quiet, char *err,
                      size_t errlen) {
    const char *term = NULL;
    if (!dumb && !(term = plot_terminal(format, err, errlen))) return -1;
    rpt_group *g;
    int ng;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen) != 0) return -1;
    int ix[ANALYZE_NKINDS] = {-1, rpt_param_index(d, "window"), rpt_param_index(d, "clusters")};
    int iseq = rpt_param_index(d, "seq");
    /* several sequence lengths split the lines */
    int multi_seq = 0;
    for (int gi = 1; gi < ng && iseq >= 0; gi++) {
        const char *a = d->t[g[0].first].pv[iseq], *b = d->t[g[gi].first].pv[iseq];
        multi_seq |= (a && b && strcmp(a, b) != 0);
    }
    int maxs = 2 * ng + 1, ns = 0;
    char (*label)[160] = callocCheck((size_t)maxs, sizeof *label);
    kept_pt *pts = callocCheck((size_t)maxs * (ng + 1), sizeof *pts);
    int *np = callocCheck((size_t)maxs, sizeof(int));
    for (int gi = 0; gi < ng; gi++) {
        const rpt_trial *t0 = &d->t[g[gi].first];
        for (int k = ANALYZE_HEAD_LOCAL; k < ANALYZE_NKINDS; k++) {
            char nm[64];
            double sd;
            int n;
            snprintf(nm, sizeof nm, "analyze.kept_mass.%s", analyze_kind_name(k));
            double kept = group_metric(d, &g[gi], nm, &sd, &n);
            snprintf(nm, sizeof nm, "analyze.random_mass.%s", analyze_kind_name(k));
            double rnd = group_metric(d, &g[gi], nm, &sd, &n);
            /* x: the resolved value the analysis recorded, else the trial's parameter */
            double x = group_metric(d, &g[gi], k == ANALYZE_HEAD_ROUTING ? "analyze.clusters" : "analyze.window", &sd, &n);
            const char *xs = ix[k] >= 0 ? t0->pv[ix[k]] : NULL;
            if (isnan(x) && xs) x = atof(xs);
            if (isnan(kept) || isnan(x)) continue;
            char lb[160];
            snprintf(lb, sizeof lb, "%.40s %s heads%s%.20s", t0->backend ? t0->backend : "?", analyze_kind_name(k),
                     multi_seq ? " n=" : "", multi_seq && t0->pv[iseq] ? t0->pv[iseq] : "");
            int s = 0;
            while (s < ns && strcmp(label[s], lb) != 0) s++;
            if (s == ns) snprintf(label[ns++], sizeof label[0], "%s", lb);
            pts[(size_t)s * (ng + 1) + np[s]++] = (kept_pt){x, kept, rnd};
        }
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/kept_mass.dat", dir);
    FILE *df = fopen(path, "w");
    snprintf(path, sizeof path, "%s/kept_mass.gp", dir);
    FILE *gf = fopen(path, "w");
    int rc = 0;
    if (!df || !gf) rc = rb_fail(err, errlen, "cannot write %s/kept_mass.dat and .gp", dir);
    if (rc == 0) {
        fprintf(df, "# kept_mass.dat: kept dense attention mass against clusters (routing heads) or window (local "
                    "heads), with the random floor (routebench plot, %s)\n",
                d->path);
        char q[600];
        gp_quote(q, sizeof q, d->path);
        fprintf(gf, "# kept_mass.gp: written by `routebench plot` from %s.\n# Edit it and rerun `gnuplot kept_mass.gp` in "
                    "this directory; the data is in kept_mass.dat.\n", q);
        if (dumb) fprintf(gf, "set terminal dumb size 110,32\n");
        else if (!strcmp(term, "pngcairo")) fprintf(gf, "set terminal pngcairo size 900,600 noenhanced font ',10'\n");
        else if (!strcmp(term, "svg")) fprintf(gf, "set terminal svg size 900,600 noenhanced background rgb 'white'\n");
        else fprintf(gf, "set terminal %s noenhanced\n", term);
        if (!dumb) fprintf(gf, "set output 'kept_mass.%s'\n", format);
        fprintf(gf, "set termoption noenhanced\nset grid lc rgb '#dddddd'\nset key outside right top box\n"
                    "set title 'share of the dense attention mass each sparse head keeps (dashed: random pattern of the "
                    "same size)'\n"
                    "set xlabel 'clusters (routing heads) / window (local heads)'\nset ylabel 'kept dense mass'\n"
                    "set yrange [0:1.05]\n");
        if (ns == 0) {
            fprintf(gf, "unset key\nunset xtics\nunset ytics\nset label 1 'no analyze measures in this database "
                        "(routebench analyze --db, or an analyze sweep)' at graph 0.5, graph 0.5 center\n"
                        "plot [0:1][0:1] -1 notitle\n");
        } else {
            fprintf(gf, "set logscale x 2\nplot \\\n");
            for (int s = 0; s < ns; s++) {
                kept_pt *ps = pts + (size_t)s * (ng + 1);
                qsort(ps, (size_t)np[s], sizeof *ps, cmp_kept_pt);
                fprintf(df, "%s# %s: x kept random\n", s ? "\n\n" : "", label[s]);
                for (int i = 0; i < np[s]; i++) fprintf(df, "%g\t%.6f\t%.6f\n", ps[i].x, ps[i].kept, ps[i].rnd);
                gp_quote(q, sizeof q, label[s]);
                fprintf(gf, "  'kept_mass.dat' index %d using 1:2 with linespoints lw 2 pt 7 lc %d title '%s', \\\n"
                            "  'kept_mass.dat' index %d using 1:3 with linespoints dt 2 pt 6 lc %d title '%s random'%s\n",
                        s, s + 1, q, s, s + 1, q, s + 1 < ns ? ", \\" : "");
            }
        }
    }
    if (df && fclose(df) != 0 && rc == 0) rc = rb_fail(err, errlen, "%s/kept_mass.dat: write error", dir);
    if (gf && fclose(gf) != 0 && rc == 0) rc = rb_fail(err, errlen, "%s/kept_mass.gp: write error", dir);
    if (rc == 0) {
        if (dumb) printf("\n== kept_mass ==\n");
        rc = plot_run_gnuplot(dir, "kept_mass.gp", err, errlen);
    }
    if (rc == 0 && !dumb && !quiet) printf("wrote %s/kept_mass.%s\n", dir, format);
    free(label), free(pts), free(np);
    rpt_groups_free(g, ng);
    return rc;
}
