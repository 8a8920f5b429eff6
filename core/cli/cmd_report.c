/* cmd_report.c: the commands that read a results database: `routebench
 * report DB` (paper-style tables), `routebench plot DB` (gnuplot figures)
 * and `routebench compare DB --baseline DB2` (a regression check for a
 * user's CI: exit 1 when a configuration got slower or worse than both
 * tolerances; core/report/compare.h). All three open the databases
 * read-only. Exit status: 0 ok, 1 a regression found (compare), 2 bad usage
 * or input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "report/analysis.h"
#include "report/compare.h"
#include "report/plot.h"
#include "report/report.h"
#include "report/summary.h"
#include "report/crossover.h"
#include "util/status.h"

/* ------------------------------------------------------------------ */
/* report                                                              */

static const char report_about[] =
    "Prints a summary paragraph and a table of a results database. The summary names the\n"
    "fastest configuration (at each of the longest sequence lengths), the one with the lowest\n"
    "loss, and the others within noise of them (overlapping intervals), and how many trials were\n"
    "noisy. The table has one row per configuration (the trials that share all parameters but\n"
    "the seed), the parameters that vary between rows as columns (those that do not go into the\n"
    "caption), a count of the trials done (marked * when some trial's timing was judged noisy,\n"
    "with the reasons under the table), the measures, and a speed-up against dense at the same\n"
    "parameters. Trials that failed, were unsupported or have not run show as such, with their\n"
    "error in the note.";

static const char report_epilog[] =
    "measures: loss = final evaluation loss, bpt = bits per token, acc = accuracy: mean ± std\n"
    "over seeds and [the 95% confidence interval of the mean] (Student t with n-1 degrees of\n"
    "freedom; none from one seed). time = step time in ms (fwd+bwd for attention benches, a\n"
    "whole training step otherwise): median over seeds (IQR), the IQR being the larger of the\n"
    "trials' own interquartile range of their repeats and the IQR of the seeds' medians; any\n"
    "metric ending in _ms is shown the same way. tokens = tokens/s, mem = peak RSS, act_mem =\n"
    "activation bytes (backend or arena peak), gflops = achieved GFLOP/s, sgemm = GFLOP/s as a\n"
    "share of the sgemm ceiling of the run that recorded the trial (the larger of the ceilings\n"
    "measured before and after its sweep; n/a when that run measured none): median over seeds.\n"
    "speed-up vs dense = dense's time / this row's time, with [the interval from the two rows'\n"
    "interquartile intervals]; ref on dense rows.\n"
    "csv columns: M, M_std, M_ci_lo, M_ci_hi, M_n for quality; M, M_iqr, M_n for timings; M, M_n\n"
    "otherwise; noisy (noisy trials of the row), speedup, speedup_lo, speedup_hi.\n";

#define WHERE_HELP "only trials matching an SQL condition on the trials table's columns,\n" \
                   "e.g. --where \"backend IN ('routing','local') AND seq >= 1024\""

int cmd_report(int argc, char **argv) {
    const char *db = NULL, *where = NULL;
    int jsd = 0, crossover = 0;
    double loss_tol = 0.01;
    rpt_table_opts o = {NULL, NULL, RPT_MD};
    const cli_flag flags[] = {
        {"--format", NULL, FL_CHOICE, &o.format, "md|csv|tex", 0, 0, "md|csv|tex",
         "md (default, Markdown), csv (raw numbers; std and counts in their own\n"
         "columns; units as stored: ms, bytes, GFLOP/s, fraction), tex (LaTeX booktabs)"},
        {"--where", NULL, FL_STR, &where, "SQL", 0, 0, NULL, WHERE_HELP},
        {"--by", NULL, FL_STR, &o.by, "P1,P2", 0, 0, NULL,
         "one row per value of these parameters (pooling the others) instead of\none per configuration"},
        {"--metric", "--metrics", FL_STR, &o.metrics, "M,..", 0, 0, NULL,
         "the measure columns (default: those the database has, of\n"
         "loss,bpt,acc,time,tokens,mem,act_mem,gflops,sgemm); any metric name stored\n"
         "in the metrics table also works (e.g. attn.unrouted_share, fwd_ms)"},
        {"--jsd", NULL, FL_SWITCH, &jsd, NULL, 0, 0, NULL,
         "the paper's table from analyze trials instead: mean Jensen-Shannon\n"
         "divergence (nats) between heads per layer, local-local, local-routing,\nrouting-routing"},
        {"--crossover", NULL, FL_SWITCH, &crossover, NULL, 0, 0, NULL,
         "instead of the table: for each sparse backend (and the parameters that\n"
         "split its series), the sequence length at which its time falls below\n"
         "dense's at the same parameters (interpolated in log-log between the\n"
         "measured lengths, or 'below the shortest length measured' / 'not within\n"
         "the lengths measured'), and in train sweeps the length from which its\n"
         "loss is within --loss-tol of dense's"},
        {"--loss-tol", NULL, FL_DOUBLE, &loss_tol, "NATS", 0, 1e300, NULL,
         "with --crossover: how close to dense's loss counts as caught up\n(default 0.01)"},
    };
    const cli_spec spec = {.cmd = "report", .synopsis = "DB [options]", .about = report_about, .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .positional = "DB", .min_pos = 1,
                           .max_pos = 1, .epilog = report_epilog};
    int rc = cli_parse(&spec, argc, argv, &db, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    char err[2048];
    rpt_db d;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench report: %s\n", err);
        return RB_EXIT_USAGE;
    }
    rpt_table tb;
    if (jsd && crossover) {
        fprintf(stderr, "routebench report: --jsd and --crossover are different tables: one at a time\n");
        rpt_close(&d);
        return RB_EXIT_USAGE;
    }
    if (jsd ? analyze_jsd_table(&tb, &d, o.format, err, sizeof err)
            : crossover ? rpt_crossover_table(&tb, &d, loss_tol, o.format, err, sizeof err)
                        : rpt_table_build(&tb, &d, &o, err, sizeof err)) {
        fprintf(stderr, "routebench report: %s\n", err);
        rpt_close(&d);
        return RB_EXIT_USAGE;
    }
    if (d.nt == 0) fprintf(stderr, "routebench report: %s: no trials%s\n", db, where ? " match --where" : "");
    if (!jsd && !crossover && o.format != RPT_CSV) {
        char sum[4096];
        rpt_summary(&d, sum, sizeof sum);
        if (sum[0]) printf(o.format == RPT_TEX ? "%% %s\n\n" : "%s\n\n", sum);
    }
    rpt_table_write(stdout, &tb, o.format);
    rpt_table_free(&tb);
    rpt_close(&d);
    return RB_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* plot                                                                */

static const char plot_about[] =
    "Draws the figures of a results database with gnuplot. Each figure is written as NAME.dat\n"
    "(data) and NAME.gp (script) beside NAME.png, so it can be edited and redrawn with\n"
    "`gnuplot NAME.gp` in that directory. Figures:\n"
    "  scaling      step time against sequence length, log-log, one line per backend, the\n"
    "               fitted exponent (least squares on the logs) in the legend; a line whose\n"
    "               longer lengths have no value (dense over its time limit, unsupported)\n"
    "               carries its fit on to them dotted, keyed 'fit extrapolated, not measured'\n"
    "  memory       memory against sequence length, the same way\n"
    "  curves_step  evaluation loss against step, one line per configuration\n"
    "  curves_time  evaluation loss against training time\n"
    "  heatmap      a measure over two parameters (clusters x window by default)\n"
    "  tradeoff     final evaluation loss against step time, point size = memory\n"
    "  crossover    each sparse series' time over dense's at the same parameters against\n"
    "               length, log-log, the crossings (report --crossover) dashed\n"
    "Error bars: times and memory show the interquartile interval (the trials' own IQR or the\n"
    "spread over seeds, whichever is larger), losses the 95% confidence interval of the mean over\n"
    "seeds (Student t); points with a noisy trial are circled in red. The heatmap draws one panel\n"
    "per backend (and per other parameter that varies), never averaging configurations into a\n"
    "cell. Without --only, figures without data are skipped and listed with the reason; named\n"
    "with --only, such a figure is drawn as a frame that says why. Configurations that failed,\n"
    "were unsupported or did not run are listed on the figure as missing.";

/* The output directory by default: plots/out/<experiment name, else the file's name without .db>. */
static void default_out(const rpt_db *d, const char *db, char *out, size_t len) {
    const char *base = d->exp_name;
    char b[256];
    if (!*base) {
        const char *s = strrchr(db, '/');
        snprintf(b, sizeof b, "%s", s ? s + 1 : db);
        char *dot = strrchr(b, '.');
        if (dot && dot != b) *dot = 0;
        base = b;
    }
    snprintf(out, len, "plots/out/%s", base);
}

int cmd_plot(int argc, char **argv) {
    const char *db = NULL, *where = NULL;
    plot_opts o;
    memset(&o, 0, sizeof o);
    int fmt = 0;
    const cli_flag flags[] = {
        {"--out", NULL, FL_STR, &o.out_dir, "DIR", 0, 0, NULL,
         "output directory (default plots/out/NAME, NAME the experiment's)"},
        {"--format", NULL, FL_CHOICE, &fmt, "png|svg|pdf", 0, 0, "png|svg|pdf",
         "png (default; pngcairo when available), svg, or pdf (needs gnuplot's\n"
         "pdfcairo terminal; a clear error when it is missing)"},
        {"--dumb", NULL, FL_SWITCH, &o.dumb, NULL, 0, 0, NULL,
         "draw in the terminal (gnuplot's dumb terminal) instead of files"},
        {"--only", NULL, FL_STR, &o.only, "F1,F2", 0, 0, NULL, "only these figures (curves = both curve figures)"},
        {"--where", NULL, FL_STR, &where, "SQL", 0, 0, NULL, WHERE_HELP},
        {"--time", NULL, FL_STR, &o.time_metric, "M", 0, 0, NULL, "the time measure (default time; e.g. fwd_ms, bwd_ms)"},
        {"--memory", NULL, FL_STR, &o.mem_metric, "M", 0, 0, NULL,
         "the memory measure (default act_mem when present, else mem)"},
        {"--heatmap-x", NULL, FL_STR, &o.heat_x, "P", 0, 0, NULL, "heatmap columns (default clusters)"},
        {"--heatmap-y", NULL, FL_STR, &o.heat_y, "P", 0, 0, NULL, "heatmap rows (default window)"},
        {"--heatmap-metric", NULL, FL_STR, &o.heat_metric, "M", 0, 0, NULL,
         "heatmap measure (default loss when present, else time)"},
        {"--fit-from", NULL, FL_DOUBLE, &o.fit_from, "N", 0, 1e300, NULL,
         "scaling and memory fits use only lengths >= N (the legend says which\npoints were used)"},
        {"--fit-to", NULL, FL_DOUBLE, &o.fit_to, "N", 0, 1e300, NULL, "... and <= N"},
        {"--quiet", NULL, FL_SWITCH, &o.quiet, NULL, 0, 0, NULL, "do not list the files written nor the skipped figures"},
    };
    const cli_spec spec = {.cmd = "plot", .synopsis = "DB [options]", .about = plot_about, .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .positional = "DB", .min_pos = 1,
                           .max_pos = 1, .epilog = "environment: RB_GNUPLOT overrides the gnuplot program.\n"};
    int prc = cli_parse(&spec, argc, argv, &db, NULL);
    if (prc != CLI_OK) return cli_exit(prc);
    static const char *const formats[] = {"png", "svg", "pdf"};
    o.format = formats[fmt];
    /* parameter names: '-' and '_' are interchangeable, as everywhere */
    const rb_param *hx = o.heat_x ? rb_param_find(o.heat_x) : NULL, *hy = o.heat_y ? rb_param_find(o.heat_y) : NULL;
    if (hx) o.heat_x = hx->name;
    if (hy) o.heat_y = hy->name;
    char err[2048];
    rpt_db d;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench plot: %s\n", err);
        return RB_EXIT_USAGE;
    }
    char out[1024];
    if (!o.out_dir) default_out(&d, db, out, sizeof out), o.out_dir = out;
    if (o.fit_to > 0 && o.fit_from > o.fit_to) {
        fprintf(stderr, "routebench plot: --fit-from %g is above --fit-to %g\n", o.fit_from, o.fit_to);
        rpt_close(&d);
        return RB_EXIT_USAGE;
    }
    plot_result r;
    int rc = plot_all(&d, &o, &r, err, sizeof err);
    rpt_close(&d);
    if (rc) {
        fprintf(stderr, "routebench plot: %s\n", err);
        return RB_EXIT_USAGE;
    }
    if (!o.quiet && r.nskipped) printf("skipped %d figure%s without data:\n%s", r.nskipped, r.nskipped > 1 ? "s" : "",
                                       r.skipped);
    if (!o.quiet && !o.dumb) printf("%d figures in %s (data .dat and scripts .gp beside them)\n", r.nmade, o.out_dir);
    return RB_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* compare                                                             */

static const char compare_about[] =
    "Matches the configurations of DB with those of the baseline DB2 (same parameters but the\n"
    "seed: the trial key), and reports the change in step time (median over seeds) and final\n"
    "evaluation loss (mean over seeds). A configuration is flagged when a measure got worse by\n"
    "more than BOTH its relative and its absolute tolerance AND the two runs' interquartile\n"
    "intervals do not overlap (median -+ half the spread: the trials' own timing IQR or the\n"
    "spread over seeds, whichever is larger), or when it is done in the baseline but not in DB\n"
    "(failed, unsupported, not run). A time measured noisy in either run (the trial's noisy\n"
    "mark) is reported as noisy, never as a regression. Exit status: 0 nothing flagged, 1\n"
    "something flagged (for CI), 2 bad usage or input.";

int cmd_compare(int argc, char **argv) {
    const char *db = NULL, *base = NULL, *where = NULL;
    rpt_compare_opts o;
    rpt_compare_defaults(&o);
    double rel = -1, abs_ = -1, tr = -1, ta = -1, lr = -1, la = -1; /* -1: not given */
    const cli_flag flags[] = {
        {"--baseline", NULL, FL_STR, &base, "DB2", 0, 0, NULL, "the reference database (required)"},
        {"--rel-tol", NULL, FL_DOUBLE, &rel, "R", 0, 1e300, NULL,
         "relative tolerance of both measures (fraction, default: time 0.10,\nloss 0.01)"},
        {"--abs-tol", NULL, FL_DOUBLE, &abs_, "A", 0, 1e300, NULL,
         "absolute tolerance of both measures (default: time 0.05 ms, loss 0.01)"},
        {"--time-rel", NULL, FL_DOUBLE, &tr, "R", 0, 1e300, NULL, "relative tolerance of the time (wins over --rel-tol)"},
        {"--time-abs", NULL, FL_DOUBLE, &ta, "MS", 0, 1e300, NULL, "absolute tolerance of the time"},
        {"--loss-rel", NULL, FL_DOUBLE, &lr, "R", 0, 1e300, NULL, "relative tolerance of the loss"},
        {"--loss-abs", NULL, FL_DOUBLE, &la, "A", 0, 1e300, NULL, "absolute tolerance of the loss"},
        {"--time", NULL, FL_STR, &o.time_measure, "M", 0, 0, NULL, "the time measure (default time: fwd+bwd or whole-step ms)"},
        {"--where", NULL, FL_STR, &where, "SQL", 0, 0, NULL, "only trials matching an SQL condition (both DBs)"},
        {"--format", NULL, FL_CHOICE, &o.format, "md|csv|tex", 0, 0, "md|csv|tex", "md (default), csv or tex"},
        {"--flagged-only", NULL, FL_SWITCH, &o.flagged_only, NULL, 0, 0, NULL,
         "list only the flagged configurations (default: every configuration)"},
    };
    const cli_spec spec = {.cmd = "compare", .synopsis = "DB --baseline DB2 [options]", .about = compare_about,
                           .flags = flags, .nflags = (int)(sizeof flags / sizeof flags[0]), .positional = "DB",
                           .min_pos = 1, .max_pos = 1};
    int rc = cli_parse(&spec, argc, argv, &db, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    if (!base) {
        fprintf(stderr, "routebench compare: --baseline DB2 is required (`routebench compare --help`)\n");
        return RB_EXIT_USAGE;
    }
    if (rel >= 0) o.time.rel = o.loss.rel = rel;
    if (abs_ >= 0) o.time.abs = o.loss.abs = abs_;
    if (tr >= 0) o.time.rel = tr;
    if (ta >= 0) o.time.abs = ta;
    if (lr >= 0) o.loss.rel = lr;
    if (la >= 0) o.loss.abs = la;
    char err[2048];
    rpt_db d, b;
    if (rpt_open(&d, db, where, err, sizeof err)) {
        fprintf(stderr, "routebench compare: %s\n", err);
        return RB_EXIT_USAGE;
    }
    if (rpt_open(&b, base, where, err, sizeof err)) {
        fprintf(stderr, "routebench compare: %s\n", err);
        rpt_close(&d);
        return RB_EXIT_USAGE;
    }
    rpt_table tb;
    rpt_compare_counts n;
    rc = rpt_compare(&tb, &d, &b, &o, &n, err, sizeof err);
    if (rc == 0) {
        rpt_table_write(stdout, &tb, o.format);
        rpt_table_free(&tb);
        fprintf(stderr, "compare: %d matched, %d flagged, %d noisy (not judged), %d new, %d only in the baseline\n",
                n.matched, n.flagged, n.noisy, n.fresh, n.absent);
    } else {
        fprintf(stderr, "routebench compare: --time: %s\n", err);
    }
    rpt_close(&d), rpt_close(&b);
    return rc ? RB_EXIT_USAGE : n.flagged ? RB_EXIT_FAILED : RB_EXIT_OK;
}
