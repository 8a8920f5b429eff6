/* plot.h: figures from a results database, drawn by gnuplot run as a child
 * process. Each figure is a data file (NAME.dat, tab-separated, # comments
 * saying what each block and column is) and a script (NAME.gp) written into
 * the output directory beside the image, so a user can edit the script and
 * rerun `gnuplot NAME.gp` there. The figures:
 *   scaling      step time against sequence length, log-log, one line per
 *                backend (and per parameter that splits it at a fixed
 *                length), the least-squares slope of log t on log n in the
 *                legend and the fitted power law drawn dashed;
 *   memory       the same for memory (activation bytes, or peak RSS);
 *   curves_step  evaluation loss against training step, one line per
 *                configuration (mean over seeds);
 *   curves_time  the same against training wall-clock time (sum of step times);
 *   heatmap      a measure over two parameters (clusters x window by default);
 *   tradeoff     final evaluation loss against step time, one point per
 *                configuration, point size from memory;
 *   crossover    each sparse series' time over dense's at the same
 *                parameters against length (crossover.h), the crossings dashed.
 * Error bars: timings and memory the interquartile interval (the trials' own
 * IQR or the spread over seeds), losses the 95% confidence interval of the
 * mean over seeds; points with noisy trials are circled in red. The heatmap
 * draws one panel per backend (and per other varying parameter), so a cell
 * is always one configuration. The scaling fit uses the lengths in
 * [fit_from, fit_to] and says which in its legend and data file.
 * Without --only, a figure without data (a bench database has no curves) is
 * skipped and listed with why; asked for by name, it is drawn as a frame
 * that says why. Configurations without a value are listed on the figure as
 * missing, with their status. */
#ifndef RB_PLOT_H
#define RB_PLOT_H

#include <stddef.h>

#include "report/report.h"

#define PLOT_NFIGURES 7
extern const char *const plot_figures[PLOT_NFIGURES];

typedef struct {
    const char *out_dir;     /* where data, scripts and images go (created) */
    const char *format;      /* png | svg | pdf */
    int dumb;                /* gnuplot's dumb terminal on stdout instead of image files */
    const char *only;        /* comma-separated figure names; NULL = all */
    const char *heat_x, *heat_y, *heat_metric; /* NULL: clusters, window, loss (or time without loss) */
    const char *time_metric; /* NULL: time (fwdbwd_ms or step_ms) */
    const char *mem_metric;  /* NULL: act_mem (act_bytes / arena_peak_bytes), else peak RSS */
    int quiet;               /* no "wrote ..." lines on stdout */
    double fit_from, fit_to; /* the scaling and memory fits use lengths in [fit_from, fit_to]; 0: no bound */
} plot_opts;

typedef struct {
    int nmade;               /* figures drawn */
    int nskipped;            /* figures without data, not drawn (only without --only) */
    char skipped[2048];      /* one "name: why" line each */
} plot_result;

/* Draw the selected figures: with --only those named (a figure without data
 * as a frame saying why), else every figure that has data, listing the
 * others in r->skipped. 0, or -1 with a message (bad option, gnuplot
 * missing or failing, unwritable directory). */
int plot_all(const rpt_db *d, const plot_opts *o, plot_result *r, char *err, size_t errlen);

/* Least squares of log y on log x over the points with x, y > 0: y ~ coef *
 * x^expo. 0, or -1 when fewer than two distinct x remain. */
int plot_fit_power(const double *x, const double *y, int n, double *expo, double *coef);

/* The gnuplot terminal for a format ("pngcairo" or "png", "svg", "pdfcairo"),
 * checked against the installed gnuplot; NULL with a message when it has none. */
const char *plot_terminal(const char *format, char *err, size_t errlen);

/* s as the inside of a single-quoted gnuplot string: ' doubled, control
 * characters (newlines) turned into spaces. */
void plot_quote(char *out, size_t len, const char *s);

/* DIR/NAME.gp opened for writing, with what every script starts with: where
 * it came from (source), the terminal (term as plot_terminal gave it; NULL
 * for gnuplot's dumb terminal) and output NAME.FORMAT, the grid and key.
 * NULL with a message. */
#include <stdio.h>
FILE *plot_script_open(const char *dir, const char *name, const char *term, const char *format, const char *source,
                       char *err, size_t errlen);

/* Run gnuplot (RB_GNUPLOT in the environment overrides the program) on
 * `script` with `dir` as its working directory. 0 when it exits 0. */
int plot_run_gnuplot(const char *dir, const char *script, char *err, size_t errlen);

#endif
