/* testutil.h: fixtures the C tests repeat, beside tap.h: strings that live
 * to the end of the test, a temporary directory, one value read from a
 * database, a trial row's parameter columns by name, an experiment loaded
 * from text, one attention layer's tensors and instance, the small training
 * model, random tensors. Header-only (static functions), so a test includes
 * what it uses and nothing links twice. Each part is compiled when the
 * header it needs (sqlite3.h, store.h, experiment.h, attn.h, train.h,
 * common.h) is included first: include this file last. */
#ifndef RB_TESTUTIL_H
#define RB_TESTUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* printf into a string that stays valid until the test exits. */
static __attribute__((unused, format(printf, 1, 2))) const char *tu_str(const char *fmt, ...) {
    static char pool[8192][48];
    static int next;
    char *s = pool[next++ % 8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof pool[0], fmt, ap);
    va_end(ap);
    return s;
}

/* A fresh directory $TMPDIR/rb_TEST_XXXXXX (/tmp without TMPDIR) into dir;
 * on failure a TAP "Bail out!" line and -1. */
static __attribute__((unused)) int tu_tmpdir(char *dir, size_t len, const char *test) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, len, "%s/rb_%s_XXXXXX", base && *base ? base : "/tmp", test);
    if (mkdtemp(dir)) return 0;
    printf("Bail out! cannot make a temporary directory %s\n", dir);
    return -1;
}

/* Remove a test's directory and all in it (kept, and said so, when
 * RB_KEEP_TMP is set). */
static __attribute__((unused)) void tu_rmtree(const char *dir) {
    char cmd[600];
    if (getenv("RB_KEEP_TMP")) {
        printf("# kept %s\n", dir);
        return;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
}

#ifdef SQLITE3_H
/* The first row of sql on the database at path (opened read-only), or NULL
 * (and *db closed) when it cannot be opened, the query fails or has no row;
 * tu_sql_end finalises and closes. The three readers below give the row's
 * first column as an integer, a double (-1 for no row) or text ("" for none). */
static __attribute__((unused)) sqlite3_stmt *tu_sql_row(sqlite3 **db, const char *path, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(*db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        return st;
    sqlite3_finalize(st);
    sqlite3_close(*db);
    return NULL;
}
static __attribute__((unused)) void tu_sql_end(sqlite3 *db, sqlite3_stmt *st) {
    sqlite3_finalize(st);
    sqlite3_close(db);
}
static __attribute__((unused)) long long tu_q1(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *st = tu_sql_row(&db, path, sql);
    if (!st) return -1;
    long long v = sqlite3_column_int64(st, 0);
    tu_sql_end(db, st);
    return v;
}
static __attribute__((unused)) double tu_qd(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *st = tu_sql_row(&db, path, sql);
    if (!st) return -1;
    double v = sqlite3_column_double(st, 0);
    tu_sql_end(db, st);
    return v;
}
static __attribute__((unused)) void tu_qs(const char *path, const char *sql, char *out, size_t len) {
    sqlite3 *db;
    sqlite3_stmt *st = tu_sql_row(&db, path, sql);
    out[0] = 0;
    if (!st) return;
    if (sqlite3_column_text(st, 0)) snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    tu_sql_end(db, st);
}
#endif

#ifdef RB_STORE_H
/* Set a trial row's parameter column by name (a column the table lacks is ignored). */
static __attribute__((unused)) void tu_col(store_trial *t, const char *name, const char *v) {
    int i = store_col_index(name);
    if (i >= 0) t->colv[i] = v;
}
static __attribute__((unused)) void tu_coli(store_trial *t, const char *name, long long v) {
    tu_col(t, name, tu_str("%lld", v));
}
#endif

#ifdef RB_ATTN_H
#include "util/common.h"

/* One attention layer's tensors, [batch, heads, seq, head_dim] each: the
 * inputs q, k, v and dout drawn from N(0, 1) (reproducible from the seed),
 * the outputs out, dq, dk, dv zeroed. */
typedef struct {
    int B, H, n, d;
    size_t N; /* elements per tensor */
    float *q, *k, *v, *dout, *out, *dq, *dk, *dv;
} tu_io;

static __attribute__((unused)) void tu_io_make(tu_io *io, const attn_params *p, uint64_t seed) {
    io->B = p->batch, io->H = p->heads, io->n = p->seq, io->d = p->head_dim;
    io->N = (size_t)io->B * io->H * io->n * io->d;
    float **all[] = {&io->q, &io->k, &io->v, &io->dout, &io->out, &io->dq, &io->dk, &io->dv};
    for (int i = 0; i < 8; i++) *all[i] = callocCheck(io->N, sizeof(float));
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (int t = 0; t < 4; t++)
        for (size_t i = 0; i < io->N; i++) (*all[t])[i] = rb_rng_normal(&r);
}

static __attribute__((unused)) void tu_io_free(tu_io *io) {
    free(io->q), free(io->k), free(io->v), free(io->dout);
    free(io->out), free(io->dq), free(io->dk), free(io->dv);
}

/* The default parameters with the shape [B, H, n, d] and the seed set. */
static __attribute__((unused)) attn_params tu_params(int B, int H, int n, int d, uint64_t seed) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.seed = seed;
    return p;
}

/* a's forward (ATTN_EVAL) on io into o with row pos of input t (0 q, 1 k,
 * 2 v) raised by 0.5 in every batch entry and head; the input is restored
 * after, bit for bit. */
static __attribute__((unused)) void tu_forward_perturbed(attn *a, tu_io *io, int t, int pos, float *o) {
    float *x = t == 0 ? io->q : t == 1 ? io->k : io->v;
    size_t d = (size_t)io->d, rows = (size_t)io->B * io->H;
    float *saved = mallocCheck(rows * d * sizeof(float));
    for (size_t bh = 0; bh < rows; bh++)
        for (size_t e = 0; e < d; e++) {
            saved[bh * d + e] = x[(bh * io->n + pos) * d + e];
            x[(bh * io->n + pos) * d + e] += 0.5f;
        }
    a->be->forward(a, o, io->q, io->k, io->v, ATTN_EVAL);
    for (size_t bh = 0; bh < rows; bh++)
        for (size_t e = 0; e < d; e++) x[(bh * io->n + pos) * d + e] = saved[bh * d + e];
    free(saved);
}

/* attn_make, saying why in a TAP comment when it fails. */
static __attribute__((unused)) attn *tu_make(const char *name, attn_params *p) {
    char err[512];
    attn *a = attn_make(name, p, err, sizeof err);
    if (!a) printf("# attn_make(%s) failed: %s\n", name, err);
    return a;
}
#endif

#ifdef RB_EXPERIMENT_H
/* The experiment file text yaml (named name in messages) loaded into e, which
 * must give ntrials trials; otherwise its errors and a TAP "Bail out!" line,
 * and -1. */
static __attribute__((unused)) int tu_load_exp(experiment *e, const char *yaml, const char *name, int ntrials) {
    exp_errors errs;
    memset(e, 0, sizeof *e);
    if (exp_load_string(e, yaml, strlen(yaml), name, &errs) == 0 && e->ntrials == ntrials) return 0;
    exp_errors_print(&errs, stdout);
    printf("Bail out! the test experiment does not load\n");
    return -1;
}
#endif

#ifdef RB_TRAIN_H
/* The small model the training tests share: task "copy" or "random" with
 * vocab symbols, 2 layers of 2 heads, d_model wide, seq long, batch
 * sequences a step for steps steps, backend (NULL: the default); the rest
 * train_config_default's. */
static __attribute__((unused)) void tu_small_model(train_config *c, const char *task, int vocab, int d_model, int seq,
                                                   int batch, int steps, const char *backend) {
    train_config_default(c);
    snprintf(c->task, sizeof c->task, "%s", task);
    if (!strcmp(task, "copy")) c->copy_vocab = vocab;
    else c->random_vocab = vocab;
    c->layers = 2, c->heads = 2;
    c->d_model = d_model, c->seq = seq, c->batch = batch, c->steps = steps;
    if (backend) snprintf(c->backend, sizeof c->backend, "%s", backend);
}
#endif

#ifdef RB_COMMON_H
/* n floats from N(0, scale^2), reproducible from seed. */
static __attribute__((unused)) void tu_randn(float *x, size_t n, uint64_t seed, float scale) {
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rb_rng_normal(&r);
}
#endif

#endif
