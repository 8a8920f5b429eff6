/* analysis.c: the JSD table and kept-mass figure of analysis.h, from the
 * analyze.* metrics the analysis of core/model/analyze.c stored. */
#include "report/analysis.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/plot.h"
#include "store/store.h"
#include "util/common.h"
#include "util/metric.h"

/* 1 + the highest layer number in the trials' analyze.L<l>.* metrics. */
static int layers_present(const rpt_db *d) {
    int L = 0;
    for (int i = 0; i < d->nt; i++)
        for (int j = 0; j < d->t[i].nm; j++) {
            int l;
            if (sscanf(d->t[i].mname[j], "analyze.L%d.", &l) == 1 && l >= L) L = l + 1;
        }
    return L;
}

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

/* Which pair groups have measures (show[p]), and whether any configuration
 * has several trials (then spreads are over seeds). 0 when nothing at all. */
static int jsd_present(const rpt_db *d, const rpt_group *g, int ng, int *show, int *multi) {
    int any = 0;
    *multi = 0;
    for (int gi = 0; gi < ng; gi++)
        for (int p = 0; p < ANALYZE_NPAIRS; p++) {
            char nm[64];
            double sd;
            int n;
            snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p));
            group_metric(d, &g[gi], nm, &sd, &n);
            if (n > 0) show[p] = 1, any = 1;
            if (n > 1) *multi = 1;
        }
    for (int p = 0; p <= ANALYZE_PAIR_RR; p++) show[p] = 1; /* the paper's three always */
    return any;
}

static void jsd_header(rpt_table *tb, const int *show, int format, int multi) {
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
            snprintf(hbuf[p][1], sizeof hbuf[p][1], "%.50s std", hbuf[p][0]);
            head[nc] = hbuf[p][1], align[nc++] = 'r';
        }
    }
    align[nc] = 0;
    rpt_table_init(tb, nc, head, align);
    snprintf(tb->caption, sizeof tb->caption,
             "Jensen-Shannon divergence (nats, at most ln 2 = 0.6931) between the attention distributions of pairs "
             "of heads, per layer, on held-out data: mean %s.",
             multi ? "± std over seeds (trials of the configuration)"
                   : "± std over the head pairs of the layer (one trial per configuration; n=1: one pair, no spread)");
}

/* The cells of pair p in layer ll (-1: all layers) from cells[c]; returns
 * the next c; *have |= a measure was there. */
static int jsd_cells(const rpt_db *d, const rpt_group *g, int ll, int p, int format, char (*cells)[300], int c,
                     int *have) {
    char nm[64];
    double sd, dummy;
    int n, n2;
    if (ll < 0) snprintf(nm, sizeof nm, "analyze.jsd.%s", analyze_pair_name(p));
    else snprintf(nm, sizeof nm, "analyze.L%d.jsd.%s", ll, analyze_pair_name(p));
    double m = group_metric(d, g, nm, &sd, &n);
    size_t base = strlen(nm);
    strncat(nm, ".std", sizeof nm - strlen(nm) - 1);
    double psd = group_metric(d, g, nm, &dummy, &n2);
    nm[base] = 0;
    strncat(nm, ".pairs", sizeof nm - strlen(nm) - 1);
    double pairs = group_metric(d, g, nm, &dummy, &n2); /* NaN in databases before the count was stored */
    double spread = n > 1 ? sd : pairs == 1 ? NAN : psd;
    *have |= n > 0;
    if (format == RPT_CSV) {
        if (n > 0) snprintf(cells[c], 300, "%.6g", m);
        else cells[c][0] = 0;
        c++;
        if (n > 0 && !isnan(spread)) snprintf(cells[c], 300, "%.6g", spread);
        else cells[c][0] = 0;
        return c + 1;
    }
    if (n == 0) snprintf(cells[c], 300, "-");
    else if (isnan(spread)) snprintf(cells[c], 300, n == 1 && pairs == 1 ? "%.4f (n=1)" : "%.4f", m);
    else snprintf(cells[c], 300, format == RPT_TEX ? "%.4f $\\pm$ %.4f" : "%.4f ± %.4f", m, spread);
    return c + 1;
}

int analyze_jsd_table(rpt_table *tb, const rpt_db *d, int format, char *err, size_t errlen) {
    rpt_group *g;
    int ng, show[ANALYZE_NPAIRS] = {0}, multi;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen) != 0) return -1;
    if (!jsd_present(d, g, ng, show, &multi)) {
        rpt_groups_free(g, ng);
        return rb_fail(err, errlen, "%s has no analyze measures (analyze.jsd.*): run `routebench analyze CHECKPOINT "
                                    "--db` or an analyze sweep first", d->path);
    }
    jsd_header(tb, show, format, multi);
    int *varying = callocCheck((size_t)(d->np ? d->np : 1), sizeof(int));
    rpt_varying(d, g, ng, varying);
    char cells[2 + 2 * ANALYZE_NPAIRS][300];
    const char *row[2 + 2 * ANALYZE_NPAIRS];
    for (int i = 0; i < 2 + 2 * ANALYZE_NPAIRS; i++) row[i] = cells[i];
    int nlayers = layers_present(d);
    for (int gi = 0; gi < ng; gi++) {
        char label[256];
        rpt_group_label(d, &g[gi], varying, label, sizeof label);
        if (!label[0]) snprintf(label, sizeof label, "%s", d->t[g[gi].first].backend ? d->t[g[gi].first].backend : "");
        /* a layer is shown when it has any pair measure; ll = -1: all layers, last */
        for (int step = 0; step <= nlayers; step++) {
            int ll = step < nlayers ? step : -1, have = 0, c = 2;
            snprintf(cells[0], sizeof cells[0], "%s", label);
            if (ll < 0) snprintf(cells[1], sizeof cells[1], "all");
            else snprintf(cells[1], sizeof cells[1], "%d", ll);
            for (int p = 0; p < ANALYZE_NPAIRS; p++)
                if (show[p]) c = jsd_cells(d, &g[gi], ll, p, format, cells, c, &have);
            if (have) rpt_table_add_row(tb, row);
        }
    }
    free(varying), rpt_groups_free(g, ng);
    return 0;
}

typedef struct {
    double x, kept, rnd;
    double ci; /* 95% confidence half-width of the kept mass over seeds (0 from one) */
} kept_pt;

static int cmp_kept_pt(const void *a, const void *b) {
    double x = ((const kept_pt *)a)->x, y = ((const kept_pt *)b)->x;
    return (x > y) - (x < y);
}

/* The kept-mass series of d: one per backend and head kind (and length when
 * several), its points sorted by x. */
typedef struct {
    int n, cap_pts;
    char (*label)[160];
    kept_pt *pts; /* [n][cap_pts] */
    int *np;
} kept_series;

static void add_point(kept_series *ks, const char *lb, kept_pt p) {
    int s = 0;
    while (s < ks->n && strcmp(ks->label[s], lb) != 0) s++;
    if (s == ks->n) snprintf(ks->label[ks->n++], sizeof ks->label[0], "%s", lb);
    ks->pts[(size_t)s * ks->cap_pts + ks->np[s]++] = p;
}

static void collect_kept(const rpt_db *d, const rpt_group *g, int ng, kept_series *ks) {
    int ix[ANALYZE_NKINDS] = {-1, rpt_param_index(d, "window"), rpt_param_index(d, "clusters")};
    int iseq = rpt_param_index(d, "seq"), multi_seq = 0;
    for (int gi = 1; gi < ng && iseq >= 0; gi++) { /* several sequence lengths split the lines */
        const char *a = d->t[g[0].first].pv[iseq], *b = d->t[g[gi].first].pv[iseq];
        multi_seq |= (a && b && strcmp(a, b) != 0);
    }
    ks->cap_pts = ng + 1;
    ks->label = callocCheck((size_t)(2 * ng + 1), sizeof *ks->label);
    ks->pts = callocCheck((size_t)(2 * ng + 1) * (size_t)ks->cap_pts, sizeof *ks->pts);
    ks->np = callocCheck((size_t)(2 * ng + 1), sizeof(int));
    for (int gi = 0; gi < ng; gi++) {
        const rpt_trial *t0 = &d->t[g[gi].first];
        for (int k = ANALYZE_HEAD_LOCAL; k < ANALYZE_NKINDS; k++) {
            char nm[64], lb[160];
            double sd;
            int n;
            snprintf(nm, sizeof nm, "analyze.kept_mass.%s", analyze_kind_name(k));
            double kept = group_metric(d, &g[gi], nm, &sd, &n);
            double ci = n > 1 && isfinite(sd) ? rpt_student_t(0.975, n - 1) * sd / sqrt((double)n) : 0;
            snprintf(nm, sizeof nm, "analyze.random_mass.%s", analyze_kind_name(k));
            double rnd = group_metric(d, &g[gi], nm, &sd, &n);
            /* x: the resolved value the analysis recorded, else the trial's parameter */
            double x = group_metric(d, &g[gi], k == ANALYZE_HEAD_ROUTING ? "analyze.clusters" : "analyze.window", &sd, &n);
            const char *xs = ix[k] >= 0 ? t0->pv[ix[k]] : NULL;
            if (isnan(x) && xs) x = atof(xs);
            if (isnan(kept) || isnan(x)) continue;
            snprintf(lb, sizeof lb, "%.40s %s heads%s%.20s", t0->backend ? t0->backend : "?", analyze_kind_name(k),
                     multi_seq ? " n=" : "", multi_seq && t0->pv[iseq] ? t0->pv[iseq] : "");
            add_point(ks, lb, (kept_pt){x, kept, rnd, ci});
        }
    }
    for (int s = 0; s < ks->n; s++) qsort(ks->pts + (size_t)s * ks->cap_pts, (size_t)ks->np[s], sizeof(kept_pt), cmp_kept_pt);
}

static void write_kept(FILE *df, FILE *gf, const kept_series *ks) {
    char q[600];
    fprintf(gf, "set title 'share of the dense attention mass each sparse head keeps (dashed: random pattern of the "
                "same size)'\nset xlabel 'clusters (routing heads) / window (local heads)'\n"
                "set ylabel 'kept dense mass'\nset yrange [0:1.05]\n");
    if (ks->n == 0) {
        fprintf(gf, "unset key\nunset xtics\nunset ytics\nset label 1 'no analyze measures in this database "
                    "(routebench analyze --db, or an analyze sweep)' at graph 0.5, graph 0.5 center\n"
                    "plot [0:1][0:1] -1 notitle\n");
        return;
    }
    fprintf(gf, "set logscale x 2\nplot \\\n");
    for (int s = 0; s < ks->n; s++) {
        const kept_pt *ps = ks->pts + (size_t)s * ks->cap_pts;
        fprintf(df, "%s# %s: x kept random kept-95%%-CI-half-width (over seeds; 0 from one)\n", s ? "\n\n" : "",
                ks->label[s]);
        for (int i = 0; i < ks->np[s]; i++)
            fprintf(df, "%g\t%.6f\t%.6f\t%.6f\n", ps[i].x, ps[i].kept, ps[i].rnd, ps[i].ci);
        plot_quote(q, sizeof q, ks->label[s]);
        fprintf(gf, "  'kept_mass.dat' index %d using 1:2:4 with yerrorlines lw 2 pt 7 lc %d title '%s', \\\n"
                    "  'kept_mass.dat' index %d using 1:3 with linespoints dt 2 pt 6 lc %d title '%s random'%s\n",
                s, s + 1, q, s, s + 1, q, s + 1 < ks->n ? ", \\" : "");
    }
}

int analyze_plot_kept(const rpt_db *d, const char *dir, const char *format, int dumb, int quiet, char *err,
                      size_t errlen) {
    const char *term = NULL;
    if (!dumb && !(term = plot_terminal(format, err, errlen))) return -1;
    rpt_group *g;
    int ng;
    if (rpt_group_trials(d, NULL, &g, &ng, err, errlen) != 0) return -1;
    kept_series ks = {0};
    collect_kept(d, g, ng, &ks);
    char path[1200];
    snprintf(path, sizeof path, "%s/kept_mass.dat", dir);
    FILE *df = fopen(path, "w");
    FILE *gf = df ? plot_script_open(dir, "kept_mass", term, format, d->path, err, errlen) : NULL;
    int rc = df && gf ? 0 : df ? -1 : rb_fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
    if (rc == 0) {
        fprintf(df, "# kept_mass.dat: kept dense attention mass against clusters (routing heads) or window (local "
                    "heads), with the random floor (routebench plot, %s)\n", d->path);
        write_kept(df, gf, &ks);
    }
    if (df && fclose(df) != 0 && rc == 0) rc = rb_fail(err, errlen, "%s/kept_mass.dat: write error", dir);
    if (gf && fclose(gf) != 0 && rc == 0) rc = rb_fail(err, errlen, "%s/kept_mass.gp: write error", dir);
    if (rc == 0 && dumb) printf("\n== kept_mass ==\n");
    if (rc == 0) rc = plot_run_gnuplot(dir, "kept_mass.gp", err, errlen);
    if (rc == 0 && !dumb && !quiet) printf("wrote %s/kept_mass.%s\n", dir, format);
    free(ks.label), free(ks.pts), free(ks.np);
    rpt_groups_free(g, ng);
    return rc;
}
