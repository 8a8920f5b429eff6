/* report.h: reading a results database (core/store/store.h, results/README.md)
 * for tables, plots and comparisons. rpt_open loads every trial of the
 * database read-only: its resolved parameters (the params JSON, with the
 * resolved columns such as clusters=auto -> 8 laid over it), its status and
 * error, its summary metrics (step NULL) and the sgemm ceiling of the run
 * that recorded it. Trials are grouped into configurations (by key, i.e. all
 * parameters but the seed, or by chosen parameters); a measure is either an
 * alias (loss, bpt, acc, time, tokens, mem, act_mem, gflops, sgemm) that
 * picks the right metric for the experiment's kind, or a raw metric name,
 * and is summarised over a group's done trials (mean ± std for quality,
 * median for timings). rpt_table_build turns all this into a paper-style
 * table (varying parameters as columns, fixed ones in the caption) printed
 * as Markdown, CSV or LaTeX (booktabs). Trials that are not done never break
 * a table: their cells say why. */
#ifndef RB_REPORT_H
#define RB_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

typedef struct {
    int64_t id, exp_id;
    int idx;                 /* expansion order (rows follow the YAML) */
    uint64_t seed;
    char *key, *name, *backend, *status, *error, *kind;
    char **pv;               /* [rpt_db.np] parameter values as text; NULL: does not apply */
    int nm;
    char **mname;            /* [nm] summary metric names */
    double *mval;            /* [nm] values (NaN when stored NULL) */
    double sgemm;            /* GFLOP/s ceiling of the run that recorded the trial (the larger of
                              * the ceilings measured before and after its sweep); 0: unknown */
    int noisy;               /* 1: its timing was judged noisy, 0: judged clean, -1: not judged */
    char *noise;             /* why it is noisy (NULL: not noisy or no reason stored) */
} rpt_trial;

typedef struct {
    sqlite3 *db;             /* read-only connection (plots query curves) */
    char path[512];
    char exp_name[128];      /* experiment name (first run) */
    char exp_kind[32], exp_bench[32];
    double sgemm_lo, sgemm_hi; /* range of the ceilings of the loaded trials' runs; 0: none measured */
    int nsgemm_unknown;      /* loaded trials whose run measured no ceiling */
    int np;
    char **pnames;           /* [np] parameter names in first-seen order, backend first */
    int nt;
    rpt_trial *t;            /* [nt] in expansion order, then seed */
} rpt_db;

/* A configuration: the trials sharing a key (or the --by parameters). */
typedef struct {
    int n, ndone;
    int *ti;                 /* [n] indices into rpt_db.t */
    int first;               /* index of the group's first trial (its parameters label the row) */
} rpt_group;

enum { RPT_MD = 0, RPT_CSV = 1, RPT_TEX = 2 };
enum { RPT_AGG_MEAN = 0, RPT_AGG_MEDIAN = 1 };

/* Summary of a measure over a group's done trials. */
typedef struct {
    int n;                   /* done trials that have the measure */
    double mean, std, median, min, max;
    double ci;               /* half-width of the 95% confidence interval of the mean (Student t with
                              * n-1 degrees of freedom); NaN when n < 2 */
    double q1, q3;           /* quartiles of the trials' values (linear interpolation; q1=q3 when n=1) */
    double iqr_in;           /* median over the trials of their own timing IQR (metric M_iqr); NaN: none */
    double spread;           /* the larger of iqr_in and q3-q1: the measure's interquartile spread */
    int noisy;               /* done trials with the measure that were judged noisy */
} rpt_stat;

/* Open path read-only and load the trials matching `where` (an SQL condition
 * on the trials table's columns, e.g. "backend='routing' AND seq>=1024";
 * NULL = all). 0, or -1 with a message. */
int rpt_open(rpt_db *d, const char *path, const char *where, char *err, size_t errlen);
void rpt_close(rpt_db *d);

/* Index of parameter `name` in d->pnames, or -1. */
int rpt_param_index(const rpt_db *d, const char *name);
/* A summary metric of a trial; NaN when absent. */
double rpt_metric(const rpt_trial *t, const char *name);

/* Group the trials by key (by = NULL or "") or by the comma-separated
 * parameters in `by` (unknown names are an error). Groups come in order of
 * their first trial. Free with rpt_groups_free. */
int rpt_group_trials(const rpt_db *d, const char *by, rpt_group **out, int *ng, char *err, size_t errlen);
void rpt_groups_free(rpt_group *g, int ng);

/* Measures. rpt_measure_check: 0 if name is an alias or a metric some trial
 * has, else -1 with a message listing what exists. */
int rpt_measure_check(const rpt_db *d, const char *name, char *err, size_t errlen);
const char *rpt_measure_label(const char *name); /* column header, e.g. "step ms" */
int rpt_measure_agg(const char *name);           /* RPT_AGG_* */
/* The measure's value for one trial (aliases resolved, units as stored
 * except sgemm: a fraction of the ceiling); NaN when missing. */
double rpt_measure_value(const rpt_db *d, const rpt_trial *t, const char *name);
/* Over the done trials of g. */
rpt_stat rpt_group_stat(const rpt_db *d, const rpt_group *g, const char *name);
/* The group's value: mean or median as the measure aggregates. NaN if none. */
double rpt_group_value(const rpt_db *d, const rpt_group *g, const char *name);
/* The trial's own interquartile range of the measure (the M_iqr metric of
 * the metric the measure reads: fwdbwd_ms_iqr for time); NaN when absent. */
double rpt_measure_iqr(const rpt_trial *t, const char *name);
/* 1 when the measure is a timing (time, or a metric ending in _ms). */
int rpt_measure_is_timing(const char *name);
/* The group's interquartile interval: median -+ spread/2 (a point when no
 * spread is known). 0, or -1 when the group has no value. */
int rpt_group_interval(const rpt_db *d, const rpt_group *g, const char *name, double *lo, double *hi);
/* Done trials of g judged noisy; reasons (the first distinct ones, "; "
 * separated) into why when why is not NULL. */
int rpt_group_noisy(const rpt_db *d, const rpt_group *g, char *why, size_t len);
/* Student t quantile: t such that P(T <= t) = p for T with df degrees of
 * freedom (df >= 1, 0 < p < 1). */
double rpt_student_t(double p, double df);
/* Quantile q in [0,1] of sorted v[0..n) by linear interpolation (type 7). */
double rpt_quantile(const double *v, int n, double q);
/* 1 when some done trial has the measure. */
int rpt_measure_present(const rpt_db *d, const char *name);

/* The parameters whose values differ between groups (varying[i] = 1), in
 * d->pnames order. */
void rpt_varying(const rpt_db *d, const rpt_group *g, int ng, int *varying);
/* Short name of a parameter in labels: seq -> n, clusters -> k, window -> w. */
const char *rpt_param_short(const char *name);
/* Short label of a group from its varying parameters: "routing k=4 w=16". */
void rpt_group_label(const rpt_db *d, const rpt_group *g, const int *varying, char *out, size_t len);
/* Status summary of the trials of g that are not done ("" when all done):
 * "1 failed: <first error>", "2 unsupported", ... */
void rpt_group_note(const rpt_db *d, const rpt_group *g, char *out, size_t len);

/* Series against a parameter xp (plots, crossover): a parameter splits a
 * backend's series when two of its configurations at the same x differ in
 * it (window swept); one that moves with x (clusters = sqrt(n)) does not.
 * split[np]. */
void rpt_series_split(const rpt_db *d, const rpt_group *g, int ng, int xp, int *split);
/* The series label of a trial: its backend and the splitting parameters. */
void rpt_series_label(const rpt_db *d, const rpt_trial *t, const int *split, char *out, size_t len);
/* The dense configuration to compare group k with: backend dense, the same
 * value of every parameter both have (parameters only one of them has, such
 * as window, are not compared). -1 when none, or when g[k] is dense. */
int rpt_dense_match(const rpt_db *d, const rpt_group *g, int ng, int k);
/* Speed-up of g over its dense match gd in a timing measure: median dense /
 * median g, and the interval from their interquartile intervals (dense low /
 * g high .. dense high / g low). 0, or -1 when either has no value. */
int rpt_speedup(const rpt_db *d, const rpt_group *g, const rpt_group *gd, const char *measure, double *s, double *lo,
                double *hi);

/* A table of text cells. */
typedef struct {
    int ncol, nrow, cap;
    char **head;             /* [ncol] */
    char *align;             /* [ncol] 'l' or 'r' */
    char **cell;             /* [nrow * ncol] */
    char caption[2048];
    char footnote[4096];     /* printed under the table (the noisy rows' reasons); "" = none */
} rpt_table;

typedef struct {
    const char *by;          /* grouping (NULL = key) */
    const char *metrics;     /* comma-separated measures (NULL = the default set present) */
    int format;              /* RPT_MD / RPT_CSV / RPT_TEX: CSV gets raw numbers, std and n in columns */
} rpt_table_opts;

int rpt_table_build(rpt_table *tb, const rpt_db *d, const rpt_table_opts *o, char *err, size_t errlen);
/* Append a row (ncol strings; NULL = empty). */
void rpt_table_add_row(rpt_table *tb, const char *const *cells);
void rpt_table_init(rpt_table *tb, int ncol, const char *const *head, const char *align);
void rpt_table_write(FILE *f, const rpt_table *tb, int format);
void rpt_table_free(rpt_table *tb);

/* s as a text cell in format's escaping (LaTeX specials, Markdown's |; CSV
 * quoting happens at write time). */
void rpt_text_cell(char *out, size_t len, const char *s, int format);
/* v to sig significant digits ("%.*g"), but never with an exponent from
 * 10^sig up (12710, not 1.271e+04), so a column reads as one scale. */
void rpt_fmt_sig(char *out, size_t len, double v, int sig);

/* "md" / "csv" / "tex" to RPT_*; -1 when unknown. */
int rpt_format_parse(const char *s);

#endif
