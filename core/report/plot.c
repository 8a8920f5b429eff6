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
#include "store/store.h"

const char *const plot_figures[PLOT_NFIGURES] = {"scaling", "memory", "curves_step", "curves_time", "heatmap",
                                                 "tradeoff"};

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
    fprintf(s, "set bmargin 6\nset label 900 '%s' at screen 0.01, screen 0.02 left font ',8' textcolor rgb '#aa0000'\n",
            q);
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
    double x, y;
} pt;

static int cmp_pt(const void *a, const void *b) {
    const pt *p = a, *q = b;
    return (p->x > q->x) - (p->x < q->x);
}

static void pick_series_params(const fig *f, int xp, int *split) { rpt_series_split(f->d, f->g, f->ng, xp, split); }

static void series_label(const fig *f, const rpt_trial *t, const int *split, char *out, size_t len) {
    rpt_series_label(f->d, t, split, out, len);
}

/* The points of the series that group a belongs to (the groups with its
 * label), marked done; configurations without a value go to m. Sorted by x. */
static int series_points(const fig *f, int a, int xp, const int *split, const char *measure, double yscale, int *done,
                         pt *pts, missing *m) {
    const rpt_db *d = f->d;
    char label[512], lb[512];
    series_label(f, &d->t[f->g[a].first], split, label, sizeof label);
    int np = 0;
    for (int b = a; b < f->ng; b++) {
        if (done[b]) continue;
        const rpt_trial *tb = &d->t[f->g[b].first];
        series_label(f, tb, split, lb, sizeof lb);
        if (strcmp(lb, label) != 0) continue;
        done[b] = 1;
        double x = num(tb->pv[xp]), y = rpt_group_value(d, &f->g[b], measure) * yscale;
        if (x > 0 && y > 0 && isfinite(y)) {
            pts[np++] = (pt){x, y};
            continue;
        }
        char gl[600], why[64];
        rpt_group_label(d, &f->g[b], f->varying, gl, sizeof gl);
        why_missing(f, &f->g[b], measure, why, sizeof why);
        missing_add(m, gl, why);
    }
    qsort(pts, (size_t)np, sizeof *pts, cmp_pt);
    return np;
}

/* One series: its data block, its fitted power law (defined in the script)
 * and its plot clause into clause. */
static void series_block(const fig *f, FILE *s, FILE *dat, const char *name, int block, const char *label, const pt *pts,
                         int np, char *clause, size_t clen) {
    double *xs = mallocCheck((size_t)np * sizeof *xs), *ys = mallocCheck((size_t)np * sizeof *ys);
    for (int i = 0; i < np; i++) xs[i] = pts[i].x, ys[i] = pts[i].y;
    double k = NAN, c = NAN;
    int fitted = plot_fit_power(xs, ys, np, &k, &c) == 0;
    free(xs), free(ys);
    (void)f;
    if (block) fprintf(dat, "\n\n");
    fprintf(dat, "# block %d: %s\n", block, label);
    if (fitted) fprintf(dat, "# fit %s: exponent %.6f coefficient %.9g (least squares of log value on log seq)\n", label, k, c);
    for (int i = 0; i < np; i++) fprintf(dat, "%.17g\t%.17g\n", pts[i].x, pts[i].y);
    char t[700], q[1400];
    if (fitted) snprintf(t, sizeof t, "%s: ~n^%.3f", label, k);
    else snprintf(t, sizeof t, "%s (%d point%s, no fit)", label, np, np == 1 ? "" : "s");
    plot_quote(q, sizeof q, t);
    int lc = block % 8 + 1;
    if (fitted) fprintf(s, "k%d = %.9g\nc%d = %.9g\nf%d(x) = c%d * x**k%d\n", block, k, block, c, block, block, block);
    int o = snprintf(clause, clen, "'%s.dat' index %d using 1:2 with linespoints lc %d pt 7 ps 0.8 title '%s'", name,
                     block, lc, q);
    if (fitted && o < (int)clen) snprintf(clause + o, clen - o, ", f%d(x) with lines lc %d dt 2 notitle", block, lc);
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
    fprintf(dat, "# one block per line of the figure (gnuplot index 0, 1, ...); columns: seq  value (%s)  "
                 "configurations pooled: none (median over seeds)\n", ylabel);
    int *split = callocCheck((size_t)d->np, sizeof *split), *done = callocCheck((size_t)f->ng, sizeof *done);
    pt *pts = mallocCheck((size_t)f->ng * sizeof *pts);
    missing m = {0};
    char (*plot)[2000] = mallocCheck((size_t)f->ng * sizeof *plot);
    int nplot = 0;
    pick_series_params(f, xp, split);
    for (int a = 0; a < f->ng; a++) {
        if (done[a]) continue;
        char label[512];
        series_label(f, &d->t[f->g[a].first], split, label, sizeof label);
        int np = series_points(f, a, xp, split, measure, yscale, done, pts, &m);
        if (np) series_block(f, s, dat, name, nplot, label, pts, np, plot[nplot], sizeof plot[0]), nplot++;
    }
    if (m.n) fprintf(dat, "# missing (%d): %s%s\n", m.n, m.text, m.n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    missing_label(s, &m);
    if (nplot == 0) {
        char why[1200];
        snprintf(why, sizeof why, "no configuration has a %s value", measure);
        placeholder(s, why);
    } else {
        char yl[256];
        plot_quote(yl, sizeof yl, ylabel);
        fprintf(s, "set logscale xy\nset xlabel 'sequence length n'\nset ylabel '%s'\nplot ", yl);
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

/* Write curves.dat (once for both figures): per configuration a block of
 * step, mean eval loss over seeds, mean training seconds up to that step. */
static int write_curves(const fig *f, int *nblocks, char (*labels)[600], missing *m, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    FILE *dat = data_open(f, "curves", "evaluation loss during training", err, errlen);
    if (!dat) return -1;
    fprintf(dat, "# one block per configuration (gnuplot index 0, 1, ...); columns: step  eval_loss (mean over seeds)  "
                 "training seconds (sum of step times up to the step, mean over seeds)  seeds\n");
    int nb = 0;
    for (int a = 0; a < f->ng; a++) {
        const rpt_group *g = &f->g[a];
        char gl[600];
        rpt_group_label(d, g, f->varying, gl, sizeof gl);
        /* the steps of the first done trial with a curve set the grid */
        int ns = 0, *steps = NULL;
        double *sum = NULL, *tsum = NULL;
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
                sum = callocCheck((size_t)ns, sizeof *sum);
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
                        sum[k] += ev.v[e], tsum[k] += cum * 1e-3, cnt[k]++;
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
        if (nb) fprintf(dat, "\n\n");
        fprintf(dat, "# block %d: %s\n", nb, gl);
        for (int k = 0; k < ns; k++)
            if (cnt[k]) fprintf(dat, "%d\t%.17g\t%.17g\t%d\n", steps[k], sum[k] / cnt[k], tsum[k] / cnt[k], cnt[k]);
        snprintf(labels[nb], sizeof labels[0], "%s", gl);
        nb++;
        free(steps), free(sum), free(tsum), free(cnt);
    }
    if (m->n) fprintf(dat, "# missing (%d): %s%s\n", m->n, m->text, m->n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    *nblocks = nb;
    return 0;
}

static int fig_curves(const fig *f, int want_step, int want_time, char *err, size_t errlen) {
    int nb = 0;
    missing m = {0};
    char (*labels)[600] = mallocCheck((size_t)(f->ng ? f->ng : 1) * sizeof *labels);
    if (write_curves(f, &nb, labels, &m, err, errlen)) return free(labels), -1;
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
            fprintf(s, "plot ");
            for (int b = 0; b < nb; b++) {
                char q[1300];
                plot_quote(q, sizeof q, labels[b]);
                fprintf(s, "%s'curves.dat' index %d using %d:2 with linespoints lc %d pt 7 ps 0.6 title '%s'",
                        b ? ", \\\n     " : "", b, which == 0 ? 1 : 3, b % 8 + 1, q);
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

static int fig_heatmap(const fig *f, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    const char *name = "heatmap";
    const char *xn = f->o->heat_x ? f->o->heat_x : "clusters", *yn = f->o->heat_y ? f->o->heat_y : "window";
    const char *meas = f->o->heat_metric ? f->o->heat_metric : rpt_measure_present(d, "loss") ? "loss" : "time";
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    int xp = rpt_param_index(d, xn), yp = rpt_param_index(d, yn), sp = rpt_param_index(d, "seq");
    char what[300];
    snprintf(what, sizeof what, "%s over %s x %s", rpt_measure_label(meas), xn, yn);
    /* candidate configurations: both axes apply */
    int *use = callocCheck((size_t)(f->ng ? f->ng : 1), sizeof *use);
    int nuse = 0;
    for (int a = 0; a < f->ng && xp >= 0 && yp >= 0; a++) {
        const rpt_trial *t = &d->t[f->g[a].first];
        if (t->pv[xp] && t->pv[yp]) use[a] = 1, nuse++;
    }
    /* seq moves everything: keep the longest one measured, say so */
    char fixed[256] = "";
    if (sp >= 0 && sp != xp && sp != yp && nuse) {
        double best = -1;
        for (int a = 0; a < f->ng; a++)
            if (use[a] && isfinite(rpt_group_value(d, &f->g[a], meas))) best = fmax(best, num(d->t[f->g[a].first].pv[sp]));
        if (best < 0)
            for (int a = 0; a < f->ng; a++)
                if (use[a]) best = fmax(best, num(d->t[f->g[a].first].pv[sp]));
        for (int a = 0; a < f->ng; a++)
            if (use[a] && num(d->t[f->g[a].first].pv[sp]) != best) use[a] = 0, nuse--;
        snprintf(fixed, sizeof fixed, ", seq=%g", best);
    }
    char tt[600];
    snprintf(tt, sizeof tt, "%s%s", what, fixed);
    title(s, f, tt);
    if (!nuse) {
        char why[400];
        if (xp < 0 || yp < 0) snprintf(why, sizeof why, "no parameter '%s' in this database", xp < 0 ? xn : yn);
        else snprintf(why, sizeof why, "no configuration has both %s and %s (e.g. routing with a window)", xn, yn);
        placeholder(s, why);
        free(use);
        return finish(f, s, name, err, errlen);
    }
    /* axis values, sorted */
    const char **xv = mallocCheck((size_t)nuse * sizeof *xv), **yv = mallocCheck((size_t)nuse * sizeof *yv);
    int nx = 0, ny = 0;
    for (int a = 0; a < f->ng; a++) {
        if (!use[a]) continue;
        const rpt_trial *t = &d->t[f->g[a].first];
        int i;
        for (i = 0; i < nx && strcmp(xv[i], t->pv[xp]); i++) {}
        if (i == nx) xv[nx++] = t->pv[xp];
        for (i = 0; i < ny && strcmp(yv[i], t->pv[yp]); i++) {}
        if (i == ny) yv[ny++] = t->pv[yp];
    }
    for (int i = 1; i < nx; i++)
        for (int j = i; j > 0 && cmp_val(xv[j - 1], xv[j]) > 0; j--) {
            const char *tmp = xv[j];
            xv[j] = xv[j - 1], xv[j - 1] = tmp;
        }
    for (int i = 1; i < ny; i++)
        for (int j = i; j > 0 && cmp_val(yv[j - 1], yv[j]) > 0; j--) {
            const char *tmp = yv[j];
            yv[j] = yv[j - 1], yv[j - 1] = tmp;
        }
    /* cells: the mean over the configurations that fall in them (other
     * parameters that vary, e.g. backend, are pooled; named in the data) */
    double *sum = callocCheck((size_t)nx * ny, sizeof *sum);
    int *cnt = callocCheck((size_t)nx * ny, sizeof *cnt), *seen = callocCheck((size_t)nx * ny, sizeof *seen);
    const char **why = callocCheck((size_t)nx * ny, sizeof *why);
    for (int a = 0; a < f->ng; a++) {
        if (!use[a]) continue;
        const rpt_trial *t = &d->t[f->g[a].first];
        int i = 0, j = 0;
        while (strcmp(xv[i], t->pv[xp])) i++;
        while (strcmp(yv[j], t->pv[yp])) j++;
        double v = rpt_group_value(d, &f->g[a], meas);
        seen[j * nx + i]++;
        if (isfinite(v)) sum[j * nx + i] += v, cnt[j * nx + i]++;
        else if (!why[j * nx + i]) why[j * nx + i] = f->g[a].ndone ? "n/a" : d->t[f->g[a].ti[0]].status;
    }
    FILE *dat = data_open(f, name, tt, err, errlen);
    if (!dat) {
        fclose(s);
        free(use), free(xv), free(yv), free(sum), free(cnt), free(seen), free(why);
        return -1;
    }
    fprintf(dat, "# block 0: cells with a value; columns: %s index  %s index  %s (mean over seeds%s)  label  %s  %s\n",
            xn, yn, meas, "", xn, yn);
    int nmiss = 0, nval = 0;
    for (int j = 0; j < ny; j++)
        for (int i = 0; i < nx; i++) {
            int c = j * nx + i;
            if (!cnt[c]) {
                nmiss += seen[c] > 0;
                continue;
            }
            double v = sum[c] / cnt[c];
            nval++;
            char lab[64];
            if (!strcmp(meas, "sgemm")) snprintf(lab, sizeof lab, "%.1f%%", 100 * v);
            else snprintf(lab, sizeof lab, "%.5g", v);
            char qx[200], qy[200];
            dq(qx, sizeof qx, xv[i]), dq(qy, sizeof qy, yv[j]);
            fprintf(dat, "%d\t%d\t%.17g\t\"%s\"\t\"%s\"\t\"%s\"\n", i, j, v, lab, qx, qy);
        }
    if (nmiss) {
        /* gnuplot counts only blocks with data: this one is index 1 after cells with values, else 0 */
        fprintf(dat, "%s# block %d: cells without a value; columns: %s index  %s index  why\n", nval ? "\n\n" : "",
                nval ? 1 : 0, xn, yn);
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++)
                if (!cnt[j * nx + i] && seen[j * nx + i]) fprintf(dat, "%d\t%d\t\"%s\"\n", i, j, why[j * nx + i] ? why[j * nx + i] : "n/a");
    }
    fclose(dat);
    char q[600];
    fprintf(s, "unset key\nset xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\n", nx - 1, ny - 1);
    plot_quote(q, sizeof q, xn);
    fprintf(s, "set xlabel '%s'\n", q);
    plot_quote(q, sizeof q, yn);
    fprintf(s, "set ylabel '%s'\nset xtics (", q);
    for (int i = 0; i < nx; i++) plot_quote(q, sizeof q, xv[i]), fprintf(s, "%s'%s' %d", i ? ", " : "", q, i);
    fprintf(s, ")\nset ytics (");
    for (int j = 0; j < ny; j++) plot_quote(q, sizeof q, yv[j]), fprintf(s, "%s'%s' %d", j ? ", " : "", q, j);
    plot_quote(q, sizeof q, rpt_measure_label(meas));
    fprintf(s, ")\nunset grid\nset cblabel '%s'\nset palette rgbformulae 33,13,10\n", q);
    if (nval) {
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < nx * ny; c++)
            if (cnt[c]) lo = fmin(lo, sum[c] / cnt[c]), hi = fmax(hi, sum[c] / cnt[c]);
        if (!(hi > lo)) {
            /* one value: gnuplot would warn about an empty colour range */
            double w = lo != 0 ? 0.01 * fabs(lo) : 1;
            fprintf(s, "set cbrange [%.17g:%.17g]\n", lo - w, hi + w);
        }
        fprintf(s, "plot 'heatmap.dat' index 0 using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder fc palette "
                   "notitle, \\\n     '' index 0 using 1:2:4 with labels notitle");
        if (nmiss) fprintf(s, ", \\\n     '' index 1 using 1:2:3 with labels textcolor rgb '#aa0000' notitle");
        fprintf(s, "\n");
    } else {
        fprintf(s, "set label 1 'no cell has a value (all missing)' at graph 0.5, graph 0.9 center\n");
        fprintf(s, "plot 'heatmap.dat' index 0 using 1:2:3 with labels textcolor rgb '#aa0000' notitle\n");
    }
    free(use), free(xv), free(yv), free(sum), free(cnt), free(seen), free(why);
    return finish(f, s, name, err, errlen);
}

/* ------------------------------------------------------------------ */
/* quality against speed                                               */

static int fig_tradeoff(const fig *f, const char *tmeas, const char *mmeas, char *err, size_t errlen) {
    const rpt_db *d = f->d;
    const char *name = "tradeoff";
    FILE *s = script_open(f, name, err, errlen);
    if (!s) return -1;
    title(s, f, "final evaluation loss against step time (point size: memory)");
    missing m = {0};
    double maxmem = 0;
    int nval = 0;
    for (int a = 0; a < f->ng; a++) {
        double y = rpt_group_value(d, &f->g[a], "loss"), x = rpt_group_value(d, &f->g[a], tmeas);
        double mem = rpt_group_value(d, &f->g[a], mmeas);
        if (isfinite(y) && x > 0) nval++, maxmem = fmax(maxmem, isfinite(mem) ? mem : 0);
    }
    if (!nval) {
        placeholder(s, f->ng ? "no configuration has both an evaluation loss and a step time "
                               "(quality against speed needs kind: train)"
                             : "no trials in this database (or none match --where)");
        return finish(f, s, name, err, errlen);
    }
    FILE *dat = data_open(f, name, "final evaluation loss against step time", err, errlen);
    if (!dat) return fclose(s), -1;
    fprintf(dat, "# one block per backend; columns: step ms (median over seeds)  eval loss (mean over seeds)  "
                 "point size  memory MiB (%s)  configuration\n", mmeas);
    /* backends in first-seen order */
    int *bdone = callocCheck((size_t)f->ng, sizeof *bdone);
    char (*plot)[900] = mallocCheck((size_t)f->ng * sizeof *plot);
    int nb = 0;
    for (int a = 0; a < f->ng; a++) {
        if (bdone[a]) continue;
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
                missing_add(&m, gl, why);
                continue;
            }
            if (!np) fprintf(dat, "%s# block %d: %s\n", nb ? "\n\n" : "", nb, be);
            double ps = isfinite(mem) && maxmem > 0 ? 0.8 + 3.2 * sqrt(mem / maxmem) : 1.0;
            char q[700];
            dq(q, sizeof q, gl);
            fprintf(dat, "%.17g\t%.17g\t%.4f\t%.6g\t\"%s\"\n", x, y, ps, isfinite(mem) ? mem / 1048576.0 : NAN, q);
            np++;
        }
        if (!np) continue;
        char q[600];
        plot_quote(q, sizeof q, be);
        snprintf(plot[nb], sizeof plot[0], "'tradeoff.dat' index %d using 1:2:3 with points pt 7 ps variable lc %d title '%s'",
                 nb, nb % 8 + 1, q);
        nb++;
    }
    if (m.n) fprintf(dat, "# missing (%d): %s%s\n", m.n, m.text, m.n > MAX_MISSING_SHOWN ? ", ..." : "");
    fclose(dat);
    char tl[128];
    snprintf(tl, sizeof tl, "%s", rpt_measure_label(tmeas));
    fprintf(s, "set logscale x\nset xlabel 'step time (%s, median over seeds)'\nset ylabel 'final evaluation loss'\n", tl);
    fprintf(s, "set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n");
    missing_label(s, &m);
    fprintf(s, "plot ");
    for (int i = 0; i < nb; i++) fprintf(s, "%s%s", i ? ", \\\n     " : "", plot[i]);
    fprintf(s, "\n");
    free(bdone), free(plot);
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

int plot_all(const rpt_db *d, const plot_opts *o, int *nmade, char *err, size_t errlen) {
    *nmade = 0;
    if (o->only && *o->only) {
        /* every name must be a figure */
        char buf[512];
        snprintf(buf, sizeof buf, "%s", o->only);
        for (char *tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
            int ok = !strcmp(tok, "curves") || !strcmp(tok, "kept_mass");
            for (int i = 0; i < PLOT_NFIGURES; i++) ok |= !strcmp(tok, plot_figures[i]);
            if (!ok)
                return rb_fail(err, errlen, "--only: no figure '%s' (scaling, memory, curves_step, curves_time, "
                                            "curves, heatmap, tradeoff, kept_mass)", tok);
        }
    }
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
    int rc = 0;
    char ylabel[160];
    if (!rc && wanted(o->only, "scaling")) {
        snprintf(ylabel, sizeof ylabel, "%s", strcmp(tmeas, "time") ? tmeas : "step time (ms, median)");
        rc = fig_scaling(&f, "scaling", tmeas, 1.0, ylabel, "time against sequence length", err, errlen);
        *nmade += !rc;
    }
    if (!rc && wanted(o->only, "memory")) {
        int bytes = !strcmp(mmeas, "act_mem") || !strcmp(mmeas, "mem") || strstr(mmeas, "bytes");
        snprintf(ylabel, sizeof ylabel, "%s%s", rpt_measure_label(mmeas), bytes && !strstr(rpt_measure_label(mmeas), "MiB") ? " (MiB)" : "");
        rc = fig_scaling(&f, "memory", mmeas, bytes ? 1.0 / 1048576.0 : 1.0, ylabel, "memory against sequence length",
                         err, errlen);
        *nmade += !rc;
    }
    int ws = wanted(o->only, "curves_step"), wt = wanted(o->only, "curves_time");
    if (!rc && (ws || wt)) {
        rc = fig_curves(&f, ws, wt, err, errlen);
        *nmade += rc ? 0 : ws + wt;
    }
    if (!rc && wanted(o->only, "heatmap")) {
        rc = fig_heatmap(&f, err, errlen);
        *nmade += !rc;
    }
    if (!rc && wanted(o->only, "tradeoff")) {
        rc = fig_tradeoff(&f, tmeas, mmeas, err, errlen);
        *nmade += !rc;
    }
    /* The analysis figure, drawn when the database holds analyze trials
     * (or when asked for by name, which then says there is nothing). */
    int has_analysis = rpt_measure_present(d, "analyze.kept_mass.routing") ||
                       rpt_measure_present(d, "analyze.kept_mass.local");
    if (!rc && (o->only && *o->only ? wanted(o->only, "kept_mass") : has_analysis)) {
        rc = analyze_plot_kept(d, o->out_dir, o->format, o->dumb, o->quiet, err, errlen);
        *nmade += !rc;
    }
    free(f.varying);
    rpt_groups_free(f.g, f.ng);
    return rc;
}
