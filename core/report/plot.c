/* plot.c: the figures of plot.h. Every figure goes the same way: compute its
 * series from the loaded database (report.h), write NAME.dat and NAME.gp into
 * the output directory, run gnuplot there as a child process (fork/exec, no
 * shell, exit status checked) and check that the image is not empty. Text
 * from the database (backend names, parameter values, error messages) only
 * ever enters a script inside single-quoted gnuplot strings, escaped, with
 * enhanced text off, so it is printed and never interpreted. */
#include "report/plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/common.h"
#include "util/fsutil.h"
#include "report/analysis.h"
#include "report/crossover.h"
#include "store/store.h"

const char *const plot_figures[PLOT_NFIGURES] = {"scaling", "memory",   "curves_step", "curves_time",
                                                 "heatmap", "tradeoff", "crossover"};

#define MAX_MISSING_SHOWN 6

/* ------------------------------------------------------------------ */
/* helpers                                                             */

int plot_fit_power(const double *x, const double *y, int n, double *expo, double *coef) {
    /* two passes in double, fixed order: means first, then the centred sums */
    double sx = 0, sy = 0;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (x[i] > 0 && y[i] > 0 && isfinite(x[i]) && isfinite(y[i])) sx += log(x[i]), sy += log(y[i]), m++;
    if (m < 2) return -1;
    double mx = sx / m, my = sy / m, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        if (!(x[i] > 0 && y[i] > 0 && isfinite(x[i]) && isfinite(y[i]))) continue;
        double dx = log(x[i]) - mx;
        sxx += dx * dx, sxy += dx * (log(y[i]) - my);
    }
    if (!(sxx > 0)) return -1;
    *expo = sxy / sxx;
    *coef = exp(my - *expo * mx);
    return 0;
}

static const char *gnuplot_prog(void) {
    const char *p = getenv("RB_GNUPLOT");
    return p && *p ? p : "gnuplot";
}

/* Run prog with args in dir; stdout/stderr to /dev/null when quiet. Returns
 * the exit status, 127 when it could not be started, -1 on fork failure. */
static int run_child(const char *dir, char *const argv[], int quiet) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (dir && chdir(dir) != 0) _exit(126);
        if (quiet) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

const char *plot_terminal(const char *format, char *err, size_t errlen) {
    static const struct {
        const char *format, *term[2];
    } t[] = {{"png", {"pngcairo", "png"}}, {"svg", {"svg", NULL}}, {"pdf", {"pdfcairo", NULL}}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(format, t[i].format) != 0) continue;
        for (int j = 0; j < 2 && t[i].term[j]; j++) {
            char cmd[64];
            snprintf(cmd, sizeof cmd, "set terminal %s", t[i].term[j]);
            char *argv[] = {(char *)gnuplot_prog(), "-e", cmd, NULL};
            int rc = run_child(NULL, argv, 1);
            if (rc == 127 || rc < 0) {
                rb_fail(err, errlen, "cannot run %s (install gnuplot-nox, or set RB_GNUPLOT to the program)",
                        gnuplot_prog());
                return NULL;
            }
            if (rc == 0) return t[i].term[j];
        }
        rb_fail(err, errlen, "this gnuplot has no %s terminal%s", format,
                strcmp(format, "pdf") == 0 ? " (pdfcairo; install gnuplot-qt or gnuplot-x11 for it, or use --format "
                                             "png|svg)"
                                           : "");
        return NULL;
    }
    rb_fail(err, errlen, "unknown image format '%s' (png, svg or pdf)", format);
    return NULL;
}

int plot_run_gnuplot(const char *dir, const char *script, char *err, size_t errlen) {
    char *argv[] = {(char *)gnuplot_prog(), (char *)script, NULL};
    int rc = run_child(dir, argv, 0);
    if (rc == 0) return 0;
    if (rc == 127) return rb_fail(err, errlen, "cannot run %s (install gnuplot-nox)", gnuplot_prog());
    return rb_fail(err, errlen, "%s %s (in %s) failed with status %d", gnuplot_prog(), script, dir, rc);
}

void plot_quote(char *out, size_t len, const char *s) {
    size_t o = 0;
    for (; s && *s && o + 3 < len; s++) {
        if (*s == '\'') out[o++] = '\'';
        out[o++] = (unsigned char)*s < 32 ? ' ' : *s;
    }
    out[o] = 0;
}

/* s for a double-quoted string column of a data file (gnuplot has no escape
 * there, so " becomes '). */
static void dq(char *out, size_t len, const char *s) {
    size_t o = 0;
    for (; s && *s && o + 2 < len; s++) out[o++] = *s == '"' ? '\'' : (unsigned char)*s < 32 ? ' ' : *s;
    out[o] = 0;
}


static double num(const char *s) {
    if (!s) return NAN;
    char *e;
    double v = strtod(s, &e);
    return e != s && *e == 0 ? v : NAN;
}

/* Sort values by number when both are numbers, else as text. */
static int cmp_val(const char *a, const char *b) {
    double x = num(a), y = num(b);
    if (!isnan(x) && !isnan(y)) return (x > y) - (x < y);
    return strcmp(a, b);
}

/* ------------------------------------------------------------------ */
/* figure context                                                      */

typedef struct {
    const rpt_db *d;
    const plot_opts *o;
    const char *term;        /* gnuplot terminal name; NULL with dumb */
    rpt_group *g;
    int ng;
    int *varying;            /* [d->np] parameters that differ between configurations */
} fig;

/* The list of configurations without a value, shown on the figure. */
typedef struct {
    int n;
    char text[1024];
    int off;
} missing;

static void missing_add(missing *m, const char *label, const char *why) {
    m->n++;
    if (m->n > MAX_MISSING_SHOWN || m->off >= (int)sizeof m->text - 1) return;
    m->off += snprintf(m->text + m->off, sizeof m->text - m->off, "%s%s (%s)", m->n > 1 ? ", " : "", label, why);
}

/* Why a configuration has no value: the status of its trials, or "no <measure>". */
static void why_missing(const fig *f, const rpt_group *g, const char *measure, char *out, size_t len) {
    if (g->ndone > 0) {
        snprintf(out, len, "no %s", measure);
        return;
    }
    const char *s = f->d->t[g->ti[0]].status;
    for (int i = 1; i < g->n; i++)
        if (strcmp(f->d->t[g->ti[i]].status, s) != 0) s = "not done";
    snprintf(out, len, "%s", s);
}

static void path_in(char *out, size_t len, const char *dir, const char *name, const char *ext) {
    snprintf(out, len, "%s/%s.%s", dir, name, ext);
}

FILE *plot_script_open(const char *dir, const char *name, const char *term, const char *format, const char *source,
                       char *err, size_t errlen) {
    char p[1200], src[1100];
    snprintf(p, sizeof p, "%s/%s.gp", dir, name);
    FILE *s = fopen(p, "w");
    if (!s) return rb_fail(err, errlen, "cannot write %s: %s", p, strerror(errno)), NULL;
    plot_quote(src, sizeof src, source);
    fprintf(s, "# %s.gp: written by `routebench plot` from %s.\n# Edit it and rerun `gnuplot %s.gp` in this directory; "
               "the data is in the .dat file beside it.\n",
            name, src, name);
    if (!term) fprintf(s, "set terminal dumb size 110,32\n");
    else if (!strcmp(term, "pngcairo")) fprintf(s, "set terminal pngcairo size 900,600 noenhanced font ',10'\n");
    else if (!strcmp(term, "png")) fprintf(s, "set terminal png size 900,600 noenhanced\n");
    else if (!strcmp(term, "svg")) fprintf(s, "set terminal svg size 900,600 noenhanced background rgb 'white'\n");
    else fprintf(s, "set terminal %s size 6in,4in noenhanced font ',9'\n", term);
    if (term) fprintf(s, "set output '%s.%s'\n", name, format);
    fprintf(s, "set termoption noenhanced\nset grid lc rgb '#dddddd'\nset key outside right top box\n");
    return s;
}

/* Open NAME.gp and write what every script starts with. */
static FILE *script_open(const fig *f, const char *name, char *err, size_t errlen) {
    return plot_script_open(f->o->out_dir, name, f->o->dumb ? NULL : f->term, f->o->format, f->d->path, err, errlen);
}

static FILE *data_open(const fig *f, const char *name, const char *what, char *err, size_t errlen) {
    char p[1200];
    path_in(p, sizeof p, f->o->out_dir, name, "dat");
    FILE *s = fopen(p, "w");
    if (!s) {
        rb_fail(err, errlen, "cannot write %s: %s", p, strerror(errno));
        return NULL;
    }
    fprintf(s, "# %s.dat: %s (routebench plot, %s)\n", name, what, f->d->path);
    return s;
}

static void title(FILE *s, const fig *f, const char *what) {
    char a[1100], b[1100];
    plot_quote(a, sizeof a, f->d->exp_name[0] ? f->d->exp_name : f->d->path);
    plot_quote(b, sizeof b, what);
    fprintf(s, "set title '%s: %s'\n", a, b);
}

static void missing_label(FILE *s, const missing *m) {
    if (!m->n) return;
    char t[1400], q[2900];
    snprintf(t, sizeof t, "missing (%d): %s%s", m->n, m->text, m->n > MAX_MISSING_SHOWN ? ", ..." : "");
    plot_quote(q, sizeof q, t);
    /* above the plot, under the title's row (below it, a key under the plot would cover it) */
    fprintf(s, "set tmargin 4\nset label 900 '%s' at screen 0.01, screen 0.975 left font ',8' "
               "textcolor rgb '#aa0000'\n", q);
}

/* A frame that says why there is nothing to draw. */
static void placeholder(FILE *s, const char *why) {
    char q[1100];
    plot_quote(q, sizeof q, why);
    fprintf(s,
            "unset key\nunset xtics\nunset ytics\nunset grid\n"
            "set label 1 '%s' at graph 0.5, graph 0.5 center\n"
            "plot [0:1][0:1] -1 notitle\n",
            q);
}

/* Close the script, run gnuplot on it and check the image. */
static int finish(const fig *f, FILE *s, const char *name, char *err, size_t errlen) {
    int bad = ferror(s);
    if (fclose(s) != 0 || bad) return rb_fail(err, errlen, "%s/%s.gp: write error", f->o->out_dir, name);
    char script[128];
    snprintf(script, sizeof script, "%s.gp", name);
    if (f->o->dumb) printf("\n== %s ==\n", name);
    if (plot_run_gnuplot(f->o->out_dir, script, err, errlen)) return -1;
    if (f->o->dumb) return 0;
    char img[1200];
    path_in(img, sizeof img, f->o->out_dir, name, f->o->format);
    struct stat sb;
    if (stat(img, &sb) != 0 || sb.st_size == 0)
        return rb_fail(err, errlen, "gnuplot exited 0 but wrote no %s", img);
    if (!f->o->quiet) printf("wrote %s\n", img);
    return 0;
}

/* ------------------------------------------------------------------ */
/* scaling and memory                                                  */

typedef struct {
    double x, y, lo, hi; /* the value and its interquartile interval (error bar) */
    int noisy;           /* noisy trials in the point */
} pt;

static int cmp_pt(const void *a, const void *b) {
    const pt *p = a, *q = b;
    return (p->x > q->x) - (p->x < q->x);
}

static void series_label(const fig *f, const rpt_trial *t, const int *split, char *out, size_t len) {
    rpt_series_label(f->d, t, split, out, len);
}

/* A point of group g: its value, error bar (the interquartile interval: the
 * trials' own timing IQR or the spread over seeds; on a log axis never below
 * a hundredth of the value) and noise. 0, or -1 when it has no value. */
static int group_point(const fig *f, const rpt_group *g, double x, const char *measure, double yscale, pt *p) {
    double y = rpt_group_value(f->d, g, measure) * yscale, lo, hi;
    if (!(x > 0 && y > 0 && isfinite(y))) return -1;
    rpt_group_interval(f->d, g, measure, &lo, &hi);
    p->x = x, p->y = y;
    p->lo = fmax(lo * yscale, 0.01 * y), p->hi = fmax(hi * yscale, y);
    p->noisy = rpt_group_noisy(f->d, g, NULL, 0);
    return 0;
}

/* The points of the series that group a belongs to (the groups with its
 * label), marked done; configurations without a value go to m, and the
 * largest length among them to *xmiss (0 when none). Sorted by x. */
static int series_points(const fig *f, int a, int xp, const int *split, const char *measure, double yscale, int *done,
                         pt *pts, missing *m, double *xmiss) {
    const rpt_db *d = f->d;
    char label[512], lb[512];
    series_label(f, &d->t[f->g[a].first], split, label, sizeof label);
    int np = 0;
    *xmiss = 0;
    for (int b = a; b < f->ng; b++) {
        if (done[b]) continue;
        const rpt_trial *tb = &d->t[f->g[b].first];
        series_label(f, tb, split, lb, sizeof lb);
        if (strcmp(lb, label) != 0) continue;
        done[b] = 1;
        if (group_point(f, &f->g[b], num(tb->pv[xp]), measure, yscale, &pts[np]) == 0) {
            np++;
            continue;
        }
        if (num(tb->pv[xp]) > *xmiss) *xmiss = num(tb->pv[xp]);
        char gl[600], why[64];
        rpt_group_label(d, &f->g[b], f->varying, gl, sizeof gl);
        why_missing(f, &f->g[b], measure, why, sizeof why);
        missing_add(m, gl, why);
    }
    qsort(pts, (size_t)np, sizeof *pts, cmp_pt);
    return np;
}

/* The least-squares power law over the points within [--fit-from, --fit-to]:
 * 0 with *used and the range of lengths used, or -1 (fewer than two). */
static int fit_range(const fig *f, const pt *pts, int np, double *k, double *c, int *used, double *x0, double *x1) {
    double *xs = mallocCheck((size_t)np * sizeof *xs), *ys = mallocCheck((size_t)np * sizeof *ys);
    int n = 0;
    *x0 = INFINITY, *x1 = -INFINITY;
    for (int i = 0; i < np; i++) {
        if ((f->o->fit_from > 0 && pts[i].x < f->o->fit_from) || (f->o->fit_to > 0 && pts[i].x > f->o->fit_to)) continue;
        xs[n] = pts[i].x, ys[n++] = pts[i].y;
        *x0 = fmin(*x0, pts[i].x), *x1 = fmax(*x1, pts[i].x);
    }
    int rc = plot_fit_power(xs, ys, n, k, c);
    free(xs), free(ys);
    *used = n;
    return rc;
}

/* The plot style of the red circles around noisy points: in the key once. */
static const char *noisy_circle(int *keyed) {
    int first = !*keyed;
    *keyed = 1;
    return first ? "with points pt 6 ps 2.2 lw 2 lc rgb '#cc0000' title 'noisy measurement'"
                 : "with points pt 6 ps 2.2 lw 2 lc rgb '#cc0000' notitle";
}

/* One series: its data block, its fitted power law (defined in the script,
 * drawn over the lengths fitted) and its plot clauses into clause. When the
 * series has configurations without a value beyond its longest measured
 * length (xmiss: dense over its time limit, or unsupported), the fit is
 * carried on to xmiss as a dotted line keyed "extrapolated, not measured",
 * drawn only from a fit over at least three points. */
static void series_block(const fig *f, FILE *s, FILE *dat, const char *name, int block, const char *label, const pt *pts,
                         int np, double xmiss, char *clause, size_t clen, int *noisy_keyed) {
    double k = NAN, c = NAN, x0, x1;
    int used = 0, fitted = fit_range(f, pts, np, &k, &c, &used, &x0, &x1) == 0, nz = 0;
    if (block) fprintf(dat, "\n\n");
    fprintf(dat, "# block %d: %s\n", block, label);
    if (fitted)
        fprintf(dat, "# fit %s: exponent %.6f coefficient %.9g (least squares of log value on log seq over the %d "
                     "points n=%.0f..%.0f)\n", label, k, c, used, x0, x1);
    for (int i = 0; i < np; i++)
        fprintf(dat, "%.17g\t%.17g\t%.17g\t%.17g\t%d\n", pts[i].x, pts[i].y, pts[i].lo, pts[i].hi, pts[i].noisy);
    char t[700], q[1400];
    if (fitted && used == np) snprintf(t, sizeof t, "%s: ~n^%.3f (n=%.0f-%.0f)", label, k, x0, x1);
    else if (fitted)
        snprintf(t, sizeof t, "%s: ~n^%.3f (fit n=%.0f-%.0f, %d of %d points)", label, k, x0, x1, used, np);
    else snprintf(t, sizeof t, "%s (%d point%s, %d in the fit range: no fit)", label, np, np == 1 ? "" : "s", used);
    plot_quote(q, sizeof q, t);
    int lc = block % 8 + 1;
    if (fitted)
        fprintf(s, "k%d = %.9g\nc%d = %.9g\nf%d(x) = (x >= %.17g && x <= %.17g) ? c%d * x**k%d : 1/0\n", block, k, block,
                c, block, x0, x1, block, block);
    int o = snprintf(clause, clen, "'%s.dat' index %d using 1:2:3:4 with yerrorlines lc %d pt 7 ps 0.8 title '%s'",
                     name, block, lc, q);
    if (fitted && o < (int)clen) o += snprintf(clause + o, clen - o, ", f%d(x) with lines lc %d dt 2 notitle", block, lc);
    double xlast = np ? pts[np - 1].x : 0;
    if (fitted && used >= 3 && xmiss > xlast && o < (int)clen) {
        fprintf(dat, "# extrapolated %s: the fit carried from n=%.0f to n=%.0f, where it has no measured value "
                     "(%.6g at n=%.0f)\n", label, xlast, xmiss, c * pow(xmiss, k), xmiss);
        fprintf(s, "e%d(x) = (x >= %.17g && x <= %.17g) ? c%d * x**k%d : 1/0\n", block, xlast, xmiss, block, block);
        snprintf(t, sizeof t, "%s: fit extrapolated, not measured (n=%.0f-%.0f)", label, xlast, xmiss);
        plot_quote(q, sizeof q, t);
        o += snprintf(clause + o, clen - o, ", e%d(x) with lines lc %d dt 3 lw 2 title '%s'", block, lc, q);
    }
    for (int i = 0; i < np; i++)
        if (pts[i].noisy) nz++;
    if (nz && o < (int)clen)
        snprintf(clause + o, clen - o, ", '%s.dat' index %d using 1:($5 > 0 ? $2 : 1/0) %s", name, block,
                 noisy_circle(noisy_keyed));
}

/* Log-log figure of `measure` against seq, one line per series. */
static int fig_scaling(const fig *f, const char *name, const char *measure, double yscale, const char *ylabel,
                       const char *what, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    title(s, f, what);
    int xp = rpt_param_index(d, "seq");
    if (xp < 0 || f->ng == 0) {
        placeholder(s, f->ng == 0 ? "no trials in this database (or none match --where)"
                                  : "no sequence-length parameter in this database");
        return finish(f, s, name, err, errlen);
    }
    FILE *dat = data_open(f, name, what, err, errlen);
    if (!dat) return fclose(s), -1;
    fprintf(dat, "# one block per line of the figure (gnuplot index 0, 1, ...); columns: seq  value (%s, median over "
                 "seeds)  error bar low  high (interquartile interval)  noisy trials\n", ylabel);
    int *split = callocCheck((size_t)d->np, sizeof *split), *done = callocCheck((size_t)f->ng, sizeof *done);
    pt *pts = mallocCheck((size_t)f->ng * sizeof *pts);
    missing m = {0};
    char (*plot)[3000] = mallocCheck((size_t)f->ng * sizeof *plot);
    int nplot = 0, noisy_keyed = 0;
    rpt_series_split(d, f->g, f->ng, xp, split);
    for (int a = 0; a < f->ng; a++) {
        if (done[a]) continue;
        char label[512];
        series_label(f, &d->t[f->g[a].first], split, label, sizeof label);
        double xmiss;
        int np = series_points(f, a, xp, split, measure, yscale, done, pts, &m, &xmiss);
        if (np)
            series_block(f, s, dat, name, nplot, label, pts, np, xmiss, plot[nplot], sizeof plot[0], &noisy_keyed),
                nplot++;
    }
    if (m.n) fprintf(dat, "# missing (%d): %s%s\n", m.n, m.text, m.n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    missing_label(s, &m);
    if (nplot == 0) {
        char why[1200];
        snprintf(why, sizeof why, "no configuration has a %s value", measure);
        placeholder(s, why);
    } else {
        char yl[600];
        plot_quote(yl, sizeof yl, ylabel);
        /* the key under the plot, the plot's bottom raised to leave it room
         * (beside the plot, fitted exponents' long titles squeeze it into a
         * strip; gnuplot's own room for a key below overlaps the x label) */
        int nkey = 0;
        for (int i = 0; i < nplot; i++)
            for (const char *p = plot[i]; (p = strstr(p, " title '")) != NULL; p++) nkey++;
        fprintf(s, "set key below box\nset bmargin at screen %.3f\nset format x '%%.0f'\nset logscale xy\n"
                   "set xlabel 'sequence length n'\n", fmin(0.55, (4.5 + nkey) * 16 / 600.0));
        fprintf(s, "set ylabel '%s'\nset bars small\nplot ", yl);
        for (int i = 0; i < nplot; i++) fprintf(s, "%s%s", i ? ", \\\n     " : "", plot[i]);
        fprintf(s, "\n");
    }
    free(plot), free(pts), free(done), free(split);
    return finish(f, s, name, err, errlen);
}

/* ------------------------------------------------------------------ */
/* training curves                                                     */

typedef struct {
    int n;
    int *step;
    double *v;
} curve;

static int load_curve(const rpt_db *d, int64_t trial, const char *name, curve *c) {
    memset(c, 0, sizeof *c);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, "SELECT step, value FROM metrics WHERE trial_id = ? AND name = ? AND step IS NOT "
                                  "NULL AND value IS NOT NULL ORDER BY step",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, trial);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->n == cap) {
            cap = cap ? 2 * cap : 64;
            c->step = reallocCheck(c->step, (size_t)cap * sizeof *c->step);
            c->v = reallocCheck(c->v, (size_t)cap * sizeof *c->v);
        }
        c->step[c->n] = sqlite3_column_int(st, 0);
        c->v[c->n++] = sqlite3_column_double(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void free_curve(curve *c) { free(c->step), free(c->v); }

/* One configuration's block of curves.dat; 1 when some step has several seeds. */
static int curve_block(FILE *dat, int nb, const char *gl, const int *steps, const double *sum, const double *ssq,
                       const double *tsum, const int *cnt, int ns) {
    int multi = 0;
    if (nb) fprintf(dat, "\n\n");
    fprintf(dat, "# block %d: %s\n", nb, gl);
    for (int k = 0; k < ns; k++) {
        if (!cnt[k]) continue;
        double mean = sum[k] / cnt[k], var = cnt[k] > 1 ? fmax(0, (ssq[k] - cnt[k] * mean * mean) / (cnt[k] - 1)) : 0;
        double ci = cnt[k] > 1 ? rpt_student_t(0.975, cnt[k] - 1) * sqrt(var / cnt[k]) : 0;
        multi |= cnt[k] > 1;
        fprintf(dat, "%d\t%.17g\t%.17g\t%d\t%.17g\n", steps[k], mean, tsum[k] / cnt[k], cnt[k], ci);
    }
    return multi;
}

/* Write curves.dat (once for both figures): per configuration a block of
 * step, mean eval loss over seeds, mean training seconds up to that step,
 * seeds, the 95% CI half-width of the mean loss. *multi: some point has
 * several seeds (error bars drawn). */
static int write_curves(const fig *f, int *nblocks, int *multi, char (*labels)[600], missing *m, char *err,
                        size_t errlen) {
    const rpt_db *d = f->d;
    FILE *dat = data_open(f, "curves", "evaluation loss during training", err, errlen);
    if (!dat) return -1;
    fprintf(dat, "# one block per configuration (gnuplot index 0, 1, ...); columns: step  eval_loss (mean over seeds)  "
                 "training seconds (sum of step times up to the step, mean over seeds)  seeds  95%% confidence "
                 "half-width of the mean loss (Student t; 0 from one seed)\n");
    *multi = 0;
    int nb = 0;
    for (int a = 0; a < f->ng; a++) {
        const rpt_group *g = &f->g[a];
        char gl[600];
        rpt_group_label(d, g, f->varying, gl, sizeof gl);
        /* the steps of the first done trial with a curve set the grid */
        int ns = 0, *steps = NULL;
        double *sum = NULL, *tsum = NULL, *ssq = NULL;
        int *cnt = NULL;
        for (int i = 0; i < g->n; i++) {
            const rpt_trial *t = &d->t[g->ti[i]];
            if (strcmp(t->status, ST_DONE) != 0) continue;
            curve ev, sm;
            if (load_curve(d, t->id, "eval_loss", &ev) || load_curve(d, t->id, "step_ms", &sm)) {
                fclose(dat);
                return rb_fail(err, errlen, "%s: reading curves: %s", d->path, sqlite3_errmsg(d->db));
            }
            if (ev.n && !steps) {
                ns = ev.n;
                steps = mallocCheck((size_t)ns * sizeof *steps);
                memcpy(steps, ev.step, (size_t)ns * sizeof *steps);
                sum = callocCheck((size_t)ns, sizeof *sum), ssq = callocCheck((size_t)ns, sizeof *ssq);
                tsum = callocCheck((size_t)ns, sizeof *tsum);
                cnt = callocCheck((size_t)ns, sizeof *cnt);
            }
            /* merge: cumulative step time up to each evaluated step */
            double cum = 0;
            int j = 0;
            for (int e = 0; e < ev.n; e++) {
                while (j < sm.n && sm.step[j] <= ev.step[e]) cum += sm.v[j++];
                for (int k = 0; k < ns; k++)
                    if (steps[k] == ev.step[e]) {
                        sum[k] += ev.v[e], ssq[k] += ev.v[e] * ev.v[e], tsum[k] += cum * 1e-3, cnt[k]++;
                        break;
                    }
            }
            free_curve(&ev), free_curve(&sm);
        }
        if (!steps) {
            char why[64];
            why_missing(f, g, "eval curve", why, sizeof why);
            missing_add(m, gl, why);
            continue;
        }
        *multi |= curve_block(dat, nb, gl, steps, sum, ssq, tsum, cnt, ns);
        snprintf(labels[nb], sizeof labels[0], "%s", gl);
        nb++;
        free(steps), free(sum), free(ssq), free(tsum), free(cnt);
    }
    if (m->n) fprintf(dat, "# missing (%d): %s%s\n", m->n, m->text, m->n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    *nblocks = nb;
    return 0;
}

static int fig_curves(const fig *f, int want_step, int want_time, char *err, size_t errlen) {
    int nb = 0, multi = 0;
    missing m = {0};
    char (*labels)[600] = mallocCheck((size_t)(f->ng ? f->ng : 1) * sizeof *labels);
    if (write_curves(f, &nb, &multi, labels, &m, err, errlen)) return free(labels), -1;
    for (int which = 0; which < 2; which++) {
        if ((which == 0 && !want_step) || (which == 1 && !want_time)) continue;
        const char *name = which == 0 ? "curves_step" : "curves_time";
        FILE *s = script_open(f, name, err, errlen);
        if (!s) return free(labels), -1;
        title(s, f, which == 0 ? "evaluation loss against step" : "evaluation loss against training time");
        missing_label(s, &m);
        if (nb == 0) {
            placeholder(s, f->ng ? "no evaluation curves in this database (curves come from kind: train experiments)"
                                 : "no trials in this database (or none match --where)");
        } else {
            fprintf(s, "set xlabel '%s'\nset ylabel 'evaluation loss (nats/token)'\n",
                    which == 0 ? "step" : "training time (s, sum of step times)");
            if (multi) fprintf(s, "set label 2 'error bars: 95%% confidence interval of the mean over seeds' at "
                                  "graph 0.01, graph 0.97 left font ',8'\nset bars small\n");
            fprintf(s, "plot ");
            for (int b = 0; b < nb; b++) {
                char q[1300];
                plot_quote(q, sizeof q, labels[b]);
                fprintf(s, "%s'curves.dat' index %d using %d:2%s with %s lc %d pt 7 ps 0.6 title '%s'",
                        b ? ", \\\n     " : "", b, which == 0 ? 1 : 3, multi ? ":5" : "",
                        multi ? "yerrorlines" : "linespoints", b % 8 + 1, q);
            }
            fprintf(s, "\n");
        }
        if (finish(f, s, name, err, errlen)) return free(labels), -1;
    }
    free(labels);
    return 0;
}

/* ------------------------------------------------------------------ */
/* heatmap                                                             */

/* What the heatmap works with: its axes and measure, the configurations
 * drawn (use), the sorted axis values, and the panels: one per backend (and
 * per other parameter that varies), so a cell never mixes configurations. */
typedef struct {
    const char *xn, *yn, *meas;
    int xp, yp, sp, nuse, nx, ny, npan;
    int *use, *pan;          /* [ng]: drawn; its panel */
    const char **xv, **yv;   /* [nx], [ny] */
    char (*plabel)[512];     /* [npan] */
    char fixed[256];
} heat;

/* Both axes apply; seq moves everything: keep the longest one with a value. */
static void heat_pick(const fig *f, heat *h) {
    const rpt_db *d = f->d;
    h->use = callocCheck((size_t)(f->ng ? f->ng : 1), sizeof *h->use);
    for (int a = 0; a < f->ng && h->xp >= 0 && h->yp >= 0; a++) {
        const rpt_trial *t = &d->t[f->g[a].first];
        if (t->pv[h->xp] && t->pv[h->yp]) h->use[a] = 1, h->nuse++;
    }
    if (h->sp < 0 || h->sp == h->xp || h->sp == h->yp || !h->nuse) return;
    double best = -1;
    for (int a = 0; a < f->ng; a++)
        if (h->use[a] && isfinite(rpt_group_value(d, &f->g[a], h->meas))) best = fmax(best, num(d->t[f->g[a].first].pv[h->sp]));
    for (int a = 0; a < f->ng && best < 0; a++)
        if (h->use[a]) best = fmax(best, num(d->t[f->g[a].first].pv[h->sp]));
    for (int a = 0; a < f->ng; a++)
        if (h->use[a] && num(d->t[f->g[a].first].pv[h->sp]) != best) h->use[a] = 0, h->nuse--;
    snprintf(h->fixed, sizeof h->fixed, ", seq=%g", best);
}

static int add_value(const char **v, int n, const char *x) {
    int i = 0;
    while (i < n && strcmp(v[i], x)) i++;
    if (i == n) v[n++] = x;
    for (int j = n - 1; j > 0 && cmp_val(v[j - 1], v[j]) > 0; j--) {
        const char *t = v[j];
        v[j] = v[j - 1], v[j - 1] = t;
    }
    return n;
}

/* Axis values and panels of the configurations drawn. */
static void heat_layout(const fig *f, heat *h) {
    const rpt_db *d = f->d;
    int *split = callocCheck((size_t)(d->np ? d->np : 1), sizeof *split);
    for (int p = 0; p < d->np; p++) split[p] = f->varying[p] && p != h->xp && p != h->yp && p != h->sp;
    h->xv = mallocCheck((size_t)h->nuse * sizeof *h->xv), h->yv = mallocCheck((size_t)h->nuse * sizeof *h->yv);
    h->pan = callocCheck((size_t)f->ng, sizeof *h->pan);
    h->plabel = mallocCheck((size_t)h->nuse * sizeof *h->plabel);
    for (int a = 0; a < f->ng; a++) {
        if (!h->use[a]) continue;
        const rpt_trial *t = &d->t[f->g[a].first];
        h->nx = add_value(h->xv, h->nx, t->pv[h->xp]);
        h->ny = add_value(h->yv, h->ny, t->pv[h->yp]);
        char l[512];
        rpt_series_label(d, t, split, l, sizeof l);
        int k = 0;
        while (k < h->npan && strcmp(h->plabel[k], l)) k++;
        if (k == h->npan) snprintf(h->plabel[h->npan++], sizeof h->plabel[0], "%s", l);
        h->pan[a] = k;
    }
    free(split);
}

static int axis_index(const char **v, int n, const char *x) {
    int i = 0;
    while (i < n - 1 && strcmp(v[i], x)) i++;
    return i;
}

/* One block per panel: i  j  value (0 when missing)  "label"  missing(0/1)
 * "x" "y". Counts of valued and missing cells per panel; the value range. */
static void heat_data(const fig *f, const heat *h, FILE *dat, int *nval, int *nmiss, double *lo, double *hi) {
    const rpt_db *d = f->d;
    *lo = INFINITY, *hi = -INFINITY;
    for (int k = 0; k < h->npan; k++) {
        fprintf(dat, "%s# block %d: panel %s\n", k ? "\n\n" : "", k, h->plabel[k]);
        nval[k] = nmiss[k] = 0;
        for (int a = 0; a < f->ng; a++) {
            if (!h->use[a] || h->pan[a] != k) continue;
            const rpt_trial *t = &d->t[f->g[a].first];
            double v = rpt_group_value(d, &f->g[a], h->meas);
            char lab[64], qx[200], qy[200];
            if (!isfinite(v)) snprintf(lab, sizeof lab, "%s", f->g[a].ndone ? "n/a" : t->status), nmiss[k]++;
            else if (!strcmp(h->meas, "sgemm")) snprintf(lab, sizeof lab, "%.1f%%", 100 * v), nval[k]++;
            else snprintf(lab, sizeof lab, "%.5g", v), nval[k]++;
            if (isfinite(v)) *lo = fmin(*lo, v), *hi = fmax(*hi, v);
            dq(qx, sizeof qx, t->pv[h->xp]), dq(qy, sizeof qy, t->pv[h->yp]);
            fprintf(dat, "%d\t%d\t%.17g\t\"%s\"\t%d\t\"%s\"\t\"%s\"\n", axis_index(h->xv, h->nx, t->pv[h->xp]),
                    axis_index(h->yv, h->ny, t->pv[h->yp]), isfinite(v) ? v : 0.0, lab, !isfinite(v), qx, qy);
        }
    }
}

static void heat_axes(FILE *s, const heat *h, double lo, double hi) {
    char q[600];
    fprintf(s, "unset key\nunset grid\nset xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\n", h->nx - 1, h->ny - 1);
    plot_quote(q, sizeof q, h->xn);
    fprintf(s, "set xlabel '%s'\n", q);
    plot_quote(q, sizeof q, h->yn);
    fprintf(s, "set ylabel '%s'\nset xtics (", q);
    for (int i = 0; i < h->nx; i++) plot_quote(q, sizeof q, h->xv[i]), fprintf(s, "%s'%s' %d", i ? ", " : "", q, i);
    fprintf(s, ")\nset ytics (");
    for (int j = 0; j < h->ny; j++) plot_quote(q, sizeof q, h->yv[j]), fprintf(s, "%s'%s' %d", j ? ", " : "", q, j);
    plot_quote(q, sizeof q, rpt_measure_label(h->meas));
    fprintf(s, ")\nset cblabel '%s'\nset palette rgbformulae 33,13,10\n", q);
    /* one colour scale for every panel; one value: widen (gnuplot warns about an empty range) */
    if (hi > lo) fprintf(s, "set cbrange [%.17g:%.17g]\n", lo, hi);
    else if (isfinite(lo)) fprintf(s, "set cbrange [%.17g:%.17g]\n", lo - (lo ? 0.01 * fabs(lo) : 1), hi + (lo ? 0.01 * fabs(lo) : 1));
}

/* The panels' plot commands in a multiplot. */
static void heat_plots(FILE *s, const heat *h, const char *tt, const int *nval, const int *nmiss) {
    int cols = h->npan < 3 ? h->npan : 3, rows = (h->npan + cols - 1) / cols;
    char q[1200];
    plot_quote(q, sizeof q, tt);
    fprintf(s, "set multiplot layout %d,%d title '%s'\n", rows, cols, q);
    for (int k = 0; k < h->npan; k++) {
        plot_quote(q, sizeof q, h->plabel[k]);
        fprintf(s, "set title '%s'\nplot ", q);
        if (nval[k])
            fprintf(s, "'heatmap.dat' index %d using 1:($5 == 0 ? $2 : 1/0):(0.5):(0.5):3 with boxxyerror fs solid 1.0 "
                       "noborder fc palette notitle, \\\n     '' index %d using 1:($5 == 0 ? $2 : 1/0):4 with labels "
                       "notitle%s", k, k, nmiss[k] ? ", \\\n     " : "");
        if (nmiss[k])
            fprintf(s, "'heatmap.dat' index %d using 1:($5 == 1 ? $2 : 1/0):4 with labels textcolor rgb '#aa0000' "
                       "notitle", k);
        fprintf(s, "\n");
    }
    fprintf(s, "unset multiplot\n");
}

static void heat_free(heat *h) { free(h->use), free(h->pan), free(h->xv), free(h->yv), free(h->plabel); }

static int fig_heatmap(const fig *f, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    const char *name = "heatmap";
    heat h;
    memset(&h, 0, sizeof h);
    h.xn = f->o->heat_x ? f->o->heat_x : "clusters", h.yn = f->o->heat_y ? f->o->heat_y : "window";
    h.meas = f->o->heat_metric ? f->o->heat_metric : rpt_measure_present(d, "loss") ? "loss" : "time";
    h.xp = rpt_param_index(d, h.xn), h.yp = rpt_param_index(d, h.yn), h.sp = rpt_param_index(d, "seq");
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    heat_pick(f, &h);
    char what[600], tt[1200];
    snprintf(what, sizeof what, "%s over %s x %s%s, one panel per backend", rpt_measure_label(h.meas), h.xn, h.yn,
             h.fixed);
    snprintf(tt, sizeof tt, "%s: %s", d->exp_name[0] ? d->exp_name : d->path, what);
    if (!h.nuse) {
        char why[400];
        if (h.xp < 0 || h.yp < 0) snprintf(why, sizeof why, "no parameter '%s' in this database", h.xp < 0 ? h.xn : h.yn);
        else snprintf(why, sizeof why, "no configuration has both %s and %s (e.g. routing with a window)", h.xn, h.yn);
        title(s, f, what);
        placeholder(s, why);
        heat_free(&h);
        return finish(f, s, name, err, errlen);
    }
    heat_layout(f, &h);
    FILE *dat = data_open(f, name, tt, err, errlen);
    if (!dat) return fclose(s), heat_free(&h), -1;
    fprintf(dat, "# one block per panel (backend, and any other parameter that varies); columns: %s index  %s index  "
                 "%s (mean over seeds, median for timings; 0 when missing)  label  missing  %s  %s\n",
            h.xn, h.yn, h.meas, h.xn, h.yn);
    int *nval = callocCheck((size_t)h.npan, sizeof *nval), *nmiss = callocCheck((size_t)h.npan, sizeof *nmiss);
    double lo, hi;
    heat_data(f, &h, dat, nval, nmiss, &lo, &hi);
    fclose(dat);
    heat_axes(s, &h, lo, hi);
    heat_plots(s, &h, tt, nval, nmiss);
    free(nval), free(nmiss);
    heat_free(&h);
    return finish(f, s, name, err, errlen);
}

/* ------------------------------------------------------------------ */
/* quality against speed                                               */

/* Columns 5-9 of tradeoff.dat: the time's interquartile interval, the loss's
 * 95% confidence interval (a point from one seed), the noisy trials. */
static void tradeoff_bars(const fig *f, const rpt_group *g, const char *tmeas, FILE *dat) {
    double lo, hi;
    rpt_group_interval(f->d, g, tmeas, &lo, &hi);
    rpt_stat l = rpt_group_stat(f->d, g, "loss");
    double h = l.n > 1 ? l.ci : 0;
    fprintf(dat, "%.17g\t%.17g\t%.17g\t%.17g\t%d", lo, hi, l.mean - h, l.mean + h, rpt_group_noisy(f->d, g, NULL, 0));
}

/* How many configurations have both a loss and a step time (the tradeoff
 * figure's points), and the largest memory among them into *maxmem. */
static int tradeoff_count(const fig *f, const char *tmeas, const char *mmeas, double *maxmem) {
    int nval = 0;
    *maxmem = 0;
    for (int a = 0; a < f->ng; a++) {
        double y = rpt_group_value(f->d, &f->g[a], "loss"), x = rpt_group_value(f->d, &f->g[a], tmeas);
        double mem = rpt_group_value(f->d, &f->g[a], mmeas);
        if (isfinite(y) && x > 0) nval++, *maxmem = fmax(*maxmem, isfinite(mem) ? mem : 0);
    }
    return nval;
}

/* The trade-off figure's point size for a memory frac of the largest (its
 * points and the key of sizes both). */
static double tradeoff_ps(double frac) { return 0.8 + 3.2 * sqrt(frac); }

/* Block nb of tradeoff.dat: the rows of backend be's configurations from
 * group a on (each marked in bdone), point size by memory against maxmem;
 * one without a loss or a time goes to m instead. Returns the rows written;
 * *nz counts those with noisy trials. */
static int tradeoff_block(const fig *f, int a, int *bdone, const char *tmeas, const char *mmeas, double maxmem,
                          int nb, FILE *dat, missing *m, int *nz) {
    const rpt_db *d = f->d;
    const char *be = d->t[f->g[a].first].backend;
    int np = 0;
    for (int b = a; b < f->ng; b++) {
        if (bdone[b] || strcmp(d->t[f->g[b].first].backend, be) != 0) continue;
        bdone[b] = 1;
        double y = rpt_group_value(d, &f->g[b], "loss"), x = rpt_group_value(d, &f->g[b], tmeas);
        double mem = rpt_group_value(d, &f->g[b], mmeas);
        char gl[600];
        rpt_group_label(d, &f->g[b], f->varying, gl, sizeof gl);
        if (!isfinite(y) || !(x > 0)) {
            char why[64];
            why_missing(f, &f->g[b], !isfinite(y) ? "loss" : "time", why, sizeof why);
            missing_add(m, gl, why);
            continue;
        }
        if (!np) fprintf(dat, "%s# block %d: %s\n", nb ? "\n\n" : "", nb, be);
        double ps = isfinite(mem) && maxmem > 0 ? tradeoff_ps(mem / maxmem) : 1.0;
        char q[700];
        dq(q, sizeof q, gl);
        fprintf(dat, "%.17g\t%.17g\t%.4f\t%.6g\t", x, y, ps, isfinite(mem) ? mem / 1048576.0 : NAN);
        tradeoff_bars(f, &f->g[b], tmeas, dat);
        fprintf(dat, "\t\"%s\"\n", q);
        *nz += rpt_group_noisy(d, &f->g[b], NULL, 0) > 0;
        np++;
    }
    return np;
}

static int fig_tradeoff(const fig *f, const char *tmeas, const char *mmeas, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    const char *name = "tradeoff";
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    title(s, f, "final evaluation loss against step time (point size: memory)");
    missing m = {0};
    double maxmem;
    if (!tradeoff_count(f, tmeas, mmeas, &maxmem)) {
        placeholder(s, f->ng ? "no configuration has both an evaluation loss and a step time "
                               "(quality against speed needs kind: train)"
                             : "no trials in this database (or none match --where)");
        return finish(f, s, name, err, errlen);
    }
    FILE *dat = data_open(f, name, "final evaluation loss against step time", err, errlen);
    if (!dat) return fclose(s), -1;
    fprintf(dat, "# one block per backend; columns: step ms (median over seeds)  eval loss (mean over seeds)  "
                 "point size  memory MiB (%s)  time low  high (interquartile interval)  loss low  high (95%% "
                 "confidence interval of the mean, Student t; the mean from one seed)  noisy trials  configuration\n",
            mmeas);
    /* backends in first-seen order */
    int *bdone = callocCheck((size_t)f->ng, sizeof *bdone);
    char (*plot)[900] = mallocCheck((size_t)f->ng * sizeof *plot);
    int nb = 0, noisy_keyed = 0;
    for (int a = 0; a < f->ng; a++) {
        if (bdone[a]) continue;
        const char *be = d->t[f->g[a].first].backend;
        int nz = 0;
        if (!tradeoff_block(f, a, bdone, tmeas, mmeas, maxmem, nb, dat, &m, &nz)) continue;
        char q[600];
        plot_quote(q, sizeof q, be);
        int o = snprintf(plot[nb], sizeof plot[0],
                         "'tradeoff.dat' index %d using 1:2:5:6:7:8 with xyerrorbars lc %d pt 0 notitle, '' index %d "
                         "using 1:2:3 with points pt 7 ps variable lc %d title '%s'",
                         nb, nb % 8 + 1, nb, nb % 8 + 1, q);
        if (nz)
            snprintf(plot[nb] + o, sizeof plot[0] - o, ", '' index %d using 1:($9 > 0 ? $2 : 1/0) %s", nb,
                     noisy_circle(&noisy_keyed));
        nb++;
    }
    if (m.n) fprintf(dat, "# missing (%d): %s%s\n", m.n, m.text, m.n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    char tl[128];
    snprintf(tl, sizeof tl, "%s", rpt_measure_label(tmeas));
    fprintf(s, "set logscale x\nset xlabel 'step time (%s, median over seeds; bars: interquartile interval)'\n"
               "set ylabel 'final evaluation loss (bars: 95%% CI over seeds)'\nset bars small\n", tl);
    fprintf(s, "set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n");
    missing_label(s, &m);
    fprintf(s, "plot ");
    for (int i = 0; i < nb; i++) fprintf(s, "%s%s", i ? ", \\\n     " : "", plot[i]);
    /* the key for point sizes: open circles at the largest memory and at a
     * quarter and a sixteenth of it, sized as the points are */
    if (maxmem > 0)
        for (int k = 0; k < 3; k++) {
            double frac = k == 0 ? 1.0 : k == 1 ? 0.25 : 0.0625;
            fprintf(s, ", \\\n     keyentry with points pt 6 ps %.4f lc rgb 'gray40' title 'memory %.4g MiB'",
                    tradeoff_ps(frac), maxmem * frac / 1048576.0);
        }
    fprintf(s, "\n");
    free(bdone), free(plot);
    return finish(f, s, name, err, errlen);
}

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* crossover                                                           */

/* crossover.dat: per series, length  time/dense  low  high  noisy; the
 * clauses into plot. Returns the blocks written. */
static int cross_time_data(FILE *dat, const rpt_cross *c, int n, char (*plot)[1600], FILE *s) {
    int nb = 0, noisy_keyed = 0;
    for (int i = 0; i < n; i++) {
        if (!c[i].n) continue;
        fprintf(dat, "%s# block %d: %s\n", nb ? "\n\n" : "", nb, c[i].label);
        int nz = 0;
        for (int k = 0; k < c[i].n; k++)
            fprintf(dat, "%.17g\t%.17g\t%.17g\t%.17g\t%d\n", c[i].x[k], c[i].ratio[k], c[i].rlo[k], c[i].rhi[k],
                    c[i].noisy[k]), nz += c[i].noisy[k] > 0;
        char t[700], q[1400];
        if (c[i].time_case == RPT_X_AT) snprintf(t, sizeof t, "%s: below dense from n=%.0f", c[i].label, c[i].time_at);
        else if (c[i].time_case == RPT_X_BELOW_FIRST) snprintf(t, sizeof t, "%s: below dense at every length", c[i].label);
        else snprintf(t, sizeof t, "%s: not below dense within the lengths", c[i].label);
        plot_quote(q, sizeof q, t);
        int lc = nb % 8 + 1;
        int o = snprintf(plot[nb], 1600, "'crossover.dat' index %d using 1:2:3:4 with yerrorlines lc %d pt 7 ps 0.8 "
                                         "title '%s'", nb, lc, q);
        if (nz) snprintf(plot[nb] + o, 1600 - o, ", '' index %d using 1:($5 > 0 ? $2 : 1/0) %s", nb,
                         noisy_circle(&noisy_keyed));
        if (c[i].time_case == RPT_X_AT)
            fprintf(s, "set arrow %d from %.17g, graph 0 to %.17g, graph 1 nohead dt 2 lc %d\n", nb + 1, c[i].time_at,
                    c[i].time_at, lc);
        nb++;
    }
    return nb;
}

/* The ratio of each sparse series' time to dense's against length, log-log,
 * the line 1 where they are equal, the interpolated crossovers dashed. */
static int fig_crossover(const fig *f, char *err, size_t errlen) {
    const char *name = "crossover";
    rpt_cross *c = NULL;
    int n = 0;
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    title(s, f, "sparse time / dense time at the same parameters");
    if (rpt_crossover(f->d, 0.01 /* the loss tolerance: not drawn */, &c, &n, err, errlen)) {
        placeholder(s, err);
        return finish(f, s, name, err, errlen);
    }
    FILE *dat = data_open(f, name, "sparse time / dense time", err, errlen);
    if (!dat) return fclose(s), rpt_crossover_free(c, n), -1;
    fprintf(dat, "# one block per sparse series; columns: seq  time / dense time (medians)  low  high (from the "
                 "interquartile intervals)  noisy trials\n");
    char (*plot)[1600] = mallocCheck((size_t)(n ? n : 1) * sizeof *plot);
    int nb = cross_time_data(dat, c, n, plot, s);
    fclose(dat);
    if (!nb) {
        placeholder(s, "no sparse configuration has a dense one with the same parameters and a time");
    } else {
        double x0 = INFINITY, x1 = 0;
        for (int i = 0; i < n; i++)
            if (c[i].n) x0 = fmin(x0, c[i].x[0]), x1 = fmax(x1, c[i].x[c[i].n - 1]);
        if (x1 <= x0) fprintf(s, "set xrange [%.17g:%.17g]\n", x0 / 2, x0 * 2); /* one length: gnuplot would warn */
        fprintf(s, "set logscale xy\nset xlabel 'sequence length n'\nset ylabel 'time / dense time (bars: "
                   "interquartile interval)'\nset bars small\nplot ");
        for (int i = 0; i < nb; i++) fprintf(s, "%s, \\\n     ", plot[i]);
        fprintf(s, "1 with lines lc rgb 'black' dt 3 title 'dense (ratio 1)'\n");
    }
    free(plot);
    rpt_crossover_free(c, n);
    return finish(f, s, name, err, errlen);
}

/* ------------------------------------------------------------------ */

static int wanted(const char *only, const char *name) {
    if (!only || !*only) return 1;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        while (*p == ',' || *p == ' ') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        size_t l = (size_t)(e - p);
        while (l && p[l - 1] == ' ') l--;
        if ((l == n && strncmp(p, name, n) == 0) || (l == 6 && !strncmp(p, "curves", 6) && !strncmp(name, "curves", 6)))
            return 1;
        p = e;
    }
    return 0;
}

/* Some done trial has an evaluation curve. */
static int has_curves(const rpt_db *d) {
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(d->db, "SELECT 1 FROM metrics WHERE trial_id = ? AND name = 'eval_loss' AND step IS NOT NULL "
                                  "AND value IS NOT NULL LIMIT 1", -1, &st, NULL) != SQLITE_OK)
        return 1; /* cannot tell: draw it, and the figure says what it finds */
    for (int i = 0; i < d->nt && !found; i++) {
        if (strcmp(d->t[i].status, ST_DONE) != 0) continue;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, d->t[i].id);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* Some configuration has seq and a positive value of measure. */
static int has_scaling(const fig *f, const char *measure) {
    int xp = rpt_param_index(f->d, "seq");
    for (int a = 0; a < f->ng && xp >= 0; a++)
        if (num(f->d->t[f->g[a].first].pv[xp]) > 0 && rpt_group_value(f->d, &f->g[a], measure) > 0) return 1;
    return 0;
}

static int has_heatmap(const fig *f) {
    const rpt_db *d = f->d;
    const char *xn = f->o->heat_x ? f->o->heat_x : "clusters", *yn = f->o->heat_y ? f->o->heat_y : "window";
    const char *meas = f->o->heat_metric ? f->o->heat_metric : rpt_measure_present(d, "loss") ? "loss" : "time";
    int xp = rpt_param_index(d, xn), yp = rpt_param_index(d, yn);
    for (int a = 0; a < f->ng && xp >= 0 && yp >= 0; a++) {
        const rpt_trial *t = &d->t[f->g[a].first];
        if (t->pv[xp] && t->pv[yp] && isfinite(rpt_group_value(d, &f->g[a], meas))) return 1;
    }
    return 0;
}

static int has_crossover(const fig *f) {
    rpt_cross *c;
    int n, found = 0;
    char err[256];
    if (rpt_crossover(f->d, 0.01, &c, &n, err, sizeof err)) return 0;
    for (int i = 0; i < n; i++) found |= c[i].n > 0;
    rpt_crossover_free(c, n);
    return found;
}

/* Why figure `name` has nothing to draw, or NULL when it has data. */
static const char *no_data(const fig *f, const char *name, const char *tmeas, const char *mmeas) {
    const rpt_db *d = f->d;
    if (!f->ng) return "no trials (or none match --where)";
    if (!strcmp(name, "scaling") || !strcmp(name, "memory")) {
        if (rpt_param_index(d, "seq") < 0) return "no sequence-length parameter";
        if (!has_scaling(f, !strcmp(name, "scaling") ? tmeas : mmeas))
            return !strcmp(name, "scaling") ? "no configuration has a time" : "no configuration has a memory measure";
        return NULL;
    }
    if (!strncmp(name, "curves", 6)) return has_curves(d) ? NULL : "no evaluation curves (kind: train experiments have them)";
    if (!strcmp(name, "heatmap"))
        return has_heatmap(f) ? NULL : "no configuration with a value has both heatmap parameters (--heatmap-x, --heatmap-y)";
    if (!strcmp(name, "tradeoff")) {
        for (int a = 0; a < f->ng; a++)
            if (isfinite(rpt_group_value(d, &f->g[a], "loss")) && rpt_group_value(d, &f->g[a], tmeas) > 0) return NULL;
        return "no configuration has both an evaluation loss and a time (kind: train)";
    }
    if (!strcmp(name, "crossover"))
        return has_crossover(f) ? NULL : "no sparse configuration has a dense one with the same parameters and a time";
    if (!strcmp(name, "kept_mass"))
        return rpt_measure_present(d, "analyze.kept_mass.routing") || rpt_measure_present(d, "analyze.kept_mass.local")
                   ? NULL
                   : "no analyze trials";
    return NULL;
}

static int check_only(const char *only, char *err, size_t errlen) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", only);
    for (char *tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
        int ok = !strcmp(tok, "curves") || !strcmp(tok, "kept_mass");
        for (int i = 0; i < PLOT_NFIGURES; i++) ok |= !strcmp(tok, plot_figures[i]);
        if (!ok)
            return rb_fail(err, errlen, "--only: no figure '%s' (scaling, memory, curves_step, curves_time, curves, "
                                        "heatmap, tradeoff, crossover, kept_mass)", tok);
    }
    return 0;
}

/* The memory figure's y label: what the measure is. */
static void memory_label(const char *mmeas, char *out, size_t len) {
    if (!strcmp(mmeas, "act_mem"))
        snprintf(out, len, "activation memory, MiB (backend act_bytes or training arena peak; median)");
    else if (!strcmp(mmeas, "mem")) snprintf(out, len, "peak resident set size of the trial's process, MiB (median)");
    else if (strstr(mmeas, "bytes")) snprintf(out, len, "%s, MiB (median)", mmeas);
    else snprintf(out, len, "%s (median)", mmeas);
}

/* Draw figure i of plot_figures (and the second curve figure with the first). */
static int draw(const fig *f, const char *name, const char *tmeas, const char *mmeas, int ws, int wt, char *err,
                size_t errlen) {
    char ylabel[200];
    if (!strcmp(name, "scaling")) {
        snprintf(ylabel, sizeof ylabel, "%s", strcmp(tmeas, "time") ? tmeas : "step time (ms, median; bars: IQR)");
        return fig_scaling(f, "scaling", tmeas, 1.0, ylabel, "time against sequence length", err, errlen);
    }
    if (!strcmp(name, "memory")) {
        int bytes = !strcmp(mmeas, "act_mem") || !strcmp(mmeas, "mem") || strstr(mmeas, "bytes");
        memory_label(mmeas, ylabel, sizeof ylabel);
        return fig_scaling(f, "memory", mmeas, bytes ? 1.0 / 1048576.0 : 1.0, ylabel,
                           !strcmp(mmeas, "act_mem") ? "activation memory against sequence length"
                           : !strcmp(mmeas, "mem")   ? "peak RSS against sequence length"
                                                     : "memory against sequence length",
                           err, errlen);
    }
    if (!strncmp(name, "curves", 6)) return fig_curves(f, ws, wt, err, errlen);
    if (!strcmp(name, "heatmap")) return fig_heatmap(f, err, errlen);
    if (!strcmp(name, "tradeoff")) return fig_tradeoff(f, tmeas, mmeas, err, errlen);
    if (!strcmp(name, "crossover")) return fig_crossover(f, err, errlen);
    return analyze_plot_kept(f->d, f->o->out_dir, f->o->format, f->o->dumb, f->o->quiet, err, errlen);
}

int plot_all(const rpt_db *d, const plot_opts *o, plot_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    int only = o->only && *o->only;
    if (only && check_only(o->only, err, errlen)) return -1;
    const char *tmeas = o->time_metric ? o->time_metric : "time";
    const char *mmeas = o->mem_metric ? o->mem_metric : rpt_measure_present(d, "act_mem") ? "act_mem" : "mem";
    if (rpt_measure_check(d, tmeas, err, errlen) || rpt_measure_check(d, mmeas, err, errlen)) return -1;
    if (o->heat_metric && rpt_measure_check(d, o->heat_metric, err, errlen)) return -1;
    fig f = {d, o, NULL, NULL, 0, NULL};
    if (!o->dumb && !(f.term = plot_terminal(o->format, err, errlen))) return -1;
    if (rb_mkdir_p(o->out_dir, err, errlen)) return -1;
    if (rpt_group_trials(d, NULL, &f.g, &f.ng, err, errlen)) return -1;
    f.varying = callocCheck((size_t)(d->np ? d->np : 1), sizeof *f.varying);
    rpt_varying(d, f.g, f.ng, f.varying);
    static const char *const order[] = {"scaling", "memory", "curves_step", "curves_time", "heatmap",
                                        "tradeoff", "crossover", "kept_mass"};
    int ws = wanted(o->only, "curves_step"), wt = wanted(o->only, "curves_time"), rc = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !rc; i++) {
        const char *name = order[i];
        /* kept_mass is not in the default set unless there are analyze trials (as before) */
        if (!wanted(o->only, name) || (!strcmp(name, "curves_time") && ws)) continue;
        const char *why = no_data(&f, name, tmeas, mmeas);
        if (why && !only) {
            for (int both = 0; both < 1 + (!strcmp(name, "curves_step") && wt); both++) {
                if (!strcmp(name, "kept_mass")) break;
                size_t l = strlen(r->skipped);
                snprintf(r->skipped + l, sizeof r->skipped - l, "%s: %s\n", both ? "curves_time" : name, why);
                r->nskipped++;
            }
            continue;
        }
        rc = draw(&f, name, tmeas, mmeas, ws, wt, err, errlen);
        if (!rc) r->nmade += !strncmp(name, "curves", 6) ? ws + wt : 1;
    }
    free(f.varying);
    rpt_groups_free(f.g, f.ng);
    return rc;
}
