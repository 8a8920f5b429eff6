/* report.c: loading a results database read-only, grouping trials into
 * configurations, summarising measures over seeds and formatting paper-style
 * tables (report.h). The database is read with plain SQL on a read-only
 * connection (PRAGMA query_only as well), so a report can run while a sweep
 * is still writing to the same file (WAL). */
#include "report/report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"
#include "util/params.h"
#include "store/store.h"

#define RPT_MAX_PARAMS 128

static char *xstrdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = mallocCheck(n);
    memcpy(p, s, n);
    return p;
}

static const char *col_text(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NULL : (const char *)sqlite3_column_text(st, i);
}

static int sql_fail(const rpt_db *d, const char *what, char *err, size_t errlen) {
    return rb_fail(err, errlen, "%s: %s: %s", d->path, what, sqlite3_errmsg(d->db));
}

/* Parameter columns of the trials table (store_col: the PF_COLUMN rows of
 * params.def) that this database has: resolved values (clusters=auto has
 * become a number there), laid over the params JSON. A database made before
 * a parameter was added lacks its column. */
static int param_columns(rpt_db *d, const char **cols, int max) {
    int n = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, "SELECT name FROM pragma_table_info('trials')", -1, &st, NULL) != SQLITE_OK) return 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < max) {
        const char *c = col_text(st, 0);
        int k = c ? store_col_index(c) : -1;
        if (k >= 0) cols[n++] = store_col(k)->name;
    }
    sqlite3_finalize(st);
    return n;
}

static int param_slot(rpt_db *d, const char *name) {
    int i = rpt_param_index(d, name);
    if (i >= 0) return i;
    if (d->np == RPT_MAX_PARAMS) return -1;
    d->pnames[d->np] = xstrdup(name);
    return d->np++;
}

int rpt_param_index(const rpt_db *d, const char *name) {
    for (int i = 0; i < d->np; i++)
        if (strcmp(d->pnames[i], name) == 0) return i;
    return -1;
}

static void set_param(rpt_trial *t, int slot, const char *v) {
    if (slot < 0) return;
    free(t->pv[slot]);
    t->pv[slot] = xstrdup(v);
}

static int load_metrics(rpt_db *d, char *err, size_t errlen) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, "SELECT name, value FROM metrics WHERE trial_id = ? AND step IS NULL ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(d, "reading metrics", err, errlen);
    int rc = SQLITE_DONE;
    for (int i = 0; i < d->nt; i++) {
        rpt_trial *t = &d->t[i];
        int cap = 0;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, t->id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (t->nm == cap) {
                cap = cap ? 2 * cap : 32;
                t->mname = reallocCheck(t->mname, (size_t)cap * sizeof *t->mname);
                t->mval = reallocCheck(t->mval, (size_t)cap * sizeof *t->mval);
            }
            const char *n = col_text(st, 0);
            t->mname[t->nm] = xstrdup(n ? n : "");
            t->mval[t->nm] = sqlite3_column_type(st, 1) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 1);
            t->nm++;
        }
        if (rc != SQLITE_DONE) break;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sql_fail(d, "reading metrics", err, errlen);
    return 0;
}

/* Is it ours, and a version we can read? Then the experiment's name and kind. */
static int read_header(rpt_db *d, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT (SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                                  "('experiments','trials','metrics')), (SELECT user_version FROM pragma_user_version)",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rb_fail(err, errlen, "%s: not a routebench results database (%s)", d->path, sqlite3_errmsg(d->db));
    }
    int ntables = sqlite3_column_int(st, 0), ver = sqlite3_column_int(st, 1);
    sqlite3_finalize(st);
    if (ntables != 3)
        return rb_fail(err, errlen, "%s: not a routebench results database (no experiments/trials/metrics tables)",
                       d->path);
    if (ver > STORE_SCHEMA_VERSION)
        return rb_fail(err, errlen, "%s: written by a newer routebench (schema %d, this one reads up to %d)", d->path,
                       ver, STORE_SCHEMA_VERSION);
    if (sqlite3_prepare_v2(d->db, "SELECT name, kind, bench FROM experiments ORDER BY id LIMIT 1", -1, &st, NULL) !=
        SQLITE_OK)
        return sql_fail(d, "reading experiments", err, errlen);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *a = col_text(st, 0), *b = col_text(st, 1), *c = col_text(st, 2);
        snprintf(d->exp_name, sizeof d->exp_name, "%s", a ? a : "");
        snprintf(d->exp_kind, sizeof d->exp_kind, "%s", b ? b : "");
        snprintf(d->exp_bench, sizeof d->exp_bench, "%s", c ? c : "");
    }
    sqlite3_finalize(st);
    return 0;
}

/* 1 when table has column col (a database from before a migration lacks it). */
static int has_column(const rpt_db *d, const char *table, const char *col) {
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(d->db, "SELECT 1 FROM pragma_table_info(?) WHERE name = ?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* The trials query: `where` is the user's condition on trials' own columns,
 * so it runs in a subquery where no joined column can make it ambiguous. */
static int prepare_trials(rpt_db *d, const char *where, const char *const *cols, int ncols, sqlite3_stmt **out,
                          char *err, size_t errlen) {
    char sql[8192];
    if (where && *where && strlen(where) > 4000) return rb_fail(err, errlen, "--where: condition too long");
    /* the ceiling of the trial's own run: the larger of before and after its sweep */
    int after = has_column(d, "experiments", "sgemm_after"), noisy = has_column(d, "trials", "noisy");
    int off = snprintf(sql, sizeof sql,
                       "SELECT t.id, t.experiment_id, t.idx, t.seed, t.key, t.name, t.backend, t.status, t.error, "
                       "t.kind, %s, t.params, %s, %s",
                       after ? "max(coalesce(e.sgemm_gflops, 0), coalesce(e.sgemm_after, 0))" : "e.sgemm_gflops",
                       noisy ? "t.noisy" : "NULL", noisy ? "t.noise" : "NULL");
    for (int i = 0; i < ncols; i++) off += snprintf(sql + off, sizeof sql - off, ", t.\"%s\"", cols[i]);
    snprintf(sql + off, sizeof sql - off,
             " FROM (SELECT * FROM trials WHERE (%s)) t LEFT JOIN experiments e ON e.id = t.experiment_id "
             "ORDER BY t.idx, t.seed, t.id",
             where && *where ? where : "1");
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(d->db, sql, -1, out, &tail);
    while (rc == SQLITE_OK && tail && isspace((unsigned char)*tail)) tail++;
    if (rc == SQLITE_OK && tail && *tail) { /* a second statement smuggled in through --where */
        sqlite3_finalize(*out), *out = NULL;
        return rb_fail(err, errlen, "--where '%s': one condition, not several statements", where ? where : "");
    }
    if (rc == SQLITE_OK) return 0;
    if (where && *where)
        return rb_fail(err, errlen, "--where '%s': %s (an SQL condition on the trials table's columns, e.g. "
                                    "\"backend='routing' AND seq>=1024\")",
                       where, sqlite3_errmsg(d->db));
    return sql_fail(d, "reading trials", err, errlen);
}

/* One row of the trials query into t: identity, then its parameters, the
 * params JSON first (js reads it) with the resolved columns laid over it. */
static int load_trial(rpt_db *d, rpt_trial *t, sqlite3_stmt *st, sqlite3_stmt *js, const char *const *cols, int ncols,
                      char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    t->pv = callocCheck(RPT_MAX_PARAMS, sizeof *t->pv);
    t->id = sqlite3_column_int64(st, 0);
    t->exp_id = sqlite3_column_int64(st, 1);
    t->idx = sqlite3_column_int(st, 2);
    t->seed = (uint64_t)sqlite3_column_int64(st, 3);
    t->key = xstrdup(col_text(st, 4) ? col_text(st, 4) : "");
    t->name = xstrdup(col_text(st, 5) ? col_text(st, 5) : "");
    t->backend = xstrdup(col_text(st, 6) ? col_text(st, 6) : "");
    t->status = xstrdup(col_text(st, 7) ? col_text(st, 7) : "");
    t->error = xstrdup(col_text(st, 8));
    t->kind = xstrdup(col_text(st, 9) ? col_text(st, 9) : "");
    t->sgemm = sqlite3_column_type(st, 10) == SQLITE_NULL ? 0 : sqlite3_column_double(st, 10);
    t->noisy = sqlite3_column_type(st, 12) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 12) != 0;
    t->noise = xstrdup(col_text(st, 13));
    const char *json = col_text(st, 11);
    sqlite3_reset(js);
    sqlite3_bind_text(js, 1, json ? json : "{}", -1, SQLITE_TRANSIENT);
    while (sqlite3_step(js) == SQLITE_ROW) {
        const char *k = col_text(js, 0), *v = col_text(js, 1);
        if (!k || !strcmp(k, "seed")) continue;
        const rb_param *pd = rb_param_find(k); /* an old spelling under today's name */
        int slot = param_slot(d, pd ? pd->name : k);
        if (slot < 0) return rb_fail(err, errlen, "%s: more than %d distinct parameters", d->path, RPT_MAX_PARAMS);
        set_param(t, slot, v);
    }
    set_param(t, param_slot(d, "backend"), t->backend);
    for (int i = 0; i < ncols; i++) {
        int ty = sqlite3_column_type(st, 14 + i);
        if (ty == SQLITE_NULL) continue;
        char buf[64];
        const char *v = col_text(st, 14 + i);
        if (ty == SQLITE_FLOAT) {
            /* reals went through float32 (decay 0.999 is stored as 0.999000012874603): 7 digits say it */
            snprintf(buf, sizeof buf, "%.7g", sqlite3_column_double(st, 14 + i));
            v = buf;
        }
        set_param(t, param_slot(d, cols[i]), v);
    }
    return 0;
}

static int read_trials(rpt_db *d, const char *where, char *err, size_t errlen) {
    const char *cols[STORE_MAX_COLS];
    int ncols = param_columns(d, cols, STORE_MAX_COLS), rc, cap = 0;
    sqlite3_stmt *st = NULL, *js = NULL;
    if (prepare_trials(d, where, cols, ncols, &st, err, errlen)) return -1;
    if (sqlite3_prepare_v2(d->db, "SELECT key, value FROM json_each(?)", -1, &js, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return sql_fail(d, "reading parameters", err, errlen);
    }
    param_slot(d, "backend");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (d->nt == cap) cap = cap ? 2 * cap : 64, d->t = reallocCheck(d->t, (size_t)cap * sizeof *d->t);
        if (load_trial(d, &d->t[d->nt++], st, js, cols, ncols, err, errlen)) break;
    }
    sqlite3_finalize(js), sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return -1; /* load_trial's message */
    if (rc != SQLITE_DONE) return sql_fail(d, "reading trials", err, errlen);
    return 0;
}

int rpt_open(rpt_db *d, const char *path, const char *where, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    if (store_sqlite_open_read(path, &d->db, err, errlen) != 0) {
        rpt_close(d);
        return -1;
    }
    sqlite3_busy_timeout(d->db, 10000);
    d->pnames = callocCheck(RPT_MAX_PARAMS, sizeof *d->pnames);
    if (read_header(d, err, errlen) || read_trials(d, where, err, errlen) || load_metrics(d, err, errlen)) {
        rpt_close(d);
        return -1;
    }
    for (int i = 0; i < d->nt; i++) {
        rpt_trial *t = &d->t[i];
        /* the noisy column missing (an older database): the trial's noisy metric, if any */
        if (t->noisy < 0 && isfinite(rpt_metric(t, "noisy"))) t->noisy = rpt_metric(t, "noisy") > 0;
        if (!(t->sgemm > 0)) {
            d->nsgemm_unknown++;
            continue;
        }
        if (!(d->sgemm_lo > 0) || t->sgemm < d->sgemm_lo) d->sgemm_lo = t->sgemm;
        if (t->sgemm > d->sgemm_hi) d->sgemm_hi = t->sgemm;
    }
    return 0;
}

void rpt_close(rpt_db *d) {
    for (int i = 0; i < d->nt; i++) {
        rpt_trial *t = &d->t[i];
        free(t->key), free(t->name), free(t->backend), free(t->status), free(t->error), free(t->kind), free(t->noise);
        for (int j = 0; j < RPT_MAX_PARAMS; j++) free(t->pv[j]);
        free(t->pv);
        for (int j = 0; j < t->nm; j++) free(t->mname[j]);
        free(t->mname), free(t->mval);
    }
    free(d->t);
    if (d->pnames)
        for (int i = 0; i < d->np; i++) free(d->pnames[i]);
    free(d->pnames);
    if (d->db) sqlite3_close(d->db);
    memset(d, 0, sizeof *d);
}

double rpt_metric(const rpt_trial *t, const char *name) {
    for (int i = 0; i < t->nm; i++)
        if (strcmp(t->mname[i], name) == 0) return t->mval[i];
    return NAN;
}

/* ------------------------------------------------------------------ */
/* grouping                                                            */

typedef struct {
    char *gk;
    int ti;
} gkey;

static int cmp_gkey(const void *a, const void *b) {
    const gkey *x = a, *y = b;
    int c = strcmp(x->gk, y->gk);
    return c ? c : (x->ti > y->ti) - (x->ti < y->ti);
}

static int cmp_group_first(const void *a, const void *b) {
    const rpt_group *x = a, *y = b;
    return (x->first > y->first) - (x->first < y->first);
}

/* Split a comma list into at most max trimmed names in buf. */
static int split_list(const char *s, char names[][64], int max) {
    int n = 0;
    while (s && *s) {
        while (*s == ',' || isspace((unsigned char)*s)) s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > s && isspace((unsigned char)t[-1])) t--;
        if (n < max) {
            int len = (int)(t - s) < 63 ? (int)(t - s) : 63;
            memcpy(names[n], s, (size_t)len);
            names[n][len] = 0;
            /* '-' and '_' are interchangeable, as in the YAML */
            for (char *c = names[n]; *c; c++)
                if (*c == '-') *c = '_';
            n++;
        }
        s = e;
    }
    return n;
}

int rpt_group_trials(const rpt_db *d, const char *by, rpt_group **out, int *ng, char *err, size_t errlen) {
    *out = NULL, *ng = 0;
    char names[32][64];
    int byidx[32], nby = 0;
    if (by && *by) {
        nby = split_list(by, names, 32);
        for (int i = 0; i < nby; i++) {
            /* backend-style names with '-' are not parameters; keep the user's spelling for them */
            byidx[i] = rpt_param_index(d, names[i]);
            if (byidx[i] < 0) {
                char have[1024] = "";
                for (int j = 0, o = 0; j < d->np && o < (int)sizeof have - 40; j++)
                    o += snprintf(have + o, sizeof have - o, "%s%s", j ? ", " : "", d->pnames[j]);
                return rb_fail(err, errlen, "--by: no parameter '%s' in this database (parameters: %s)", names[i],
                               have);
            }
        }
    }
    if (d->nt == 0) return 0;
    gkey *k = callocCheck((size_t)d->nt, sizeof *k);
    for (int i = 0; i < d->nt; i++) {
        k[i].ti = i;
        if (!nby) {
            k[i].gk = xstrdup(d->t[i].key);
            continue;
        }
        size_t len = 1;
        for (int j = 0; j < nby; j++) len += (d->t[i].pv[byidx[j]] ? strlen(d->t[i].pv[byidx[j]]) : 0) + 2;
        char *s = mallocCheck(len);
        s[0] = 0;
        for (int j = 0; j < nby; j++) {
            const char *v = d->t[i].pv[byidx[j]];
            strcat(s, v ? v : "\x1e"); /* NA differs from every value */
            strcat(s, "\x1f");
        }
        k[i].gk = s;
    }
    qsort(k, (size_t)d->nt, sizeof *k, cmp_gkey);
    rpt_group *g = callocCheck((size_t)d->nt, sizeof *g);
    int n = 0;
    for (int i = 0; i < d->nt;) {
        int j = i;
        while (j < d->nt && strcmp(k[j].gk, k[i].gk) == 0) j++;
        rpt_group *x = &g[n++];
        x->n = j - i;
        x->ti = mallocCheck((size_t)x->n * sizeof *x->ti);
        x->first = k[i].ti; /* sorted by ti within equal keys */
        for (int m = i; m < j; m++) {
            x->ti[m - i] = k[m].ti;
            if (strcmp(d->t[k[m].ti].status, ST_DONE) == 0) x->ndone++;
        }
        i = j;
    }
    for (int i = 0; i < d->nt; i++) free(k[i].gk);
    free(k);
    qsort(g, (size_t)n, sizeof *g, cmp_group_first);
    *out = g, *ng = n;
    return 0;
}

void rpt_groups_free(rpt_group *g, int ng) {
    for (int i = 0; i < ng; i++) free(g[i].ti);
    free(g);
}

/* ------------------------------------------------------------------ */
/* measures                                                            */

typedef struct {
    const char *name, *label;
    int agg;
    const char *m[3]; /* the first metric a trial has is used */
} alias;

static const alias aliases[] = {
    {"loss", "eval loss", RPT_AGG_MEAN, {"eval_loss"}},
    {"bpt", "bits/token", RPT_AGG_MEAN, {"bits_per_token"}},
    {"acc", "accuracy", RPT_AGG_MEAN, {"accuracy"}},
    {"time", "step ms", RPT_AGG_MEDIAN, {"fwdbwd_ms", "step_ms"}},
    {"tokens", "tokens/s", RPT_AGG_MEDIAN, {"tokens_per_s"}},
    {"mem", "peak RSS MiB", RPT_AGG_MEDIAN, {"peak_rss_bytes"}},
    {"act_mem", "act. MiB", RPT_AGG_MEDIAN, {"act_bytes", "arena_peak_bytes"}},
    {"gflops", "GFLOP/s", RPT_AGG_MEDIAN, {"fwdbwd_gflops", "gflops"}},
    {"sgemm", "% sgemm", RPT_AGG_MEDIAN, {NULL}}, /* gflops / the ceiling of the trial's run */
};
#define NALIASES ((int)(sizeof aliases / sizeof aliases[0]))

static const alias *find_alias(const char *name) {
    for (int i = 0; i < NALIASES; i++)
        if (strcmp(aliases[i].name, name) == 0) return &aliases[i];
    return NULL;
}

const char *rpt_measure_label(const char *name) {
    const alias *a = find_alias(name);
    return a ? a->label : name;
}

int rpt_measure_agg(const char *name) {
    const alias *a = find_alias(name);
    if (a) return a->agg;
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, "_ms") == 0 ? RPT_AGG_MEDIAN : RPT_AGG_MEAN;
}

double rpt_measure_value(const rpt_db *d, const rpt_trial *t, const char *name) {
    const alias *a = find_alias(name);
    if (!a) return rpt_metric(t, name);
    if (strcmp(a->name, "sgemm") == 0) {
        /* the ceiling of the trial's own run only: another run's says nothing about this one's machine state */
        (void)d;
        return t->sgemm > 0 ? rpt_measure_value(d, t, "gflops") / t->sgemm : NAN;
    }
    for (int i = 0; i < 3 && a->m[i]; i++) {
        double v = rpt_metric(t, a->m[i]);
        if (!isnan(v)) return v;
    }
    return NAN;
}

int rpt_measure_present(const rpt_db *d, const char *name) {
    for (int i = 0; i < d->nt; i++)
        if (strcmp(d->t[i].status, ST_DONE) == 0 && isfinite(rpt_measure_value(d, &d->t[i], name))) return 1;
    return 0;
}

int rpt_measure_check(const rpt_db *d, const char *name, char *err, size_t errlen) {
    if (find_alias(name)) return 0;
    for (int i = 0; i < d->nt; i++)
        for (int j = 0; j < d->t[i].nm; j++)
            if (strcmp(d->t[i].mname[j], name) == 0) return 0;
    char have[1024] = "";
    int o = 0;
    for (int i = 0; i < NALIASES; i++) o += snprintf(have + o, sizeof have - o, "%s%s", i ? ", " : "", aliases[i].name);
    if (d->nt && o < (int)sizeof have - 64) {
        const rpt_trial *t = &d->t[0];
        for (int i = 0; i < d->nt; i++)
            if (d->t[i].nm > t->nm) t = &d->t[i];
        for (int j = 0; j < t->nm && o < (int)sizeof have - 64; j++)
            o += snprintf(have + o, sizeof have - o, ", %s", t->mname[j]);
    }
    return rb_fail(err, errlen, "no measure '%s' (known: %s)", name, have);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double rpt_measure_iqr(const rpt_trial *t, const char *name) {
    const alias *a = find_alias(name);
    char nm[160];
    if (!a) {
        snprintf(nm, sizeof nm, "%s_iqr", name);
        return rpt_metric(t, nm);
    }
    for (int i = 0; i < 3 && a->m[i]; i++) /* the IQR of the metric the value came from */
        if (!isnan(rpt_metric(t, a->m[i]))) {
            snprintf(nm, sizeof nm, "%s_iqr", a->m[i]);
            return rpt_metric(t, nm);
        }
    return NAN;
}

int rpt_measure_is_timing(const char *name) {
    size_t n = strlen(name);
    return !strcmp(name, "time") || (n > 3 && strcmp(name + n - 3, "_ms") == 0);
}

double rpt_quantile(const double *v, int n, double q) {
    if (n <= 0) return NAN;
    double h = (n - 1) * q;
    int i = (int)floor(h);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (h - i) * (v[i + 1] - v[i]);
}

/* Continued fraction of the regularized incomplete beta (modified Lentz). */
static double beta_cf(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1, dd = 1 - (a + b) * x / (a + 1);
    if (fabs(dd) < tiny) dd = tiny;
    dd = 1 / dd;
    double h = dd;
    for (int m = 1; m <= 300; m++) {
        for (int odd = 0; odd < 2; odd++) {
            double num = odd ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                             : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
            dd = 1 + num * dd;
            c = 1 + num / c;
            if (fabs(dd) < tiny) dd = tiny;
            if (fabs(c) < tiny) c = tiny;
            dd = 1 / dd;
            h *= dd * c;
        }
        if (fabs(dd * c - 1) < 1e-15) break;
    }
    return h;
}

/* I_x(a, b). */
static double beta_inc(double a, double b, double x) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    double lb = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1) / (a + b + 2)) return exp(lb) * beta_cf(a, b, x) / a;
    return 1 - exp(lb) * beta_cf(b, a, 1 - x) / b;
}

/* P(T <= t), T Student t with df degrees of freedom. */
static double student_cdf(double t, double df) {
    double tail = 0.5 * beta_inc(0.5 * df, 0.5, df / (df + t * t));
    return t >= 0 ? 1 - tail : tail;
}

double rpt_student_t(double p, double df) {
    if (!(p > 0 && p < 1) || !(df > 0)) return NAN;
    double lo = -1e4, hi = 1e4; /* df = 1 at p = 0.99995 is 6366 */
    for (int i = 0; i < 200 && hi - lo > 1e-13 * fmax(1, fabs(hi)); i++) {
        double mid = 0.5 * (lo + hi);
        if (student_cdf(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* The done trials' values of a measure (trial order) into v; their own IQRs
 * into iq (NaN where absent); noisy ones counted in *noisy. */
static int group_values(const rpt_db *d, const rpt_group *g, const char *name, double *v, double *iq, int *noisy) {
    int n = 0;
    *noisy = 0;
    for (int i = 0; i < g->n; i++) {
        const rpt_trial *t = &d->t[g->ti[i]];
        if (strcmp(t->status, ST_DONE) != 0) continue;
        double x = rpt_measure_value(d, t, name);
        if (!isfinite(x)) continue;
        iq[n] = rpt_measure_iqr(t, name);
        v[n++] = x;
        *noisy += t->noisy > 0;
    }
    return n;
}

rpt_stat rpt_group_stat(const rpt_db *d, const rpt_group *g, const char *name) {
    rpt_stat s = {0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0};
    size_t cap = (size_t)(g->n ? g->n : 1);
    double *v = mallocCheck(cap * sizeof *v), *iq = mallocCheck(cap * sizeof *iq);
    s.n = group_values(d, g, name, v, iq, &s.noisy);
    if (s.n > 0) {
        /* fixed order (trial order) so the result does not depend on anything else */
        double sum = 0;
        for (int i = 0; i < s.n; i++) sum += v[i];
        s.mean = sum / s.n;
        double ss = 0;
        for (int i = 0; i < s.n; i++) ss += (v[i] - s.mean) * (v[i] - s.mean);
        s.std = s.n > 1 ? sqrt(ss / (s.n - 1)) : 0;
        if (s.n > 1) s.ci = rpt_student_t(0.975, s.n - 1) * s.std / sqrt((double)s.n);
        qsort(v, (size_t)s.n, sizeof *v, cmp_double);
        s.min = v[0], s.max = v[s.n - 1];
        s.median = rpt_quantile(v, s.n, 0.5);
        s.q1 = rpt_quantile(v, s.n, 0.25), s.q3 = rpt_quantile(v, s.n, 0.75);
        int ni = 0;
        for (int i = 0; i < s.n; i++)
            if (isfinite(iq[i])) iq[ni++] = iq[i];
        qsort(iq, (size_t)ni, sizeof *iq, cmp_double);
        s.iqr_in = ni ? rpt_quantile(iq, ni, 0.5) : NAN;
        s.spread = fmax(s.q3 - s.q1, isfinite(s.iqr_in) ? s.iqr_in : 0);
    }
    free(v), free(iq);
    return s;
}

double rpt_group_value(const rpt_db *d, const rpt_group *g, const char *name) {
    rpt_stat s = rpt_group_stat(d, g, name);
    if (s.n == 0) return NAN;
    return rpt_measure_agg(name) == RPT_AGG_MEDIAN ? s.median : s.mean;
}

int rpt_group_interval(const rpt_db *d, const rpt_group *g, const char *name, double *lo, double *hi) {
    rpt_stat s = rpt_group_stat(d, g, name);
    if (s.n == 0) return *lo = *hi = NAN, -1;
    *lo = s.median - 0.5 * s.spread, *hi = s.median + 0.5 * s.spread;
    return 0;
}

int rpt_group_noisy(const rpt_db *d, const rpt_group *g, char *why, size_t len) {
    int n = 0, o = 0;
    if (why && len) why[0] = 0;
    for (int i = 0; i < g->n; i++) {
        const rpt_trial *t = &d->t[g->ti[i]];
        if (strcmp(t->status, ST_DONE) != 0 || t->noisy <= 0) continue;
        n++;
        const char *r = t->noise && *t->noise ? t->noise : "judged noisy (no reason stored)";
        if (!why || o >= (int)len - 1 || strstr(why, r)) continue;
        o += snprintf(why + o, len - o, "%s%s", o ? "; " : "", r);
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* rows and labels                                                     */

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

void rpt_varying(const rpt_db *d, const rpt_group *g, int ng, int *varying) {
    /* Two different values where it applies. A parameter that applies to
     * some backends only (decay: routing) but has one value is fixed, not a
     * column of dashes. */
    for (int p = 0; p < d->np; p++) {
        varying[p] = 0;
        const char *v0 = NULL;
        for (int i = 0; i < ng && !varying[p]; i++) {
            const char *v = d->t[g[i].first].pv[p];
            if (!v) continue;
            if (!v0) v0 = v;
            else if (strcmp(v, v0) != 0) varying[p] = 1;
        }
    }
}

/* Short names, as in trial names (params.def's abbr). */
const char *rpt_param_short(const char *p) { return rb_param_short(p); }

void rpt_group_label(const rpt_db *d, const rpt_group *g, const int *varying, char *out, size_t len) {
    const rpt_trial *t = &d->t[g->first];
    int o = snprintf(out, len, "%s", t->backend);
    for (int p = 0; p < d->np && o < (int)len; p++) {
        if (!varying[p] || strcmp(d->pnames[p], "backend") == 0 || !t->pv[p]) continue;
        o += snprintf(out + o, len - o, " %s=%s", rpt_param_short(d->pnames[p]), t->pv[p]);
    }
}

void rpt_group_note(const rpt_db *d, const rpt_group *g, char *out, size_t len) {
    static const char *const st[] = {ST_FAILED, ST_UNSUPPORTED, ST_INTERRUPTED, ST_RUNNING, ST_PENDING};
    int o = 0;
    out[0] = 0;
    for (size_t s = 0; s < sizeof st / sizeof st[0]; s++) {
        int c = 0;
        const char *e = NULL;
        for (int i = 0; i < g->n; i++) {
            const rpt_trial *t = &d->t[g->ti[i]];
            if (strcmp(t->status, st[s]) != 0) continue;
            c++;
            if (!e && t->error && *t->error) e = t->error;
        }
        if (!c || o >= (int)len) continue;
        o += snprintf(out + o, len - o, "%s%d %s%s%s", o ? "; " : "", c, st[s], e ? ": " : "", e ? e : "");
    }
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
}

void rpt_series_split(const rpt_db *d, const rpt_group *g, int ng, int xp, int *split) {
    for (int p = 0; p < d->np; p++) split[p] = 0;
    for (int a = 0; a < ng; a++)
        for (int b = a + 1; b < ng; b++) {
            const rpt_trial *ta = &d->t[g[a].first], *tb = &d->t[g[b].first];
            if (strcmp(ta->backend, tb->backend) != 0) continue;
            if (!ta->pv[xp] || !tb->pv[xp] || strcmp(ta->pv[xp], tb->pv[xp]) != 0) continue;
            for (int p = 0; p < d->np; p++)
                if (p != xp && !split[p] && !str_eq(ta->pv[p], tb->pv[p])) split[p] = 1;
        }
}

void rpt_series_label(const rpt_db *d, const rpt_trial *t, const int *split, char *out, size_t len) {
    int o = snprintf(out, len, "%s", t->backend);
    for (int p = 0; p < d->np && o < (int)len; p++)
        if (split[p] && t->pv[p] && strcmp(d->pnames[p], "backend") != 0)
            o += snprintf(out + o, len - o, " %s=%s", rpt_param_short(d->pnames[p]), t->pv[p]);
}

int rpt_dense_match(const rpt_db *d, const rpt_group *g, int ng, int k) {
    const rpt_trial *x = &d->t[g[k].first];
    if (!strcmp(x->backend, "dense")) return -1;
    for (int j = 0; j < ng; j++) {
        const rpt_trial *y = &d->t[g[j].first];
        if (strcmp(y->backend, "dense") != 0) continue;
        int same = 1;
        for (int p = 0; p < d->np && same; p++)
            if (x->pv[p] && y->pv[p] && strcmp(d->pnames[p], "backend") != 0) same = strcmp(x->pv[p], y->pv[p]) == 0;
        if (same) return j;
    }
    return -1;
}

int rpt_speedup(const rpt_db *d, const rpt_group *g, const rpt_group *gd, const char *measure, double *s, double *lo,
                double *hi) {
    double a = rpt_group_value(d, g, measure), b = rpt_group_value(d, gd, measure), alo, ahi, blo, bhi;
    *s = *lo = *hi = NAN;
    if (!(a > 0) || !(b > 0)) return -1;
    rpt_group_interval(d, g, measure, &alo, &ahi);
    rpt_group_interval(d, gd, measure, &blo, &bhi);
    *s = b / a;
    *lo = blo / ahi;
    *hi = alo > 0 ? bhi / alo : INFINITY;
    return 0;
}

/* ------------------------------------------------------------------ */
/* tables                                                              */

int rpt_format_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "md") || !strcmp(s, "markdown")) return RPT_MD;
    if (!strcmp(s, "csv")) return RPT_CSV;
    if (!strcmp(s, "tex") || !strcmp(s, "latex")) return RPT_TEX;
    return -1;
}

void rpt_table_init(rpt_table *tb, int ncol, const char *const *head, const char *align) {
    memset(tb, 0, sizeof *tb);
    tb->ncol = ncol;
    tb->head = callocCheck((size_t)ncol, sizeof *tb->head);
    tb->align = callocCheck((size_t)ncol + 1, 1);
    for (int i = 0; i < ncol; i++) {
        tb->head[i] = xstrdup(head[i] ? head[i] : "");
        tb->align[i] = align && align[i] ? align[i] : 'l';
    }
}

void rpt_table_add_row(rpt_table *tb, const char *const *cells) {
    if (tb->nrow == tb->cap) {
        tb->cap = tb->cap ? 2 * tb->cap : 16;
        tb->cell = reallocCheck(tb->cell, (size_t)tb->cap * tb->ncol * sizeof *tb->cell);
    }
    for (int i = 0; i < tb->ncol; i++) tb->cell[(size_t)tb->nrow * tb->ncol + i] = xstrdup(cells[i] ? cells[i] : "");
    tb->nrow++;
}

void rpt_table_free(rpt_table *tb) {
    for (int i = 0; i < tb->ncol; i++) free(tb->head[i]);
    for (size_t i = 0; i < (size_t)tb->nrow * tb->ncol; i++) free(tb->cell[i]);
    free(tb->head), free(tb->align), free(tb->cell);
    memset(tb, 0, sizeof *tb);
}

/* LaTeX-escape s into out. */
static void tex_escape(char *out, size_t len, const char *s) {
    size_t o = 0;
    for (; *s && o + 20 < len; s++) {
        const char *r = NULL;
        switch (*s) {
        case '\\': r = "\\textbackslash{}"; break;
        case '&': r = "\\&"; break;
        case '%': r = "\\%"; break;
        case '$': r = "\\$"; break;
        case '#': r = "\\#"; break;
        case '_': r = "\\_"; break;
        case '{': r = "\\{"; break;
        case '}': r = "\\}"; break;
        case '~': r = "\\textasciitilde{}"; break;
        case '^': r = "\\textasciicircum{}"; break;
        }
        if (r) o += (size_t)snprintf(out + o, len - o, "%s", r);
        else out[o++] = *s;
    }
    out[o] = 0;
}

static void md_escape(char *out, size_t len, const char *s) {
    size_t o = 0;
    for (; *s && o + 3 < len; s++) {
        if (*s == '|') out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = 0;
}

void rpt_text_cell(char *out, size_t len, const char *s, int format) {
    if (format == RPT_TEX) tex_escape(out, len, s);
    else if (format == RPT_MD) md_escape(out, len, s);
    else {
        size_t n = strlen(s) < len - 1 ? strlen(s) : len - 1;
        memcpy(out, s, n);
        out[n] = 0;
    }
}

/* A value for display: units chosen per measure. */
void rpt_fmt_sig(char *out, size_t len, double v, int sig) {
    if (isfinite(v) && fabs(v) >= pow(10.0, sig) - 0.5) snprintf(out, len, "%.0f", v);
    else snprintf(out, len, "%.*g", sig, v);
}

static void fmt_display(char *out, size_t len, const char *m, double v, int format) {
    if (!strcmp(m, "loss") || !strcmp(m, "bpt")) snprintf(out, len, "%.4f", v);
    else if (!strcmp(m, "acc")) snprintf(out, len, "%.3f", v);
    else if (!strcmp(m, "tokens")) snprintf(out, len, "%.0f", v);
    else if (!strcmp(m, "mem") || !strcmp(m, "act_mem")) rpt_fmt_sig(out, len, v / 1048576.0, 3);
    else if (!strcmp(m, "gflops")) snprintf(out, len, "%.2f", v);
    else if (!strcmp(m, "sgemm")) snprintf(out, len, format == RPT_TEX ? "%.1f\\%%" : "%.1f%%", 100 * v);
    else rpt_fmt_sig(out, len, v, 4);
}

static void write_csv_cell(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Characters of UTF-8 text (the ± sign is two bytes, one column). */
static int u8len(const char *s) {
    int n = 0;
    for (; *s; s++) n += (*s & 0xC0) != 0x80;
    return n;
}

void rpt_table_write(FILE *f, const rpt_table *tb, int format) {
    const char *const *c = (const char *const *)tb->cell;
    if (format == RPT_CSV) {
        for (int j = 0; j < tb->ncol; j++) {
            if (j) fputc(',', f);
            write_csv_cell(f, tb->head[j]);
        }
        fputc('\n', f);
        for (int i = 0; i < tb->nrow; i++) {
            for (int j = 0; j < tb->ncol; j++) {
                if (j) fputc(',', f);
                write_csv_cell(f, c[(size_t)i * tb->ncol + j]);
            }
            fputc('\n', f);
        }
        return;
    }
    if (format == RPT_TEX) {
        fprintf(f, "%% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n");
        if (tb->caption[0]) fprintf(f, "\\caption{%s}\n", tb->caption);
        fprintf(f, "\\begin{tabular}{%s}\n\\toprule\n", tb->align);
        for (int j = 0; j < tb->ncol; j++) fprintf(f, "%s%s", j ? " & " : "", tb->head[j]);
        fprintf(f, " \\\\\n\\midrule\n");
        for (int i = 0; i < tb->nrow; i++) {
            for (int j = 0; j < tb->ncol; j++) fprintf(f, "%s%s", j ? " & " : "", c[(size_t)i * tb->ncol + j]);
            fprintf(f, " \\\\\n");
        }
        fprintf(f, "\\bottomrule\n\\end{tabular}\n");
        if (tb->footnote[0]) fprintf(f, "\\par\\smallskip{\\footnotesize %s}\n", tb->footnote);
        fprintf(f, "\\end{table}\n");
        return;
    }
    /* Markdown, padded to column widths so it also reads well as plain text.
     * Widths count UTF-8 characters, not bytes (the ± sign). */
    int *w = callocCheck((size_t)tb->ncol, sizeof *w);
    for (int j = 0; j < tb->ncol; j++) {
        w[j] = RB_MAX(3, u8len(tb->head[j]));
        for (int i = 0; i < tb->nrow; i++) w[j] = RB_MAX(w[j], u8len(c[(size_t)i * tb->ncol + j]));
    }
    if (tb->caption[0]) fprintf(f, "%s\n\n", tb->caption);
    for (int j = 0; j < tb->ncol; j++) fprintf(f, "| %s%*s ", tb->head[j], w[j] - u8len(tb->head[j]), "");
    fprintf(f, "|\n");
    for (int j = 0; j < tb->ncol; j++) {
        fprintf(f, "|%s", tb->align[j] == 'r' ? "" : ":");
        for (int k = 0; k < w[j] + (tb->align[j] == 'r' ? 1 : 0); k++) fputc('-', f);
        fprintf(f, "%s", tb->align[j] == 'r' ? ":" : "-");
    }
    fprintf(f, "|\n");
    for (int i = 0; i < tb->nrow; i++) {
        for (int j = 0; j < tb->ncol; j++) {
            const char *s = c[(size_t)i * tb->ncol + j];
            int pad = w[j] - u8len(s);
            if (tb->align[j] == 'r') fprintf(f, "| %*s%s ", pad, "", s);
            else fprintf(f, "| %s%*s ", s, pad, "");
        }
        fprintf(f, "|\n");
    }
    if (tb->footnote[0]) fprintf(f, "\n%s\n", tb->footnote);
    free(w);
}

static const char *const default_measures[] = {"loss", "bpt", "acc", "time", "tokens", "mem", "act_mem", "gflops",
                                               "sgemm"};

/* Status word for a group with no done trial: the common status, or "not done". */
static const char *group_status(const rpt_db *d, const rpt_group *g) {
    const char *s = d->t[g->ti[0]].status;
    for (int i = 1; i < g->n; i++)
        if (strcmp(d->t[g->ti[i]].status, s) != 0) return "not done";
    return s;
}

static int count_status(const rpt_db *d, const char *st) {
    int c = 0;
    for (int i = 0; i < d->nt; i++) c += strcmp(d->t[i].status, st) == 0;
    return c;
}

/* What rpt_table_build works out before it writes: the groups, the measure
 * columns, which parameters are columns, fixed, or pooled over. */
typedef struct {
    const rpt_db *d;
    int F;
    rpt_group *g;
    int ng;
    char ms[64][64];
    int nms;
    int *varying, *col, *pooled; /* [np] */
    int any_note;
    const char *speed;           /* the timing measure of the speed-up column; NULL: no column */
    int nnoisy_rows;
} tbuild;

static int pick_measures(tbuild *b, const char *metrics, char *err, size_t errlen) {
    if (!metrics || !*metrics) {
        for (size_t i = 0; i < sizeof default_measures / sizeof default_measures[0]; i++)
            if (rpt_measure_present(b->d, default_measures[i])) snprintf(b->ms[b->nms++], 64, "%s", default_measures[i]);
        return 0;
    }
    b->nms = split_list(metrics, b->ms, 64);
    for (int i = 0; i < b->nms; i++) { /* split_list maps '-' to '_'; metric names never hold '-' */
        char e2[1536];
        if (rpt_measure_check(b->d, b->ms[i], e2, sizeof e2)) return rb_fail(err, errlen, "--metric: %s", e2);
    }
    return 0;
}

/* The speed-up column: against the first timing measure shown, when some
 * row has a dense configuration to compare with. */
static void pick_speedup(tbuild *b) {
    const char *m = NULL;
    for (int i = 0; i < b->nms && !m; i++)
        if (rpt_measure_is_timing(b->ms[i])) m = b->ms[i];
    for (int k = 0; k < b->ng && m && !b->speed; k++) {
        int j = rpt_dense_match(b->d, b->g, b->ng, k);
        double s, lo, hi;
        if (j >= 0 && rpt_speedup(b->d, &b->g[k], &b->g[j], m, &s, &lo, &hi) == 0) b->speed = m;
    }
}

/* Parameter columns: the --by names, or the parameters that vary between
 * rows; with --by, parameters that differ inside a group are pooled over. */
static void pick_columns(tbuild *b, const char *by) {
    const rpt_db *d = b->d;
    size_t np = (size_t)(d->np ? d->np : 1);
    b->varying = callocCheck(np, sizeof(int)), b->col = callocCheck(np, sizeof(int));
    b->pooled = callocCheck(np, sizeof(int));
    rpt_varying(d, b->g, b->ng, b->varying);
    if (!by || !*by) {
        for (int p = 0; p < d->np; p++) b->col[p] = b->varying[p];
        return;
    }
    char bn[32][64];
    int nb = split_list(by, bn, 32);
    for (int i = 0; i < nb; i++) b->col[rpt_param_index(d, bn[i])] = 1;
    for (int p = 0; p < d->np; p++) {
        if (b->col[p]) continue;
        for (int k = 0; k < b->ng && !b->pooled[p]; k++)
            for (int i = 1; i < b->g[k].n; i++)
                if (!str_eq(d->t[b->g[k].ti[i]].pv[p], d->t[b->g[k].ti[0]].pv[p])) b->pooled[p] = 1;
    }
}

#define MAXH (RPT_MAX_PARAMS + 5 * 64 + 8)

/* The CSV columns of measure m after its value: std and CI for a mean,
 * IQR for a timing, and always the count. */
static int csv_measure_head(const char *m, char (*hbuf)[96], const char **head, char *align, int nh) {
    static const char *const mean_sfx[] = {"_std", "_ci_lo", "_ci_hi", "_n"}, *const time_sfx[] = {"_iqr", "_n"};
    int mean = rpt_measure_agg(m) == RPT_AGG_MEAN, timing = rpt_measure_is_timing(m);
    const char *const *sfx = mean ? mean_sfx : time_sfx;
    int ns = mean ? 4 : timing ? 2 : 1;
    head[nh] = m, align[nh++] = 'r';
    for (int k = 0; k < ns; k++) {
        snprintf(hbuf[nh], 96, "%s%s", m, mean || timing ? sfx[k] : "_n");
        head[nh] = hbuf[nh], align[nh++] = 'r';
    }
    return nh;
}

static void build_header(tbuild *b, rpt_table *tb) {
    const char *head[MAXH];
    char align[MAXH], hbuf[MAXH][96];
    int nh = 0, F = b->F;
    for (int p = 0; p < b->d->np; p++) {
        if (!b->col[p]) continue;
        rpt_text_cell(hbuf[nh], sizeof hbuf[nh], b->d->pnames[p], F == RPT_CSV ? RPT_CSV : F);
        head[nh] = hbuf[nh], align[nh++] = strcmp(b->d->pnames[p], "backend") == 0 ? 'l' : 'r';
    }
    head[nh] = "n", align[nh++] = 'r';
    if (F == RPT_CSV)
        head[nh] = "trials", align[nh++] = 'r', head[nh] = "status", align[nh++] = 'l', head[nh] = "noisy",
        align[nh++] = 'r';
    for (int i = 0; i < b->nms; i++) {
        if (F == RPT_CSV) {
            nh = csv_measure_head(b->ms[i], hbuf, head, align, nh);
            continue;
        }
        char l[96];
        snprintf(l, sizeof l, "%s%s", rpt_measure_label(b->ms[i]), rpt_measure_is_timing(b->ms[i]) ? " (IQR)" : "");
        rpt_text_cell(hbuf[nh], sizeof hbuf[nh], l, F);
        head[nh] = hbuf[nh], align[nh++] = 'r';
    }
    if (b->speed && F == RPT_CSV) head[nh] = "speedup", head[nh + 1] = "speedup_lo", head[nh + 2] = "speedup_hi";
    if (b->speed && F != RPT_CSV) head[nh] = "speed-up vs dense";
    for (int k = 0; b->speed && k < (F == RPT_CSV ? 3 : 1); k++) align[nh++] = 'r';
    /* the note column only when some row has something to say (always in CSV) */
    b->any_note = F == RPT_CSV;
    for (int k = 0; k < b->ng && !b->any_note; k++) b->any_note = b->g[k].ndone < b->g[k].n;
    if (b->any_note) head[nh] = "note", align[nh++] = 'l';
    align[nh] = 0;
    rpt_table_init(tb, nh, head, align);
}

static void csv_num(char *out, double v, int ok) {
    if (ok && isfinite(v)) snprintf(out, 1024, "%.17g", v);
    else out[0] = 0;
}

/* The CSV cells of measure m (csv_measure_head's columns); returns the next c. */
static int csv_measure_cells(const rpt_stat *s, const char *m, char (*cells)[1024], int c) {
    int mean = rpt_measure_agg(m) == RPT_AGG_MEAN;
    csv_num(cells[c++], mean ? s->mean : s->median, s->n > 0);
    if (mean) {
        csv_num(cells[c++], s->std, s->n > 1);
        csv_num(cells[c++], s->mean - s->ci, s->n > 1);
        csv_num(cells[c++], s->mean + s->ci, s->n > 1);
    } else if (rpt_measure_is_timing(m)) {
        csv_num(cells[c++], s->spread, s->n > 0);
    }
    snprintf(cells[c++], 1024, "%d", s->n);
    return c;
}

/* One displayed cell of measure m with at least one value: mean ± std
 * [95% CI] for quality (the CI from two trials on), median (IQR) for timings,
 * the median for other throughput and memory measures. */
static void display_cell(const rpt_stat *s, const char *m, int F, char *out) {
    char a[64], sd[64], lo[64], hi[64];
    if (rpt_measure_agg(m) == RPT_AGG_MEAN) {
        fmt_display(a, sizeof a, m, s->mean, F);
        if (s->n < 2) {
            snprintf(out, 1024, "%s", a);
            return;
        }
        fmt_display(sd, sizeof sd, m, s->std, F);
        fmt_display(lo, sizeof lo, m, s->mean - s->ci, F);
        fmt_display(hi, sizeof hi, m, s->mean + s->ci, F);
        snprintf(out, 1024, F == RPT_TEX ? "%s $\\pm$ %s [%s, %s]" : "%s ± %s [%s, %s]", a, sd, lo, hi);
        return;
    }
    fmt_display(a, sizeof a, m, s->median, F);
    if (!rpt_measure_is_timing(m) || !(s->spread > 0)) {
        snprintf(out, 1024, "%s", a);
        return;
    }
    /* the spread to about two digits: it is itself noisy */
    snprintf(out, 1024, s->spread >= 10 ? "%s (%.0f)" : "%s (%.2g)", a, s->spread);
}

/* The cells of measure m for group x from cells[c]; returns the next c. */
static int measure_cells(const tbuild *b, const rpt_group *x, const char *m, char (*cells)[1024], int c) {
    const int F = b->F;
    rpt_stat s = rpt_group_stat(b->d, x, m);
    if (F == RPT_CSV) return csv_measure_cells(&s, m, cells, c);
    if (x->ndone == 0) rpt_text_cell(cells[c], 1024, group_status(b->d, x), F);
    else if (s.n == 0) snprintf(cells[c], 1024, "n/a");
    else display_cell(&s, m, F, cells[c]);
    return c + 1;
}

/* The speed-up cells of group k: "ref" for dense, the ratio and its interval. */
static int speedup_cells(const tbuild *b, int k, char (*cells)[1024], int c) {
    int j = rpt_dense_match(b->d, b->g, b->ng, k), csv = b->F == RPT_CSV;
    double s = NAN, lo = NAN, hi = NAN;
    if (j >= 0) rpt_speedup(b->d, &b->g[k], &b->g[j], b->speed, &s, &lo, &hi);
    if (csv) {
        int dense = !strcmp(b->d->t[b->g[k].first].backend, "dense") && b->g[k].ndone;
        csv_num(cells[c++], dense ? 1.0 : s, 1), csv_num(cells[c++], dense ? 1.0 : lo, 1);
        csv_num(cells[c++], dense ? 1.0 : hi, 1);
        return c;
    }
    if (!strcmp(b->d->t[b->g[k].first].backend, "dense")) snprintf(cells[c], 1024, "ref");
    else if (!isfinite(s)) snprintf(cells[c], 1024, "%s", b->F == RPT_TEX ? "--" : "–");
    else snprintf(cells[c], 1024, "%.2fx [%.2f, %.2f]", s, lo, hi);
    return c + 1;
}

/* The noisy rows' footnote line for group x, appended to tb->footnote. */
static void noisy_footnote(tbuild *b, const rpt_group *x, rpt_table *tb) {
    char why[600], label[600], line[1400];
    int k = rpt_group_noisy(b->d, x, why, sizeof why);
    if (!k) return;
    size_t o = strlen(tb->footnote);
    if (b->nnoisy_rows++ >= 12) {
        if (b->nnoisy_rows == 13 && o + 8 < sizeof tb->footnote) snprintf(tb->footnote + o, sizeof tb->footnote - o, "; ...");
        return;
    }
    rpt_group_label(b->d, x, b->varying, label, sizeof label);
    snprintf(line, sizeof line, "%s%s: %d of %d trials (%s)", o ? "; " : "* noisy measurement: ", label, k, x->ndone, why);
    rpt_text_cell(tb->footnote + o, sizeof tb->footnote - o, line, b->F);
}

static void build_row(tbuild *b, int k, rpt_table *tb, char (*cells)[1024]) {
    const int F = b->F;
    const rpt_group *x = &b->g[k];
    const rpt_trial *t0 = &b->d->t[x->first];
    const char *na = F == RPT_CSV ? "" : F == RPT_TEX ? "--" : "–";
    int c = 0, nz = rpt_group_noisy(b->d, x, NULL, 0);
    for (int p = 0; p < b->d->np; p++) {
        if (!b->col[p]) continue;
        if (t0->pv[p]) rpt_text_cell(cells[c], 1024, t0->pv[p], F);
        else snprintf(cells[c], 1024, "%s", na);
        c++;
    }
    if (F == RPT_CSV) {
        snprintf(cells[c++], 1024, "%d", x->ndone);
        snprintf(cells[c++], 1024, "%d", x->n);
        snprintf(cells[c++], 1024, "%s", x->ndone == x->n ? ST_DONE : group_status(b->d, x));
        snprintf(cells[c++], 1024, "%d", nz);
    } else if (x->ndone == x->n) {
        snprintf(cells[c++], 1024, "%d%s", x->n, nz ? "*" : "");
    } else {
        snprintf(cells[c++], 1024, "%d/%d%s", x->ndone, x->n, nz ? "*" : "");
    }
    for (int i = 0; i < b->nms; i++) c = measure_cells(b, x, b->ms[i], cells, c);
    if (b->speed) c = speedup_cells(b, k, cells, c);
    if (b->any_note) {
        char note[900], why[600];
        rpt_group_note(b->d, x, note, sizeof note);
        if (F == RPT_CSV && nz && rpt_group_noisy(b->d, x, why, sizeof why))
            snprintf(note + strlen(note), sizeof note - strlen(note), "%snoisy: %s", note[0] ? "; " : "", why);
        if (F != RPT_CSV && strlen(note) > 72) strcpy(note + 69, "...");
        rpt_text_cell(cells[c++], 1024, note, F);
    }
    if (F != RPT_CSV) noisy_footnote(b, x, tb);
    const char *row[MAXH];
    for (int i = 0; i < c; i++) row[i] = cells[i];
    rpt_table_add_row(tb, row);
}

/* "name=value, ..." of the parameters set to one value in every
 * configuration (where = 0) or only where they apply (where = 1). */
static int fixed_params(const tbuild *b, int where, char *part, size_t len) {
    const rpt_db *d = b->d;
    int fo = 0, nf = 0;
    part[0] = 0;
    for (int p = 0; p < d->np && b->ng > 0; p++) {
        if (b->col[p] || b->pooled[p] || b->varying[p] || fo >= (int)len) continue;
        const char *v = NULL;
        int nna = 0;
        for (int k = 0; k < b->ng; k++) {
            const char *x = d->t[b->g[k].first].pv[p];
            if (x) v = x;
            else nna++;
        }
        if (!v || (nna > 0) != where) continue;
        fo += snprintf(part + fo, len - fo, "%s%s=%s", nf++ ? ", " : "", d->pnames[p], v);
    }
    return nf;
}

/* What the caption says of the sgemm ceilings: one, a range over runs, or none. */
static int sgemm_caption(const rpt_db *d, char *out, size_t len) {
    if (!(d->sgemm_hi > 0)) return snprintf(out, len, ". sgemm ceiling not measured");
    int o = d->sgemm_hi > d->sgemm_lo
                ? snprintf(out, len, ". sgemm ceiling of each trial's own run: %.1f-%.1f GFLOP/s", d->sgemm_lo, d->sgemm_hi)
                : snprintf(out, len, ". sgemm ceiling %.1f GFLOP/s", d->sgemm_hi);
    if (d->nsgemm_unknown && o < (int)len)
        o += snprintf(out + o, len - o, " (%d trials from runs without one: no %% sgemm)", d->nsgemm_unknown);
    return o;
}

/* The caption: what the table is, what was held fixed, how cells summarise. */
static void build_caption(const tbuild *b, rpt_table *tb) {
    const rpt_db *d = b->d;
    char cap[2048], part[1024];
    int off = snprintf(cap, sizeof cap, "%s (%s%s%s): %d configurations, %d trials",
                       d->exp_name[0] ? d->exp_name : "experiment", d->exp_kind, d->exp_bench[0] ? " " : "",
                       d->exp_bench, b->ng, d->nt);
    static const char *const st[] = {ST_DONE, ST_FAILED, ST_UNSUPPORTED, ST_INTERRUPTED, ST_RUNNING, ST_PENDING};
    int first = 1;
    for (size_t s = 0; s < sizeof st / sizeof st[0]; s++) {
        int n = count_status(d, st[s]);
        if (!n || off >= (int)sizeof cap) continue;
        off += snprintf(cap + off, sizeof cap - off, "%s%d %s", first ? " (" : ", ", n, st[s]);
        first = 0;
    }
    if (!first && off < (int)sizeof cap) off += snprintf(cap + off, sizeof cap - off, ")");
    for (int where = 0; where < 2; where++)
        if (fixed_params(b, where, part, sizeof part) && off < (int)sizeof cap)
            off += snprintf(cap + off, sizeof cap - off, ". %s: %s", where ? "Fixed where they apply" : "Fixed", part);
    int fo = 0, nf = 0;
    for (int p = 0; p < d->np; p++)
        if ((b->pooled[p] || (b->varying[p] && !b->col[p])) && fo < (int)sizeof part)
            fo += snprintf(part + fo, sizeof part - fo, "%s%s", nf++ ? ", " : "", d->pnames[p]);
    if (nf && off < (int)sizeof cap) off += snprintf(cap + off, sizeof cap - off, ". Pooled over: %s", part);
    if (off < (int)sizeof cap) off += sgemm_caption(d, cap + off, sizeof cap - off);
    rpt_text_cell(tb->caption, sizeof tb->caption, cap, b->F);
    size_t cl = strlen(tb->caption);
    snprintf(tb->caption + cl, sizeof tb->caption - cl,
             ". Quality: mean %s std over seeds [95%% confidence interval of the mean, Student t; none from one "
             "seed] (n: trials done; * a noisy measurement, see below). Timings: median over seeds (interquartile "
             "spread: the larger of the trials' own IQR and the IQR over seeds); throughput and memory: median over "
             "seeds.%s",
             b->F == RPT_TEX ? "$\\pm$" : "±",
             b->speed ? " Speed-up: dense time / this time at the same parameters, [interval from the two "
                        "interquartile intervals]."
                      : "");
}

int rpt_table_build(rpt_table *tb, const rpt_db *d, const rpt_table_opts *o, char *err, size_t errlen) {
    memset(tb, 0, sizeof *tb);
    tbuild b;
    memset(&b, 0, sizeof b);
    b.d = d, b.F = o->format;
    if (rpt_group_trials(d, o->by, &b.g, &b.ng, err, errlen)) return -1;
    if (pick_measures(&b, o->metrics, err, errlen)) {
        rpt_groups_free(b.g, b.ng);
        return -1;
    }
    pick_columns(&b, o->by);
    pick_speedup(&b);
    build_header(&b, tb);
    char (*cells)[1024] = mallocCheck((size_t)tb->ncol * sizeof *cells);
    for (int k = 0; k < b.ng; k++) build_row(&b, k, tb, cells);
    if (b.F != RPT_CSV) build_caption(&b, tb);
    free(cells);
    free(b.varying), free(b.col), free(b.pooled);
    rpt_groups_free(b.g, b.ng);
    return 0;
}
