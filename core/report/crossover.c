/* crossover.c: see crossover.h. */
#include "report/crossover.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

double rpt_cross_first_below(const double *x, const double *y, int n, int *kase) {
    *kase = RPT_X_NODATA;
    if (n <= 0) return NAN;
    if (y[0] < 0) return *kase = RPT_X_BELOW_FIRST, x[0];
    for (int i = 1; i < n; i++) {
        if (!(y[i] < 0)) continue;
        double a = log(x[i - 1]), b = log(x[i]), f = y[i - 1] / (y[i - 1] - y[i]);
        *kase = RPT_X_AT;
        return exp(a + f * (b - a));
    }
    *kase = RPT_X_NOT_WITHIN;
    return NAN;
}

static double num(const char *s) { return s ? atof(s) : NAN; }

/* Add the point of group k (with dense match j) to series c. */
static void add_point(const rpt_db *d, const rpt_group *g, int k, int j, double x, rpt_cross *c) {
    double s, lo, hi, la = rpt_group_value(d, &g[k], "loss"), lb = rpt_group_value(d, &g[j], "loss");
    for (int i = 0; i < c->n; i++)
        if (c->x[i] == x) return; /* one point per length */
    if (rpt_speedup(d, &g[k], &g[j], "time", &s, &lo, &hi) == 0) {
        c->x[c->n] = x, c->ratio[c->n] = 1 / s, c->rlo[c->n] = 1 / hi, c->rhi[c->n] = 1 / lo;
        c->noisy[c->n++] = rpt_group_noisy(d, &g[k], NULL, 0) + rpt_group_noisy(d, &g[j], NULL, 0);
    }
    if (isfinite(la) && isfinite(lb)) c->lx[c->nl] = x, c->ldiff[c->nl++] = la - lb;
}

/* Sort the points of c by length (insertion sort: a handful of lengths). */
static void sort_points(rpt_cross *c) {
    for (int i = 1; i < c->n; i++)
        for (int j = i; j > 0 && c->x[j - 1] > c->x[j]; j--) {
            double *v[] = {c->x, c->ratio, c->rlo, c->rhi};
            for (int a = 0; a < 4; a++) {
                double t = v[a][j];
                v[a][j] = v[a][j - 1], v[a][j - 1] = t;
            }
            int t = c->noisy[j];
            c->noisy[j] = c->noisy[j - 1], c->noisy[j - 1] = t;
        }
    for (int i = 1; i < c->nl; i++)
        for (int j = i; j > 0 && c->lx[j - 1] > c->lx[j]; j--) {
            double t = c->lx[j], u = c->ldiff[j];
            c->lx[j] = c->lx[j - 1], c->ldiff[j] = c->ldiff[j - 1], c->lx[j - 1] = t, c->ldiff[j - 1] = u;
        }
}

static void solve(rpt_cross *c, double loss_tol) {
    sort_points(c);
    double *y = mallocCheck((size_t)(c->n + c->nl + 1) * sizeof *y);
    for (int i = 0; i < c->n; i++) y[i] = log(c->ratio[i]);
    c->time_at = rpt_cross_first_below(c->x, y, c->n, &c->time_case);
    for (int i = 0; i < c->nl; i++) y[i] = c->ldiff[i] - loss_tol;
    c->loss_at = rpt_cross_first_below(c->lx, y, c->nl, &c->loss_case);
    free(y);
}

static rpt_cross *series_of(rpt_cross **cs, int *nc, int cap, const char *label) {
    for (int i = 0; i < *nc; i++)
        if (!strcmp((*cs)[i].label, label)) return &(*cs)[i];
    rpt_cross *c = &(*cs)[(*nc)++];
    memset(c, 0, sizeof *c);
    snprintf(c->label, sizeof c->label, "%s", label);
    double **v[] = {&c->x, &c->ratio, &c->rlo, &c->rhi, &c->lx, &c->ldiff};
    for (int a = 0; a < 6; a++) *v[a] = mallocCheck((size_t)cap * sizeof(double));
    c->noisy = mallocCheck((size_t)cap * sizeof(int));
    return c;
}

int rpt_crossover(const rpt_db *d, double loss_tol, rpt_cross **out, int *n, char *err, size_t errlen) {
    *out = NULL, *n = 0;
    int xp = rpt_param_index(d, "seq");
    if (xp < 0) return rb_fail(err, errlen, "%s: no sequence-length parameter (seq): no crossover to find", d->path);
    rpt_group *g;
    int ng;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen)) return -1;
    int *split = callocCheck((size_t)(d->np ? d->np : 1), sizeof *split);
    rpt_series_split(d, g, ng, xp, split);
    rpt_cross *cs = callocCheck((size_t)(ng ? ng : 1), sizeof *cs);
    int nc = 0;
    for (int k = 0; k < ng; k++) {
        int j = rpt_dense_match(d, g, ng, k);
        double x = num(d->t[g[k].first].pv[xp]);
        if (j < 0 || !(x > 0)) continue;
        char label[512];
        rpt_series_label(d, &d->t[g[k].first], split, label, sizeof label);
        add_point(d, g, k, j, x, series_of(&cs, &nc, ng, label));
    }
    for (int i = 0; i < nc; i++) solve(&cs[i], loss_tol);
    free(split);
    rpt_groups_free(g, ng);
    *out = cs, *n = nc;
    return 0;
}

void rpt_crossover_free(rpt_cross *c, int n) {
    for (int i = 0; i < n; i++)
        free(c[i].x), free(c[i].ratio), free(c[i].rlo), free(c[i].rhi), free(c[i].noisy), free(c[i].lx),
            free(c[i].ldiff);
    free(c);
}

/* The answer as text (what) and as a number (csv). */
static void answer(char *out, size_t len, int kase, double at, const double *x, int n, int csv, const char *below) {
    if (csv) {
        static const char *const w[] = {"no data", "at", "below the shortest length measured",
                                        "not within the lengths measured"};
        if (kase == RPT_X_AT) snprintf(out, len, "%.17g", at);
        else snprintf(out, len, "%s", w[kase]);
        return;
    }
    if (kase == RPT_X_NODATA) snprintf(out, len, "no data");
    else if (kase == RPT_X_AT) snprintf(out, len, "n = %.0f", at);
    else if (kase == RPT_X_BELOW_FIRST) snprintf(out, len, "%s (n = %g)", below, x[0]);
    else snprintf(out, len, "not within the lengths measured (up to n = %g)", x[n - 1]);
}

int rpt_crossover_table(rpt_table *tb, const rpt_db *d, double loss_tol, int format, char *err, size_t errlen) {
    rpt_cross *c;
    int n, csv = format == RPT_CSV, loss = rpt_measure_present(d, "loss");
    if (rpt_crossover(d, loss_tol, &c, &n, err, errlen)) return -1;
    static const char *const head[] = {"series", "lengths", "time below dense", "loss within tolerance of dense",
                                       "noisy points"};
    static const char *const head_csv[] = {"series", "lengths", "time_crossover", "loss_crossover", "noisy_points"};
    const char *h[5];
    int nh = 0;
    for (int i = 0; i < 5; i++)
        if (i != 3 || loss) h[nh++] = csv ? head_csv[i] : head[i];
    rpt_table_init(tb, nh, h, loss ? "lrllr" : "lrlr");
    for (int i = 0; i < n; i++) {
        char cell[5][600], esc[5][1300];
        const char *row[5];
        int nz = 0;
        for (int k = 0; k < c[i].n; k++) nz += c[i].noisy[k] > 0;
        snprintf(cell[0], sizeof cell[0], "%s", c[i].label);
        if (c[i].n) snprintf(cell[1], sizeof cell[1], "%g-%g (%d)", c[i].x[0], c[i].x[c[i].n - 1], c[i].n);
        else snprintf(cell[1], sizeof cell[1], "none");
        answer(cell[2], sizeof cell[2], c[i].time_case, c[i].time_at, c[i].x, c[i].n, csv,
               "below the shortest length measured");
        answer(cell[3], sizeof cell[3], c[i].loss_case, c[i].loss_at, c[i].lx, c[i].nl, csv,
               "within it at the shortest length measured");
        snprintf(cell[4], sizeof cell[4], "%d", nz);
        for (int k = 0, o = 0; k < 5; k++)
            if (k != 3 || loss) rpt_text_cell(esc[o], sizeof esc[o], cell[k], format), row[o] = esc[o], o++;
        rpt_table_add_row(tb, row);
    }
    if (!csv) {
        char cap[1024];
        snprintf(cap, sizeof cap,
                 "%s: where each sparse series overtakes dense at the same parameters. Time: the length at which "
                 "its time (median over seeds) falls below dense's, interpolated in log-log between the measured "
                 "lengths around it.%s%s",
                 d->exp_name[0] ? d->exp_name : d->path,
                 loss ? " Loss: the length from which its evaluation loss (mean over seeds) is within " : "",
                 loss ? "the tolerance of dense's, interpolated in log length" : "");
        size_t o = strlen(cap);
        if (loss) snprintf(cap + o, sizeof cap - o, " (tolerance %g nats).", loss_tol);
        if (!n) snprintf(cap + strlen(cap), sizeof cap - strlen(cap), " No sparse configuration has a dense one to compare with.");
        rpt_text_cell(tb->caption, sizeof tb->caption, cap, format);
    }
    rpt_crossover_free(c, n);
    return 0;
}
