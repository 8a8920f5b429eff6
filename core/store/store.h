/* store.h: the SQLite results store (schema in results/README.md). One
 * database per sweep: an `experiments` row per invocation of `routebench run`
 * (the YAML as written, its hash, commit, machine, sgemm ceiling, times), a
 * `trials` row per (key, seed) with the resolved parameters as columns and a
 * status, and `metrics` rows (trial, step, name, value). A trial's metrics and
 * its final status commit in one transaction, so a killed run never leaves
 * half a trial. WAL mode and a busy timeout let shards and readers (sqlite3,
 * pandas) share a file. The schema version is PRAGMA user_version; opening an
 * older database migrates it, a newer one is refused with a message. */
#ifndef RB_STORE_H
#define RB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util/metric.h"
#include "util/params.h"

/* 2: trial keys of model trials re-hashed in params.def order (old
 * spellings renamed); a column per PF_COLUMN parameter, added when missing. */
#define STORE_SCHEMA_VERSION 2

typedef struct rb_store rb_store;

/* Trial statuses, as stored. */
#define ST_PENDING "pending"
#define ST_RUNNING "running"
#define ST_DONE "done"
#define ST_FAILED "failed"
#define ST_INTERRUPTED "interrupted"
#define ST_UNSUPPORTED "unsupported"

typedef rb_metric store_metric; /* util/metric.h */

typedef struct {
    const char *name, *description, *kind, *bench, *yaml, *yaml_hash, *path;
    const char *git_commit, *host, *cpu, *blas, *shard, *filter, *argv;
    const char *overrides; /* the run's --set overrides; NULL or "" = none */
    int threads;
    double sgemm_gflops; /* 0 = not measured (stored as NULL) */
} store_experiment;

/* A trial's identity and resolved parameters. The parameter columns are the
 * PF_COLUMN rows of core/util/params.def in table order (store_col); their
 * values come as text in the trial-key form (integers, booleans 0/1, reals,
 * enum names), NULL for a parameter that does not apply to the trial. */
#define STORE_MAX_COLS 64
typedef struct {
    const char *key, *name, *kind, *bench, *backend, *params_json;
    uint64_t seed;
    int idx;
    const char *colv[STORE_MAX_COLS];
} store_trial;

/* A trial's parameter JSON in today's canonical order and spelling (the
 * text its key hashes; rekey.c). 0, or -1 when in is not a JSON object or
 * out is too small. */
int store_rekey_json(const char *in, char *out, size_t len);

/* The parameter columns of the trials table: how many, and the i-th. */
int store_ncols(void);
const rb_param *store_col(int i);
/* The index of column name (store_col order), or -1. */
int store_col_index(const char *name);

/* Open (create = 1: create if missing) and check the file: SQLite, a
 * routebench schema this version can read (migrating an older one), not
 * corrupt, writable. 0, or -1 with a message naming the path. */
int store_open(rb_store **out, const char *path, int create, char *err, size_t errlen);
/* Open path only to read it, leaving nothing behind: read-write but
 * query-only where the file and its directory are writable (so no -wal or
 * -shm file survives the close), immutable where they are not (a read-only
 * directory or file). For report, plot, compare and merge inputs. 0, or -1
 * with a message; *db is the raw connection. */
struct sqlite3;
int store_sqlite_open_read(const char *path, struct sqlite3 **db, char *err, size_t errlen);
/* Read-only open (merge inputs): store_sqlite_open_read, then the checks. */
int store_open_readonly(rb_store **out, const char *path, char *err, size_t errlen);
void store_close(rb_store *s);

/* The experiment name this database holds ("" when new). 0 or -1. */
int store_experiment_name(rb_store *s, char *name, size_t len, char *err, size_t errlen);
/* The --set overrides of the latest run recorded ("" when none, or no run);
 * *runs gets how many runs the database has. */
int store_latest_overrides(rb_store *s, char *out, size_t len, int *runs, char *err, size_t errlen);
/* The YAML hash of the latest run recorded ("" when none). */
int store_latest_hash(rb_store *s, char *hash, size_t len, char *err, size_t errlen);

/* A new experiments row for this invocation; its id in *id. */
int store_begin_experiment(rb_store *s, const store_experiment *x, int64_t *id, char *err, size_t errlen);
/* Record the end time and how the run ended ("done", "interrupted", "failed"). */
int store_end_experiment(rb_store *s, int64_t id, const char *status, char *err, size_t errlen);
/* The sgemm ceiling measured after the run's trials (experiments.sgemm_after;
 * gflops <= 0 stores NULL: not measured). */
int store_set_sgemm_after(rb_store *s, int64_t id, double gflops, char *err, size_t errlen);

/* Insert trials that are not there yet as pending (one transaction). */
int store_register_trials(rb_store *s, const store_trial *t, int n, int64_t exp_id, char *err, size_t errlen);

/* Status ("" when absent), row id and runner ("host:pid") of (key, seed). */
int store_trial_status(rb_store *s, const char *key, uint64_t seed, char *status, size_t slen, int64_t *id,
                       char *runner, size_t rlen, char *err, size_t errlen);

/* Trials left `running` by a process of this host that no longer exists
 * (killed) become `interrupted`, and so do the runs (experiments rows) of
 * such processes. Returns how many trials, or -1. */
int store_reset_stale(rb_store *s, const char *host, char *err, size_t errlen);

/* A done trial (with only_noisy: one marked noisy) becomes pending again
 * (its metrics stay until a new measurement replaces them). 1 when it
 * changed, 0 when it was not done (and noisy), -1 on error. */
int store_redo(rb_store *s, int64_t id, int only_noisy, char *err, size_t errlen);

/* Mark a trial running (by runner "host:pid", for experiment exp_id) unless
 * it is done or unsupported (then nothing changes). 0, or -1 on error. */
int store_claim_trial(rb_store *s, int64_t id, int64_t exp_id, const char *runner, char *err, size_t errlen);
/* The same, but also not when it is already running, in one statement: of
 * two processes sharing a database only one gets a trial. 0 claimed, 1 not
 * claimed (running elsewhere, or done), -1 on error. */
int store_try_claim_trial(rb_store *s, int64_t id, int64_t exp_id, const char *runner, char *err, size_t errlen);

/* In one transaction: replace the trial's metrics with m[0..n) and set its
 * status, error text (NULL = none) and end time. */
int store_finish_trial(rb_store *s, int64_t id, const char *status, const char *error, const store_metric *m, int n,
                       char *err, size_t errlen);
/* The same, also setting the trial's noise mark (noisy 0 or 1, and why;
 * noisy < 0: not judged, stored as NULL). */
int store_finish_trial_noise(rb_store *s, int64_t id, const char *status, const char *error, const store_metric *m,
                             int n, int noisy, const char *noise, char *err, size_t errlen);

/* Fold the databases in[0..nin) into out (created if missing): all must hold
 * the same experiment (name and YAML hash of the latest run); one copy of
 * each (key, seed) is kept, a done one over any other. 0, or -1 with a
 * message. Counts of trials copied and kept in *copied, *kept. */
int store_merge(const char *out, const char *const *in, int nin, int *copied, int *kept, char *err, size_t errlen);

/* Current UTC time as 2024-01-31T12:00:00Z. */
void store_now(char *buf, size_t len);

#endif
