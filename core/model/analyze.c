/* analyze.c: the attention analysis of analyze.h. The probabilities come
 * from the backends themselves (one-hot V through their forward with the
 * routes of the model's pass kept), so what is measured is what training
 * used; only the dense reference is computed here, in double. Work is
 * parallel over (batch, head) and over head pairs; every sum is kept per
 * (batch, head) or per pair and reduced in a fixed order, and the random
 * floor draws from a stream seeded per (layer, call, batch, head), so the
 * numbers do not depend on the thread count. */
#include "model/analyze.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/model.h"
#include "model/tasks.h"

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

/* The scratch of one layer's analysis, grown to its sizes. */
static int layer_scratch(analyze_acc *acc, const attn_params *p, char *err, size_t errlen) {
    size_t BH = (size_t)p->batch * p->heads, nn = (size_t)p->seq * p->seq;
    int nthr = omp_get_max_threads();
    size_t io = BH * p->seq * p->head_dim, pfl = BH * nn, pdd = (size_t)nthr * nn;
    if (grow((void **)&acc->P, &acc->P_floats, pfl, sizeof(float)) ||
        grow((void **)&acc->pd, &acc->pd_doubles, pdd, sizeof(double)))
        return rb_fail(err, errlen, "out of memory: the analysis holds %.1f MB of probabilities (batch * heads * seq^2)",
                       (pfl * 4.0 + pdd * 8.0) / 1e6);
    if (acc->io_floats >= io) return 0;
    free(acc->vbuf), free(acc->obuf), free(acc->idx);
    acc->vbuf = rb_aligned_alloc(io * sizeof(float));
    acc->obuf = rb_aligned_alloc(io * sizeof(float));
    acc->idx = rb_aligned_alloc((size_t)nthr * p->seq * sizeof(int));
    acc->io_floats = acc->vbuf && acc->obuf && acc->idx ? io : 0;
    return acc->io_floats ? 0 : rb_fail(err, errlen, "out of memory for the analysis buffers");
}

/* Per (batch, head) bh of layer l: entropy, kept and random mass, rows and
 * unrouted rows summed into o[0..4]. rng is seeded per (layer, call, bh), so
 * the numbers do not depend on the thread count. */
static void head_measures(const analyze_acc *acc, int l, long call, const attn *a, const int *kinds, size_t bh,
                          const float *q, const float *k, double *o) {
    int H = a->p.heads, n = a->p.seq, d = a->p.head_dim, causal = a->p.causal;
    int h = (int)(bh % H), t = omp_get_thread_num();
    double *pd = acc->pd + (size_t)t * n * n;
    int *idx = acc->idx + (size_t)t * n;
    const float *qh = q + bh * n * d, *kh = (analyze_head_shares_qk(a, kinds[h]) ? q : k) + bh * n * d;
    int sparse = kinds[h] != ANALYZE_HEAD_DENSE;
    rb_rng rng;
    rb_rng_seed(&rng, acc->seed * 0x9E3779B97F4A7C15ull +
                          (((uint64_t)l * 1000003u + (uint64_t)call) * 1000033u + bh) * 2654435761u + 12345u);
    if (sparse) analyze_dense_probs(pd, qh, kh, n, d, causal);
    double ent = 0, kept = 0, rnd = 0, rows = 0, unr = 0;
    for (int i = 0; i < n; i++) {
        const float *row = acc->P + (bh * n + i) * n;
        double e = analyze_entropy(row, n);
        if (isnan(e)) {
            unr++;
            continue;
        }
        rows++;
        ent += e;
        if (!sparse) continue;
        int size = 0;
        for (int j = 0; j < n; j++) size += row[j] > 0.0f;
        kept += analyze_kept_mass(row, pd + (size_t)i * n, n);
        rnd += analyze_random_mass(pd + (size_t)i * n, causal ? i + 1 : n, size, idx, &rng);
    }
    o[0] = ent, o[1] = kept, o[2] = rnd, o[3] = rows, o[4] = unr;
}

/* Every pair of heads of layer l, over the rows both route: JSD sums. */
static void pair_measures(analyze_acc *acc, int l, const attn_params *p) {
    int B = p->batch, H = p->heads, n = p->seq, npairs = H * (H - 1) / 2;
    if (npairs <= 0) return;
    const float *P = acc->P;
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
    for (int h1 = 0, pi = 0; h1 < H; h1++) /* reduced in a fixed order */
        for (int h2 = h1 + 1; h2 < H; h2++, pi++) {
            size_t o = ((size_t)l * H + h1) * H + h2;
            acc->jsd_sum[o] += js[2 * pi], acc->jsd_rows[o] += js[2 * pi + 1];
        }
    free(js);
}

int analyze_layer(analyze_acc *acc, int l, attn *a, const float *q, const float *k, char *err, size_t errlen) {
    assert(l >= 0 && l < acc->L && a->p.heads == acc->H);
    int H = a->p.heads;
    size_t BH = (size_t)a->p.batch * H;
    if (layer_scratch(acc, &a->p, err, errlen) != 0) return -1;
    int *kinds = acc->kinds + (size_t)l * H;
    analyze_head_kinds(a, kinds);
    acc->analysed[l] = 1;
    acc->layer_p[l] = a->p;
    acc->layer_backend[l] = a->be->name;
    long call = acc->stat_batches[l];
    add_stats(acc, l, a); /* the model's pass; before our passes replace the instance's state */
    analyze_probs(acc->P, acc->vbuf, acc->obuf, a, q, k);
    double *part = callocCheck(5 * BH, sizeof(double));
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t bh = 0; bh < BH; bh++) head_measures(acc, l, call, a, kinds, bh, q, k, part + 5 * bh);
    for (size_t bh = 0; bh < BH; bh++) { /* reduced in a fixed order */
        size_t lh = (size_t)l * H + bh % H;
        const double *o = part + 5 * bh;
        acc->ent_sum[lh] += o[0], acc->kept_sum[lh] += o[1], acc->rand_sum[lh] += o[2];
        acc->rows[lh] += o[3], acc->unrouted[lh] += o[4];
    }
    free(part);
    pair_measures(acc, l, &a->p);
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
    if (std) *std = c > 1 ? sqrt(fmax(0.0, (s2 - c * mean * mean) / (c - 1))) : NAN; /* no spread from one pair */
    return mean;
}

/* ---- output ---- */

int analyze_metrics_max(const analyze_acc *acc) {
    return 7 + acc->L * (acc->H * 5 + 2 * ANALYZE_NKINDS + 3 * ANALYZE_NPAIRS + ANALYZE_MAX_STATS) +
           2 * ANALYZE_NKINDS + 3 * ANALYZE_NPAIRS;
}

static void put(rb_metric *out, int *n, int max, const char *name, double v) {
    if (*n >= max || isnan(v)) return;
    out[*n].step = -1;
    snprintf(out[*n].name, sizeof out[*n].name, "%s", name);
    out[*n].value = v;
    (*n)++;
}

int analyze_metrics(const analyze_acc *acc, rb_metric *out, int max) {
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
            int np;
            double m = analyze_pair_jsd(acc, l, p, &sd, &np);
            snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s", l, analyze_pair_name(p)), put(out, &n, max, nm, m);
            snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s.std", l, analyze_pair_name(p)), put(out, &n, max, nm, sd);
            if (np) snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s.pairs", l, analyze_pair_name(p)), put(out, &n, max, nm, np);
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
        int np;
        double m = analyze_pair_jsd(acc, -1, p, &sd, &np);
        snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p)), put(out, &n, max, nm, m);
        snprintf(nm, sizeof nm, "analyze.jsd.%s.std", analyze_pair_name(p)), put(out, &n, max, nm, sd);
        if (np) snprintf(nm, sizeof nm, "analyze.jsd.%s.pairs", analyze_pair_name(p)), put(out, &n, max, nm, np);
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
    if (o->batches < 1) return rb_fail(err, errlen, "batches must be at least 1 (got %d)", o->batches);
    if (o->split != TASK_VAL && o->split != TASK_TEST)
        return rb_fail(err, errlen, "the analysis reads held-out data: validation or test split");
    model *m = checkpoint_model(&c, ckpt, NULL,
                                "options that change the model's shape or backends do not apply to a checkpoint; a "
                                "version-1 checkpoint needs every option it was trained with",
                                err, errlen);
    if (!m) return -1;
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
    rb_rng rng;
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
