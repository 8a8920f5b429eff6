/* summary.c: see summary.h. */
#include "report/summary.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "store/store.h"

#define MAX_LENGTHS 4 /* fastest configurations named: at the longest lengths */
#define MAX_NAMED 6   /* configurations named as within noise of the best */

typedef struct {
    char *s;
    size_t len;
    size_t o;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) {
    if (b->o + 1 >= b->len) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->s + b->o, b->len - b->o, fmt, ap);
    va_end(ap);
    if (n > 0) b->o = b->o + (size_t)n < b->len ? b->o + (size_t)n : b->len - 1;
}

/* The interval noise is judged by: the interquartile interval for timings,
 * the 95% confidence interval of the mean for quality (a point from one seed). */
static int interval(const rpt_db *d, const rpt_group *g, const char *m, double *lo, double *hi) {
    if (rpt_measure_agg(m) == RPT_AGG_MEDIAN) return rpt_group_interval(d, g, m, lo, hi);
    rpt_stat s = rpt_group_stat(d, g, m);
    if (!s.n) return -1;
    double h = s.n > 1 ? s.ci : 0;
    *lo = s.mean - h, *hi = s.mean + h;
    return 0;
}

static double seq_of(const rpt_db *d, const rpt_group *g, int sp) {
    const char *v = sp >= 0 ? d->t[g->first].pv[sp] : NULL;
    return v ? atof(v) : -1;
}

/* The lowest value of measure m among the groups at length n (any length when n < 0). */
static int best_at(const rpt_db *d, const rpt_group *g, int ng, int sp, double n, const char *m) {
    int best = -1;
    double bv = INFINITY;
    for (int k = 0; k < ng; k++) {
        double v = rpt_group_value(d, &g[k], m);
        if (isfinite(v) && v < bv && (n < 0 || seq_of(d, &g[k], sp) == n)) best = k, bv = v;
    }
    return best;
}

/* "; within noise: A, B" for the other groups at length n whose interval overlaps best's. */
static void within_noise(sbuf *b, const rpt_db *d, const rpt_group *g, int ng, int sp, double n, int best,
                         const char *m, const int *varying) {
    double blo, bhi, lo, hi;
    if (interval(d, &g[best], m, &blo, &bhi)) return;
    int named = 0, more = 0;
    for (int k = 0; k < ng; k++) {
        if (k == best || (n >= 0 && seq_of(d, &g[k], sp) != n) || interval(d, &g[k], m, &lo, &hi)) continue;
        if (lo > bhi || hi < blo) continue;
        if (named == MAX_NAMED) {
            more++;
            continue;
        }
        char l[600];
        rpt_group_label(d, &g[k], varying, l, sizeof l);
        put(b, "%s%s", named++ ? ", " : " (within noise of it: ", l);
    }
    if (more) put(b, " and %d more", more);
    if (named) put(b, ")");
    else put(b, " (no other within noise)");
}

static void value_text(sbuf *b, const rpt_db *d, const rpt_group *g, const char *m) {
    rpt_stat s = rpt_group_stat(d, g, m);
    if (rpt_measure_agg(m) == RPT_AGG_MEDIAN) {
        char med[64];
        rpt_fmt_sig(med, sizeof med, s.median, 4);
        put(b, s.spread >= 10 ? "%s ms (IQR %.0f)" : "%s ms (IQR %.2g)", med, s.spread);
    } else if (s.n > 1) put(b, "%.4f [95%% CI %.4f, %.4f]", s.mean, s.mean - s.ci, s.mean + s.ci);
    else put(b, "%.4f (one seed: no interval)", s.mean);
}

/* Distinct lengths with a time, ascending, into ns; their count. */
static int lengths(const rpt_db *d, const rpt_group *g, int ng, int sp, double *ns) {
    int n = 0;
    for (int k = 0; k < ng && sp >= 0; k++) {
        double x = seq_of(d, &g[k], sp);
        int i = 0;
        if (x < 0 || !isfinite(rpt_group_value(d, &g[k], "time"))) continue;
        while (i < n && ns[i] != x) i++;
        if (i == n) ns[n++] = x;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ns[j - 1] > ns[j]; j--) {
            double t = ns[j];
            ns[j] = ns[j - 1], ns[j - 1] = t;
        }
    return n;
}

static void fastest(sbuf *b, const rpt_db *d, const rpt_group *g, int ng, const int *varying) {
    int sp = rpt_param_index(d, "seq");
    double *ns = mallocCheck((size_t)ng * sizeof *ns);
    int nl = lengths(d, g, ng, sp, ns), from = nl > MAX_LENGTHS ? nl - MAX_LENGTHS : 0;
    if (nl <= 1) nl = 1, from = 0, ns[0] = -1; /* one length (or none): the fastest overall */
    put(b, " Fastest (%s)%s", rpt_measure_label("time"), from ? " at the longest lengths" : "");
    for (int i = from; i < nl; i++) {
        int best = best_at(d, g, ng, sp, ns[i], "time");
        char l[600];
        rpt_group_label(d, &g[best], varying, l, sizeof l);
        if (ns[i] >= 0) put(b, "%s n=%.0f: %s, ", i > from ? ";" : ":", ns[i], l);
        else put(b, ": %s, ", l);
        value_text(b, d, &g[best], "time");
        within_noise(b, d, g, ng, sp, ns[i], best, "time", varying);
    }
    put(b, ".");
    free(ns);
}

void rpt_summary(const rpt_db *d, char *out, size_t len) {
    sbuf b = {out, len, 0};
    out[0] = 0;
    rpt_group *g = NULL;
    int ng = 0, ndone = 0, nnoisy = 0;
    char err[256];
    if (rpt_group_trials(d, NULL, &g, &ng, err, sizeof err) || ng == 0) return;
    for (int i = 0; i < d->nt; i++)
        if (!strcmp(d->t[i].status, ST_DONE)) ndone++, nnoisy += d->t[i].noisy > 0;
    if (!ndone) return rpt_groups_free(g, ng);
    int *varying = callocCheck((size_t)(d->np ? d->np : 1), sizeof *varying);
    rpt_varying(d, g, ng, varying);
    put(&b, "Summary: %d configurations, %d trials done", ng, ndone);
    if (nnoisy) put(&b, ", %d of them noisy (marked *; their times are not to be trusted)", nnoisy);
    else put(&b, ", none judged noisy");
    put(&b, ".");
    if (rpt_measure_present(d, "time")) fastest(&b, d, g, ng, varying);
    if (rpt_measure_present(d, "loss")) {
        int best = best_at(d, g, ng, -1, -1, "loss");
        char l[600];
        rpt_group_label(d, &g[best], varying, l, sizeof l);
        put(&b, " Lowest %s: %s, ", rpt_measure_label("loss"), l);
        value_text(&b, d, &g[best], "loss");
        within_noise(&b, d, g, ng, -1, -1, best, "loss", varying);
        put(&b, ".");
    }
    put(&b, " Within noise: the intervals overlap (time: median -+ half the interquartile spread; loss: 95%% "
            "confidence interval over seeds).");
    free(varying);
    rpt_groups_free(g, ng);
}
