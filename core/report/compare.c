/* compare.c: see compare.h. */
#include "report/compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

void rpt_compare_defaults(rpt_compare_opts *o) {
    memset(o, 0, sizeof *o);
    o->time_measure = "time";
    o->time = (rpt_tol){0.10, 0.05};
    o->loss = (rpt_tol){0.01, 0.01};
    o->format = RPT_MD;
}

/* Worse = larger, for both time and loss: past both tolerances, and the two
 * runs' interquartile intervals (median -+ spread/2: the trials' own IQR or
 * the spread over seeds) do not overlap, so a change inside the noise of
 * either run is never a regression. */
static int worse(const rpt_db *d, const rpt_group *x, const rpt_db *b, const rpt_group *y, const char *measure,
                 double base, double cur, rpt_tol t) {
    if (!isfinite(base) || !isfinite(cur)) return 0;
    double dlt = cur - base, lo0, hi0, lo1, hi1;
    if (!(dlt > t.abs && dlt > t.rel * fabs(base))) return 0;
    if (rpt_group_interval(b, y, measure, &lo0, &hi0) || rpt_group_interval(d, x, measure, &lo1, &hi1)) return 1;
    return lo1 > hi0;
}

static void fmt_num(char *out, size_t len, double v, int csv, const char *fmt) {
    if (!isfinite(v)) snprintf(out, len, "%s", csv ? "" : "–");
    else if (csv) snprintf(out, len, "%.17g", v);
    else if (!strcmp(fmt, "%.4g")) rpt_fmt_sig(out, len, v, 4);
    else snprintf(out, len, fmt, v);
}

/* One configuration of d against its match y in b (NULL: none): status and flag. */
static void judge(const rpt_db *d, const rpt_group *x, const rpt_db *b, const rpt_group *y, const rpt_compare_opts *o,
                  double t0, double t1, double l0, double l1, char *status, char *flag, rpt_compare_counts *n) {
    status[0] = flag[0] = 0;
    if (!y) {
        snprintf(status, 256, "new (not in baseline)");
        n->fresh++;
        return;
    }
    n->matched++;
    if (y->ndone > 0 && x->ndone == 0) {
        rpt_group_note(d, x, status, 256);
        snprintf(flag, 128, "NOT DONE");
        n->flag_status++;
    } else if (y->ndone == 0 && x->ndone > 0) {
        snprintf(status, 256, "done (not in baseline: %s)", b->t[y->ti[0]].status);
    } else if (x->ndone == 0) {
        rpt_group_note(d, x, status, 256);
    } else {
        snprintf(status, 256, "done");
    }
    /* a noisy timing on either side is reported as such, never as a regression */
    int noisy = rpt_group_noisy(d, x, NULL, 0) + rpt_group_noisy(b, y, NULL, 0) > 0;
    int wt = !noisy && worse(d, x, b, y, o->time_measure, t0, t1, o->time);
    int wl = worse(d, x, b, y, "loss", l0, l1, o->loss);
    if (wt || wl) snprintf(flag, 128, "%s%s%s", wt ? "SLOWER" : "", wt && wl ? "+" : "", wl ? "WORSE LOSS" : "");
    if (noisy && isfinite(t0) && isfinite(t1)) {
        size_t l = strlen(status);
        snprintf(status + l, 256 - l, "; time noisy (not judged)");
        n->noisy++;
    }
    n->flag_time += wt, n->flag_loss += wl;
}

static void add_row(rpt_table *tb, const char *label, const char *key, double t0, double t1, double l0, double l1,
                    char *status, const char *flag, int format) {
    int csv = format == RPT_CSV;
    char c[10][700], esc[10][1500];
    if (strlen(status) > 72 && !csv) strcpy(status + 69, "...");
    snprintf(c[0], sizeof c[0], "%s", label);
    snprintf(c[1], sizeof c[1], "%s", key);
    fmt_num(c[2], sizeof c[2], t0, csv, "%.4g");
    fmt_num(c[3], sizeof c[3], t1, csv, "%.4g");
    double dt = (t1 - t0) / t0;
    if (csv) fmt_num(c[4], sizeof c[4], dt, 1, "");
    else if (isfinite(dt)) snprintf(c[4], sizeof c[4], "%+.1f%%", 100 * dt);
    else snprintf(c[4], sizeof c[4], "–");
    fmt_num(c[5], sizeof c[5], l0, csv, "%.4f");
    fmt_num(c[6], sizeof c[6], l1, csv, "%.4f");
    fmt_num(c[7], sizeof c[7], l1 - l0, csv, "%+.4f");
    snprintf(c[8], sizeof c[8], "%s", status);
    snprintf(c[9], sizeof c[9], "%s", flag);
    const char *row[10];
    for (int k = 0; k < 10; k++) rpt_text_cell(esc[k], sizeof esc[k], c[k], format), row[k] = esc[k];
    rpt_table_add_row(tb, row);
}

int rpt_compare(rpt_table *tb, const rpt_db *d, const rpt_db *b, const rpt_compare_opts *o, rpt_compare_counts *n,
                char *err, size_t errlen) {
    memset(n, 0, sizeof *n);
    if (rpt_measure_check(d, o->time_measure, err, errlen)) return -1;
    rpt_group *g = NULL, *bg = NULL;
    int ng = 0, nbg = 0;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen) || rpt_group_trials(b, NULL, &bg, &nbg, err, errlen)) {
        rpt_groups_free(g, ng);
        return -1;
    }
    int *varying = callocCheck((size_t)(d->np ? d->np : 1), sizeof *varying);
    int *matched = callocCheck((size_t)(nbg ? nbg : 1), sizeof *matched);
    rpt_varying(d, g, ng, varying);
    static const char *const head[] = {"configuration", "key",  "time base",   "time",   "time change",
                                       "loss base",     "loss", "loss change", "status", "flag"};
    static const char *const head_csv[] = {"configuration", "key",  "time_base",   "time",   "time_change",
                                           "loss_base",     "loss", "loss_change", "status", "flag"};
    rpt_table_init(tb, 10, o->format == RPT_CSV ? head_csv : head, "llrrrrrrll");
    for (int i = 0; i < ng; i++) {
        const rpt_group *x = &g[i], *y = NULL;
        const char *key = d->t[x->first].key;
        for (int j = 0; j < nbg && !y; j++)
            if (!strcmp(b->t[bg[j].first].key, key)) y = &bg[j], matched[j] = 1;
        char label[600], status[256], flag[128];
        rpt_group_label(d, x, varying, label, sizeof label);
        if (!label[0] || strcmp(label, d->t[x->first].backend) == 0) snprintf(label, sizeof label, "%s", d->t[x->first].name);
        double t1 = rpt_group_value(d, x, o->time_measure), l1 = rpt_group_value(d, x, "loss");
        double t0 = y ? rpt_group_value(b, y, o->time_measure) : NAN, l0 = y ? rpt_group_value(b, y, "loss") : NAN;
        judge(d, x, b, y, o, t0, t1, l0, l1, status, flag, n);
        n->flagged += flag[0] != 0;
        if (!o->flagged_only || flag[0]) add_row(tb, label, key, t0, t1, l0, l1, status, flag, o->format);
    }
    for (int j = 0; j < nbg; j++) n->absent += !matched[j];
    if (o->format != RPT_CSV) {
        char cap[sizeof tb->caption];
        snprintf(cap, sizeof cap,
                 "%s against baseline %s: %d configurations matched, %d flagged (time: %d, loss: %d, not done: %d), "
                 "%d with a noisy time (not judged), %d new, %d only in the baseline. Flagged when worse by more than "
                 "both tolerances (time %.3g%% and %.3g ms, loss %.3g%% and %.3g) and outside the baseline's spread "
                 "(the interquartile intervals of the two runs do not overlap)",
                 d->path, b->path, n->matched, n->flagged, n->flag_time, n->flag_loss, n->flag_status, n->noisy,
                 n->fresh, n->absent, 100 * o->time.rel, o->time.abs, 100 * o->loss.rel, o->loss.abs);
        rpt_text_cell(tb->caption, sizeof tb->caption, cap, o->format == RPT_TEX ? RPT_TEX : RPT_CSV);
    }
    free(varying), free(matched);
    rpt_groups_free(g, ng), rpt_groups_free(bg, nbg);
    return 0;
}
