/* cmd_report.c: the commands that read a results database: `routebench
 * report DB` (paper-style tables), `routebench plot DB` (gnuplot figures)
 * and `routebench compare DB --baseline DB2` (a regression check for a
 * user's CI: exit 1 when a configuration got slower or worse than both
 * tolerances). All three open the databases read-only. Exit status: 0 ok,
 * 1 a regression found (compare), 2 bad usage or input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "report/plot.h"
#include "model/analyze.h"
#include "report/analysis.h"
#include "report/report.h"
#include "store/store.h"

/* Flag value or a usage error. */
static const char *need(const char *cmd, const char *flag, const char *val) {
    if (!val || !*val) fprintf(stderr, "routebench %s: %s needs a value\n", cmd, flag);
    return val && *val ? val : NULL;
}

static int parse_nonneg(const char *cmd, const char *flag, const char *val, double *out) {
    char *e;
    double v = val ? strtod(val, &e) : NAN;
    if (!val || e == val || *e || !(v >= 0) || !isfinite(v)) {
        fprintf(stderr, "routebench %s: %s wants a number >= 0 (got '%s')\n", cmd, flag, val ? val : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* report                                                              */

static void report_usage(FILE *f) {
    fprintf(f,
            "usage: routebench report DB [options]\n"
            "Prints a table of a results database: one row per configuration (the trials that share\n"
            "all parameters but the seed), the parameters that vary between rows as columns (those that\n"
            "do not go into the caption), a count of the trials done, and the measures. Trials that\n"
            "failed, were unsupported or have not run show as such, with their error in the note.\n\n"
            "options:\n"
            "  --format F     md (default, Markdown), csv (raw numbers; std and counts in their own\n"
            "                 columns; units as stored: ms, bytes, GFLOP/s, fraction), tex (LaTeX booktabs)\n"
            "  --where SQL    only trials matching an SQL condition on the trials table's columns,\n"
            "                 e.g. --where \"backend IN ('routing','local') AND seq >= 1024\"\n"
            "  --by P1,P2     one row per value of these parameters (pooling the others) instead of\n"
            "                 one per configuration\n"
            "  --metric M,..  the measure columns (default: those the database has, of\n"
            "                 loss,bpt,acc,time,tokens,mem,act_mem,gflops,sgemm); any metric name stored\n"
            "                 in the metrics table also works (e.g. attn.unrouted_share, fwd_ms)\n"
            "  --jsd          the paper's table from analyze trials instead: mean Jensen-Shannon\n"
            "                 divergence (nats) between heads per layer, local-local, local-routing,\n"
            "                 routing-routing\n\n"
            "measures: loss = final evaluation loss, bpt = bits per token, acc = accuracy (mean ± std\n"
            "over seeds); time = step time in ms (fwd+bwd for attention benches, a whole training step\n"
            "otherwise), tokens = tokens/s, mem = peak RSS, act_mem = activation bytes (backend or\n"
            "arena peak), gflops = achieved GFLOP/s, sgemm = GFLOP/s as a share of the sgemm ceiling\n"
            "measured by the run that recorded the trial (the latest run's when unknown): median over\n"
            "seeds.\n");
}

int cmd_report(int argc, char **argv) {
    const char *db = NULL, *where = NULL;
    int jsd = 0;
    rpt_table_opts o = {NULL, NULL, RPT_MD};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            report_usage(stdout);
            return 0;
        } else if (!strcmp(f, "--format")) {
            if (!need("report", f, val)) return 2;
            if ((o.format = rpt_format_parse(val)) < 0) {
                fprintf(stderr, "routebench report: --format wants md, csv or tex (got '%s')\n", val);
                return 2;
            }
            i++;
        } else if (!strcmp(f, "--where")) {
            if (!(where = need("report", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--by")) {
            if (!(o.by = need("report", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--metric") || !strcmp(f, "--metrics")) {
            if (!(o.metrics = need("report", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--jsd")) {
            jsd = 1;
        } else if (f[0] == '-' && f[1]) {
            fprintf(stderr, "routebench report: unknown option '%s' (see --help)\n", f);
            return 2;
        } else if (!db) {
            db = f;
        } else {
            fprintf(stderr, "routebench report: one database at a time (got '%s' and '%s')\n", db, f);
            return 2;
        }
    }
    if (!db) {
        report_usage(stderr);
        return 2;
    }
    char err[2048];
    rpt_db d;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench report: %s\n", err);
        return 2;
    }
    rpt_table tb;
    if (jsd ? analyze_jsd_table(&tb, &d, o.format, err, sizeof err) : rpt_table_build(&tb, &d, &o, err, sizeof err)) {
        fprintf(stderr, "routebench report: %s\n", err);
        rpt_close(&d);
        return 2;
    }
    if (d.nt == 0) fprintf(stderr, "routebench report: %s: no trials%s\n", db, where ? " match --where" : "");
    rpt_table_write(stdout, &tb, o.format);
    rpt_table_free(&tb);
    rpt_close(&d);
    return 0;
}

/* ------------------------------------------------------------------ */
/* plot                                                                */

static void plot_usage(FILE *f) {
    fprintf(f,
            "usage: routebench plot DB [options]\n"
            "Draws the figures of a results database with gnuplot. Each figure is written as NAME.dat\n"
            "(data) and NAME.gp (script) beside NAME.png, so it can be edited and redrawn with\n"
            "`gnuplot NAME.gp` in that directory. Figures:\n"
            "  scaling      step time against sequence length, log-log, one line per backend, the\n"
            "               fitted exponent (least squares on the logs) in the legend\n"
            "  memory       memory against sequence length, the same way\n"
            "  curves_step  evaluation loss against step, one line per configuration\n"
            "  curves_time  evaluation loss against training time\n"
            "  heatmap      a measure over two parameters (clusters x window by default)\n"
            "  tradeoff     final evaluation loss against step time, point size = memory\n"
            "A figure without data is drawn as a frame that says why; configurations that failed, were\n"
            "unsupported or did not run are listed on the figure as missing.\n\n"
            "options:\n"
            "  --out DIR            output directory (default plots/out/NAME, NAME the experiment's)\n"
            "  --format F           png (default; pngcairo when available), svg, or pdf (needs gnuplot's\n"
            "                       pdfcairo terminal; a clear error when it is missing)\n"
            "  --dumb               draw in the terminal (gnuplot's dumb terminal) instead of files\n"
            "  --only F1,F2         only these figures (curves = both curve figures)\n"
            "  --where SQL          only trials matching an SQL condition on the trials table's columns\n"
            "  --time M             the time measure (default time; e.g. fwd_ms, bwd_ms)\n"
            "  --memory M           the memory measure (default act_mem when present, else mem)\n"
            "  --heatmap-x P        heatmap columns (default clusters)\n"
            "  --heatmap-y P        heatmap rows (default window)\n"
            "  --heatmap-metric M   heatmap measure (default loss when present, else time)\n"
            "  --quiet              do not list the files written\n"
            "environment: RB_GNUPLOT overrides the gnuplot program.\n");
}

int cmd_plot(int argc, char **argv) {
    const char *db = NULL, *where = NULL;
    plot_opts o;
    memset(&o, 0, sizeof o);
    o.format = "png";
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        const char **dst = NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            plot_usage(stdout);
            return 0;
        } else if (!strcmp(f, "--dumb")) {
            o.dumb = 1;
            continue;
        } else if (!strcmp(f, "--quiet")) {
            o.quiet = 1;
            continue;
        } else if (!strcmp(f, "--out")) dst = &o.out_dir;
        else if (!strcmp(f, "--format")) dst = &o.format;
        else if (!strcmp(f, "--only")) dst = &o.only;
        else if (!strcmp(f, "--where")) dst = &where;
        else if (!strcmp(f, "--time")) dst = &o.time_metric;
        else if (!strcmp(f, "--memory")) dst = &o.mem_metric;
        else if (!strcmp(f, "--heatmap-x")) dst = &o.heat_x;
        else if (!strcmp(f, "--heatmap-y")) dst = &o.heat_y;
        else if (!strcmp(f, "--heatmap-metric")) dst = &o.heat_metric;
        else if (f[0] == '-' && f[1]) {
            fprintf(stderr, "routebench plot: unknown option '%s' (see --help)\n", f);
            return 2;
        } else if (!db) {
            db = f;
            continue;
        } else {
            fprintf(stderr, "routebench plot: one database at a time (got '%s' and '%s')\n", db, f);
            return 2;
        }
        if (!(*dst = need("plot", f, val))) return 2;
        i++;
    }
    if (!db) {
        plot_usage(stderr);
        return 2;
    }
    if (strcmp(o.format, "png") && strcmp(o.format, "svg") && strcmp(o.format, "pdf")) {
        fprintf(stderr, "routebench plot: --format wants png, svg or pdf (got '%s')\n", o.format);
        return 2;
    }
    /* parameter names: '-' and '_' are interchangeable, as everywhere */
    char hx[64], hy[64];
    if (o.heat_x) {
        snprintf(hx, sizeof hx, "%s", o.heat_x);
        for (char *c = hx; *c; c++) *c = *c == '-' ? '_' : *c;
        o.heat_x = hx;
    }
    if (o.heat_y) {
        snprintf(hy, sizeof hy, "%s", o.heat_y);
        for (char *c = hy; *c; c++) *c = *c == '-' ? '_' : *c;
        o.heat_y = hy;
    }
    char err[2048];
    rpt_db d;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench plot: %s\n", err);
        return 2;
    }
    char out[1024];
    if (!o.out_dir) {
        /* the experiment's name, else the file's name without .db */
        const char *base = d.exp_name;
        char b[256];
        if (!*base) {
            const char *s = strrchr(db, '/');
            snprintf(b, sizeof b, "%s", s ? s + 1 : db);
            char *dot = strrchr(b, '.');
            if (dot && dot != b) *dot = 0;
            base = b;
        }
        snprintf(out, sizeof out, "plots/out/%s", base);
        o.out_dir = out;
    }
    int n = 0;
    int rc = plot_all(&d, &o, &n, err, sizeof err);
    rpt_close(&d);
    if (rc) {
        fprintf(stderr, "routebench plot: %s\n", err);
        return 2;
    }
    if (!o.quiet && !o.dumb) printf("%d figures in %s (data .dat and scripts .gp beside them)\n", n, o.out_dir);
    return 0;
}

/* ------------------------------------------------------------------ */
/* compare                                                             */

static void compare_usage(FILE *f) {
    fprintf(f,
            "usage: routebench compare DB --baseline DB2 [options]\n"
            "Matches the configurations of DB with those of the baseline DB2 (same parameters but the\n"
            "seed: the trial key), and reports the change in step time (median over seeds) and final\n"
            "evaluation loss (mean over seeds). A configuration is flagged when a measure got worse by\n"
            "more than BOTH its relative and its absolute tolerance, or when it is done in the baseline\n"
            "but not in DB (failed, unsupported, not run). Exit status: 0 nothing flagged, 1 something\n"
            "flagged (for CI), 2 bad usage or input.\n\n"
            "options:\n"
            "  --baseline DB2   the reference database (required)\n"
            "  --rel-tol R      relative tolerance of both measures (fraction, default: time 0.10,\n"
            "                   loss 0.01)\n"
            "  --abs-tol A      absolute tolerance of both measures (default: time 0.05 ms, loss 0.01)\n"
            "  --time-rel R, --time-abs MS, --loss-rel R, --loss-abs A   the same for one measure\n"
            "  --time M         the time measure (default time: fwd+bwd or whole-step ms)\n"
            "  --where SQL      only trials matching an SQL condition on the trials' columns (both DBs)\n"
            "  --format F       md (default), csv or tex\n"
            "  --flagged-only   list only the flagged configurations (default: every configuration)\n");
}

typedef struct {
    double rel, abs;
} tol;

/* Worse = larger for both time and loss. */
static int worse(double base, double cur, tol t) {
    if (!isfinite(base) || !isfinite(cur)) return 0;
    double dlt = cur - base;
    return dlt > t.abs && dlt > t.rel * fabs(base);
}

static void fmt_num(char *out, size_t len, double v, int csv, const char *fmt) {
    if (!isfinite(v)) snprintf(out, len, "%s", csv ? "" : "–");
    else snprintf(out, len, csv ? "%.17g" : fmt, v);
}

int cmd_compare(int argc, char **argv) {
    const char *db = NULL, *base = NULL, *where = NULL, *tmeas = "time";
    tol tt = {0.10, 0.05}, tl = {0.01, 0.01};
    int format = RPT_MD, flagged_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            compare_usage(stdout);
            return 0;
        } else if (!strcmp(f, "--flagged-only")) {
            flagged_only = 1;
        } else if (!strcmp(f, "--baseline")) {
            if (!(base = need("compare", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--where")) {
            if (!(where = need("compare", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--time")) {
            if (!(tmeas = need("compare", f, val))) return 2;
            i++;
        } else if (!strcmp(f, "--format")) {
            if (!need("compare", f, val)) return 2;
            if ((format = rpt_format_parse(val)) < 0) {
                fprintf(stderr, "routebench compare: --format wants md, csv or tex (got '%s')\n", val);
                return 2;
            }
            i++;
        } else if (!strcmp(f, "--rel-tol") || !strcmp(f, "--abs-tol") || !strcmp(f, "--time-rel") ||
                   !strcmp(f, "--time-abs") || !strcmp(f, "--loss-rel") || !strcmp(f, "--loss-abs")) {
            double v;
            if (parse_nonneg("compare", f, val, &v)) return 2;
            if (!strcmp(f, "--rel-tol")) tt.rel = tl.rel = v;
            else if (!strcmp(f, "--abs-tol")) tt.abs = tl.abs = v;
            else if (!strcmp(f, "--time-rel")) tt.rel = v;
            else if (!strcmp(f, "--time-abs")) tt.abs = v;
            else if (!strcmp(f, "--loss-rel")) tl.rel = v;
            else tl.abs = v;
            i++;
        } else if (f[0] == '-' && f[1]) {
            fprintf(stderr, "routebench compare: unknown option '%s' (see --help)\n", f);
            return 2;
        } else if (!db) {
            db = f;
        } else {
            fprintf(stderr, "routebench compare: one database and --baseline DB2 (got '%s' and '%s')\n", db, f);
            return 2;
        }
    }
    if (!db || !base) {
        if (db && !base) fprintf(stderr, "routebench compare: --baseline DB2 is required\n");
        compare_usage(stderr);
        return 2;
    }
    char err[2048];
    rpt_db d, b;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench compare: %s\n", err);
        return 2;
    }
    if (rpt_open(&b, base, where, err, sizeof err)) {
        fprintf(stderr, "routebench compare: %s\n", err);
        rpt_close(&d);
        return 2;
    }
    if (rpt_measure_check(&d, tmeas, err, sizeof err)) {
        fprintf(stderr, "routebench compare: --time: %s\n", err);
        rpt_close(&d), rpt_close(&b);
        return 2;
    }
    rpt_group *g = NULL, *bg = NULL;
    int ng = 0, nbg = 0;
    if (rpt_group_trials(&d, NULL, &g, &ng, err, sizeof err) || rpt_group_trials(&b, NULL, &bg, &nbg, err, sizeof err)) {
        fprintf(stderr, "routebench compare: %s\n", err);
        rpt_groups_free(g, ng), rpt_close(&d), rpt_close(&b);
        return 2;
    }
    int *varying = calloc((size_t)(d.np ? d.np : 1), sizeof *varying);
    int *matched = calloc((size_t)(nbg ? nbg : 1), sizeof *matched);
    if (!varying || !matched) {
        fprintf(stderr, "routebench compare: out of memory\n");
        return 2;
    }
    rpt_varying(&d, g, ng, varying);
    int csv = format == RPT_CSV;
    static const char *const head[] = {"configuration", "key",     "time base", "time",   "time change",
                                       "loss base",     "loss",    "loss change", "status", "flag"};
    static const char *const head_csv[] = {"configuration", "key",  "time_base", "time",   "time_change",
                                           "loss_base",     "loss", "loss_change", "status", "flag"};
    rpt_table tb;
    rpt_table_init(&tb, 10, csv ? head_csv : head, "llrrrrrrll");
    int nflag = 0, nmatch = 0, nnew = 0, ftime = 0, floss = 0, fstat = 0;
    for (int i = 0; i < ng; i++) {
        const rpt_group *x = &g[i];
        const char *key = d.t[x->first].key;
        const rpt_group *y = NULL;
        for (int j = 0; j < nbg && !y; j++)
            if (!strcmp(b.t[bg[j].first].key, key)) y = &bg[j], matched[j] = 1;
        char label[600], c[10][700];
        rpt_group_label(&d, x, varying, label, sizeof label);
        if (!label[0] || strcmp(label, d.t[x->first].backend) == 0) snprintf(label, sizeof label, "%s", d.t[x->first].name);
        double t1 = rpt_group_value(&d, x, tmeas), l1 = rpt_group_value(&d, x, "loss");
        double t0 = y ? rpt_group_value(&b, y, tmeas) : NAN, l0 = y ? rpt_group_value(&b, y, "loss") : NAN;
        char flag[128] = "", status[256] = "";
        if (!y) {
            snprintf(status, sizeof status, "new (not in baseline)");
            nnew++;
        } else {
            nmatch++;
            if (y->ndone > 0 && x->ndone == 0) {
                rpt_group_note(&d, x, status, sizeof status);
                snprintf(flag, sizeof flag, "NOT DONE");
                fstat++;
            } else if (y->ndone == 0 && x->ndone > 0) {
                snprintf(status, sizeof status, "done (not in baseline: %s)", b.t[y->ti[0]].status);
            } else if (x->ndone == 0) {
                rpt_group_note(&d, x, status, sizeof status);
            } else {
                snprintf(status, sizeof status, "done");
            }
            int wt = worse(t0, t1, tt), wl = worse(l0, l1, tl);
            if (wt || wl) snprintf(flag, sizeof flag, "%s%s%s", wt ? "SLOWER" : "", wt && wl ? "+" : "", wl ? "WORSE LOSS" : "");
            ftime += wt, floss += wl;
        }
        if (flag[0]) nflag++;
        if (flagged_only && !flag[0]) continue;
        if (strlen(status) > 72 && !csv) strcpy(status + 69, "...");
        snprintf(c[0], sizeof c[0], "%s", label);
        snprintf(c[1], sizeof c[1], "%s", key);
        fmt_num(c[2], sizeof c[2], t0, csv, "%.4g");
        fmt_num(c[3], sizeof c[3], t1, csv, "%.4g");
        double dt = (t1 - t0) / t0, dl = l1 - l0;
        if (csv) fmt_num(c[4], sizeof c[4], dt, 1, "");
        else if (isfinite(dt)) snprintf(c[4], sizeof c[4], "%+.1f%%", 100 * dt);
        else snprintf(c[4], sizeof c[4], "–");
        fmt_num(c[5], sizeof c[5], l0, csv, "%.4f");
        fmt_num(c[6], sizeof c[6], l1, csv, "%.4f");
        fmt_num(c[7], sizeof c[7], dl, csv, "%+.4f");
        snprintf(c[8], sizeof c[8], "%s", status);
        snprintf(c[9], sizeof c[9], "%s", flag);
        const char *row[10];
        char esc[10][1500];
        for (int k = 0; k < 10; k++) {
            row[k] = c[k];
            if (format == RPT_TEX) {
                /* minimal LaTeX escaping of text cells */
                size_t o = 0;
                for (const char *s = c[k]; *s && o + 20 < sizeof esc[k]; s++) {
                    if (strchr("&%$#_{}", *s)) esc[k][o++] = '\\';
                    if (!strncmp(s, "–", strlen("–"))) {
                        memcpy(esc[k] + o, "--", 2), o += 2, s += strlen("–") - 1;
                        continue;
                    }
                    esc[k][o++] = *s;
                }
                esc[k][o] = 0;
                row[k] = esc[k];
            } else if (format == RPT_MD) {
                size_t o = 0;
                for (const char *s = c[k]; *s && o + 3 < sizeof esc[k]; s++) {
                    if (*s == '|') esc[k][o++] = '\\';
                    esc[k][o++] = *s;
                }
                esc[k][o] = 0;
                row[k] = esc[k];
            }
        }
        rpt_table_add_row(&tb, row);
    }
    int nabsent = 0;
    for (int j = 0; j < nbg; j++) nabsent += !matched[j];
    if (format != RPT_CSV) {
        snprintf(tb.caption, sizeof tb.caption,
                 "%s against baseline %s: %d configurations matched, %d flagged (time: %d, loss: %d, not done: %d), "
                 "%d new, %d only in the baseline. Flagged when worse by more than both tolerances: time %.3g%% and "
                 "%.3g ms, loss %.3g%% and %.3g",
                 db, base, nmatch, nflag, ftime, floss, fstat, nnew, nabsent, 100 * tt.rel, tt.abs, 100 * tl.rel,
                 tl.abs);
        if (format == RPT_TEX) {
            char tmp[sizeof tb.caption];
            size_t o = 0;
            for (const char *s = tb.caption; *s && o + 3 < sizeof tmp; s++) {
                if (strchr("&%$#_{}", *s)) tmp[o++] = '\\';
                tmp[o++] = *s;
            }
            tmp[o] = 0;
            memcpy(tb.caption, tmp, o + 1);
        }
    }
    rpt_table_write(stdout, &tb, format);
    fprintf(stderr, "compare: %d matched, %d flagged, %d new, %d only in the baseline\n", nmatch, nflag, nnew, nabsent);
    rpt_table_free(&tb);
    free(varying), free(matched);
    rpt_groups_free(g, ng), rpt_groups_free(bg, nbg);
    rpt_close(&d), rpt_close(&b);
    return nflag ? 1 : 0;
}
