/* store.c: the SQLite results store (store.h). Every SQLite failure becomes
 * one message naming the database file; a file that is not SQLite, a corrupt
 * or locked one, a newer schema, or a path that cannot be created are all
 * refused before anything is written. */
#include "store/store.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/common.h"
#include "util/fsutil.h"
#include "util/hash.h"

struct rb_store {
    sqlite3 *db;
    char path[1024];
};

/* The schema, with the trials table's parameter columns (the PF_COLUMN rows
 * of params.def) between the fixed columns; results/README.md describes it. */
static const char schema_head[] =
    "CREATE TABLE experiments(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  name TEXT NOT NULL, description TEXT, kind TEXT, bench TEXT,\n"
    "  yaml TEXT NOT NULL, yaml_hash TEXT NOT NULL, path TEXT,\n"
    "  git_commit TEXT, host TEXT, cpu TEXT, blas TEXT, threads INTEGER, sgemm_gflops REAL,\n"
    "  shard TEXT, filter TEXT, argv TEXT,\n"
    "  started_at TEXT, ended_at TEXT, status TEXT,\n"
    "  uid TEXT UNIQUE, sgemm_after REAL, overrides TEXT);\n"
    "CREATE TABLE trials(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  experiment_id INTEGER REFERENCES experiments(id),\n"
    "  key TEXT NOT NULL, seed INTEGER NOT NULL, name TEXT NOT NULL, idx INTEGER,\n"
    "  kind TEXT, bench TEXT, backend TEXT,\n";
static const char schema_tail[] =
    "  params TEXT NOT NULL,\n"
    "  status TEXT NOT NULL CHECK (status IN ('pending','running','done','failed','interrupted','unsupported')),\n"
    "  error TEXT, attempts INTEGER NOT NULL DEFAULT 0, runner TEXT,\n"
    "  started_at TEXT, ended_at TEXT, seconds REAL, noisy INTEGER, noise TEXT,\n"
    "  UNIQUE(key, seed));\n"
    "CREATE TABLE metrics(\n"
    "  trial_id INTEGER NOT NULL REFERENCES trials(id),\n"
    "  step INTEGER, name TEXT NOT NULL, value REAL);\n"
    "CREATE INDEX metrics_trial ON metrics(trial_id, name, step);\n"
    "CREATE VIEW results AS\n"
    "  SELECT t.id AS trial_id, t.name AS trial, t.backend, t.seq, t.heads, t.head_dim, t.batch, t.window,\n"
    "         t.clusters, t.seed, t.key, m.name AS metric, m.value\n"
    "  FROM trials t JOIN metrics m ON m.trial_id = t.id\n"
    "  WHERE t.status = 'done' AND m.step IS NULL;\n";


int store_ncols(void) {
    int n = 0;
    for (int i = 0; i < rb_param_count(); i++) n += (rb_param_at(i)->flags & PF_COLUMN) != 0;
    return n;
}

const rb_param *store_col(int k) {
    for (int i = 0; i < rb_param_count(); i++)
        if ((rb_param_at(i)->flags & PF_COLUMN) && k-- == 0) return rb_param_at(i);
    return NULL;
}

int store_col_index(const char *name) {
    for (int i = 0; i < store_ncols(); i++)
        if (strcmp(store_col(i)->name, name) == 0) return i;
    return -1;
}

static const char *col_sqltype(const rb_param *d) {
    return d->type == PT_FLOAT || d->type == PT_DOUBLE ? "REAL" : rb_param_integral(d) && d->type != PT_ENUM ? "INTEGER"
                                                                                                           : "TEXT";
}

void store_now(char *buf, size_t len) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One message for a failed SQLite call, with a hint for the common cases. */
static int db_fail(rb_store *s, int rc, const char *what, char *err, size_t errlen) {
    const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    const char *hint = "";
    int prim = rc & 0xff;
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        hint = " (another process holds a lock on it; wait for it or use another --db)";
    else if (prim == SQLITE_NOTADB) hint = " (the file is not an SQLite database; use another --db)";
    else if (prim == SQLITE_CORRUPT) hint = " (the file is damaged; restore it or use another --db)";
    else if (prim == SQLITE_READONLY || prim == SQLITE_CANTOPEN || prim == SQLITE_PERM)
        hint = " (check that the directory exists and is writable)";
    else if (prim == SQLITE_FULL) hint = " (the disk is full)";
    return rb_fail(err, errlen, "%s: %s: %s%s", s ? s->path : "database", what, msg, hint);
}

/* Runs a prepared statement that returns no rows and finalises it; a
 * failure is reported as db_fail does, naming what was being done. */
static int step_done(rb_store *s, sqlite3_stmt *st, const char *what, char *err, size_t errlen) {
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, what, err, errlen);
}

static int exec(rb_store *s, const char *sql, const char *what, char *err, size_t errlen) {
    char *m = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &m);
    sqlite3_free(m);
    if (rc != SQLITE_OK) return db_fail(s, rc, what, err, errlen);
    return 0;
}

static int query_int(rb_store *s, const char *sql, long long *out, char *err, size_t errlen) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading", err, errlen);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    else *out = 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(s, rc, "reading", err, errlen);
    return 0;
}

/* A file that exists and is not empty must start with SQLite's magic. */
static int check_magic(const char *path, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0; /* missing: fine (created or refused later) */
    if (S_ISDIR(sb.st_mode)) return rb_fail(err, errlen, "%s: is a directory, not a database file", path);
    if (sb.st_size == 0) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rb_fail(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    char magic[16] = {0};
    size_t n = fread(magic, 1, 16, f);
    fclose(f);
    if (n < 16 || memcmp(magic, "SQLite format 3", 16) != 0)
        return rb_fail(err, errlen, "%s: not an SQLite database (refusing to touch it; use another --db)", path);
    return 0;
}

static int migrate_v1(rb_store *s, char *err, size_t errlen);

/* Migrations from older schema versions: migrate[v] brings v to v+1 inside
 * one transaction. */
static int (*const migrate[STORE_SCHEMA_VERSION])(rb_store *, char *, size_t) = {NULL, migrate_v1};

static int create_schema(rb_store *s, char *err, size_t errlen) {
    size_t cap = sizeof schema_head + sizeof schema_tail + 64 * (size_t)store_ncols() + 128, off;
    char *sql = mallocCheck(cap);
    off = (size_t)snprintf(sql, cap, "BEGIN IMMEDIATE;\n%s", schema_head);
    for (int i = 0; i < store_ncols(); i++)
        off += (size_t)snprintf(sql + off, cap - off, "  \"%s\" %s,\n", store_col(i)->name, col_sqltype(store_col(i)));
    snprintf(sql + off, cap - off, "%sPRAGMA user_version=%d;\nCOMMIT;", schema_tail, STORE_SCHEMA_VERSION);
    int rc = exec(s, sql, "creating the schema", err, errlen);
    free(sql);
    if (rc) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int upgrade(rb_store *s, long long ver, char *err, size_t errlen) {
    for (long long v = ver; v < STORE_SCHEMA_VERSION; v++) {
        if (!migrate[v])
            return rb_fail(err, errlen, "%s: schema version %lld cannot be upgraded by this routebench", s->path, v);
        char sql[64];
        if (exec(s, "BEGIN IMMEDIATE", "upgrading the schema", err, errlen)) return -1;
        snprintf(sql, sizeof sql, "PRAGMA user_version=%lld", v + 1);
        if (migrate[v](s, err, errlen) || exec(s, sql, "upgrading the schema", err, errlen) ||
            exec(s, "COMMIT", "upgrading the schema", err, errlen)) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

/* 1 when table (in schema, e.g. "main") has column col. */
static int has_column(rb_store *s, const char *schema, const char *table, const char *col) {
    char *q = sqlite3_mprintf("SELECT 1 FROM pragma_table_info(%Q, %Q) WHERE name = %Q", table, schema, col);
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) == SQLITE_OK) {
        found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    sqlite3_free(q);
    return found;
}

/* Columns added to schema 2 after it was first written (NULL in the rows
 * already there): the measurement's noise mark, the sgemm ceiling measured
 * at the end of a run, the --set overrides of a run. */
static const struct {
    const char *table, *col, *type;
} late_cols[] = {
    {"trials", "noisy", "INTEGER"}, {"trials", "noise", "TEXT"},
    {"experiments", "sgemm_after", "REAL"}, {"experiments", "overrides", "TEXT"},
};

/* A parameter added to params.def since the database was made gets its
 * column (NULL in the rows already there); so do late_cols. */
static int ensure_columns(rb_store *s, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof late_cols / sizeof late_cols[0]; i++) {
        if (has_column(s, "main", late_cols[i].table, late_cols[i].col)) continue;
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", late_cols[i].table, late_cols[i].col,
                 late_cols[i].type);
        if (exec(s, sql, "adding a column", err, errlen)) return -1;
    }
    for (int i = 0; i < store_ncols(); i++) {
        const rb_param *d = store_col(i);
        if (has_column(s, "main", "trials", d->name)) continue;
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE trials ADD COLUMN \"%s\" %s", d->name, col_sqltype(d));
        if (exec(s, sql, "adding a parameter column", err, errlen)) return -1;
    }
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

/* 1 -> 2: every trial's parameter JSON in params.def order and spelling,
 * its key re-hashed (util/hash.h), so resumed sweeps find their trials. */
static int migrate_v1(rb_store *s, char *err, size_t errlen) {
    sqlite3_stmt *sel, *up;
    /* `routebench analyze --db` trials hash their own way (no experiment file): left alone */
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT t.id, t.params FROM trials t JOIN experiments e ON e.id = t.experiment_id "
                                "WHERE e.yaml NOT LIKE '# routebench analyze%'",
                                -1, &sel, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "upgrading the schema", err, errlen);
    rc = sqlite3_prepare_v2(s->db, "UPDATE trials SET params=?, key=? WHERE id=?", -1, &up, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(sel);
        return db_fail(s, rc, "upgrading the schema", err, errlen);
    }
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        const char *json = (const char *)sqlite3_column_text(sel, 1);
        char canon[8192], key[17];
        if (!json || store_rekey_json(json, canon, sizeof canon) != 0 || strcmp(canon, json) == 0) continue;
        rb_key_hex(key, canon);
        sqlite3_reset(up);
        bind_text(up, 1, canon);
        bind_text(up, 2, key);
        sqlite3_bind_int64(up, 3, sqlite3_column_int64(sel, 0));
        if (sqlite3_step(up) != SQLITE_DONE) break;
    }
    int ok = rc == SQLITE_DONE;
    if (!ok) db_fail(s, rc == SQLITE_ROW ? sqlite3_errcode(s->db) : rc, "upgrading the schema", err, errlen);
    sqlite3_finalize(sel);
    sqlite3_finalize(up);
    return ok ? 0 : -1;
}

static int check_schema(rb_store *s, int writable, char *err, size_t errlen) {
    long long ver, ntables;
    if (query_int(s, "PRAGMA user_version", &ver, err, errlen)) return -1;
    if (query_int(s, "SELECT count(*) FROM sqlite_master", &ntables, err, errlen)) return -1;
    if (ver == 0 && ntables == 0) {
        if (!writable) return rb_fail(err, errlen, "%s: empty database (no routebench results in it)", s->path);
        return create_schema(s, err, errlen);
    }
    if (ver == 0)
        return rb_fail(err, errlen,
                       "%s: an SQLite database, but not one routebench wrote (no schema version); use another --db",
                       s->path);
    if (ver > STORE_SCHEMA_VERSION)
        return rb_fail(err, errlen,
                       "%s: written by a newer routebench (schema version %lld; this one reads up to %d); use a "
                       "newer routebench or another --db",
                       s->path, ver, STORE_SCHEMA_VERSION);
    if (ver < STORE_SCHEMA_VERSION) {
        if (!writable)
            return rb_fail(err, errlen, "%s: schema version %lld is older than %d; run `routebench run` on it once to upgrade",
                           s->path, ver, STORE_SCHEMA_VERSION);
        if (upgrade(s, ver, err, errlen)) return -1;
    }
    if (writable && ensure_columns(s, err, errlen)) return -1;
    /* a cheap integrity probe: damage in the pages we will touch shows up here */
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "checking", err, errlen);
    rc = sqlite3_step(st);
    int okdb = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    char first[200] = "";
    if (rc == SQLITE_ROW && !okdb) snprintf(first, sizeof first, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return db_fail(s, rc, "checking", err, errlen);
    if (!okdb) return rb_fail(err, errlen, "%s: the database is damaged (%s); restore it or use another --db", s->path, first);
    return 0;
}

int store_sqlite_open_read(const char *path, sqlite3 **db, char *err, size_t errlen) {
    char dir[4096];
    *db = NULL;
    if (access(path, R_OK) != 0) return rb_fail(err, errlen, "%s: cannot read the database: %s", path, strerror(errno));
    rb_dirname(dir, sizeof dir, path);
    int rc;
    if (access(dir, W_OK | X_OK) == 0 && access(path, W_OK) == 0) {
        /* read-write but query-only: closing the last connection then
         * removes the -wal and -shm files a read-only one would leave */
        rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE, NULL);
        if (rc == SQLITE_OK) sqlite3_exec(*db, "PRAGMA query_only=1", NULL, NULL, NULL);
    } else {
        /* nothing here may be written, not even the -shm file WAL mode wants:
         * immutable (nobody can be writing to it from here either) */
        char uri[9000];
        size_t o = (size_t)snprintf(uri, sizeof uri, "file:");
        for (const char *c = path; *c && o + 4 < sizeof uri; c++) {
            if (*c == '%' || *c == '?' || *c == '#') o += (size_t)snprintf(uri + o, sizeof uri - o, "%%%02x", *c);
            else uri[o++] = *c;
        }
        snprintf(uri + o, sizeof uri - o, "?immutable=1");
        rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    }
    if (rc == SQLITE_OK) return 0;
    rb_fail(err, errlen, "%s: cannot open the database: %s", path, *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
    sqlite3_close(*db), *db = NULL;
    return -1;
}

/* Why a database cannot be created at path, before SQLite says only
 * "unable to open database file". 0 when nothing is in the way. */
static int creatable(const char *path, char *err, size_t errlen) {
    char dir[4096];
    if (access(path, F_OK) == 0) return 0;
    rb_dirname(dir, sizeof dir, path);
    if (!rb_is_dir(dir)) return rb_fail(err, errlen, "%s: the directory %s does not exist", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return rb_fail(err, errlen, "%s: the directory %s is not writable (%s)", path, dir, strerror(errno));
    return 0;
}

static int open_impl(rb_store **out, const char *path, int flags, int writable, char *err, size_t errlen) {
    *out = NULL;
    if (check_magic(path, err, errlen)) return -1;
    if ((flags & SQLITE_OPEN_CREATE) && creatable(path, err, errlen)) return -1;
    rb_store *s = callocCheck(1, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    int rc = writable ? sqlite3_open_v2(path, &s->db, flags, NULL) : store_sqlite_open_read(path, &s->db, err, errlen);
    if (rc != SQLITE_OK && !writable) {
        free(s);
        return -1;
    }
    if (rc != SQLITE_OK) {
        int e = errno;
        rb_fail(err, errlen, "%s: cannot open the database: %s%s%s%s; check that the directory exists and is writable",
                path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), e ? " (" : "", e ? strerror(e) : "",
                e ? ")" : "");
        sqlite3_close(s->db);
        free(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000); /* a trial commit is small: 5 s of waiting means a stuck writer */
    sqlite3_extended_result_codes(s->db, 1);
    if (writable) {
        /* journal_mode answers with a row; WAL lets readers and shards share the file */
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            sqlite3_finalize(st);
            if (rc == SQLITE_ROW) rc = SQLITE_OK;
        }
        if (rc != SQLITE_OK) {
            db_fail(s, rc, "opening", err, errlen);
            store_close(s);
            return -1;
        }
        exec(s, "PRAGMA synchronous=NORMAL", "opening", NULL, 0);
    }
    if (check_schema(s, writable, err, errlen)) {
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

int store_open(rb_store **out, const char *path, int create, char *err, size_t errlen) {
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (!create && access(path, F_OK) != 0) return rb_fail(err, errlen, "%s: no such database", path);
    return open_impl(out, path, flags, 1, err, errlen);
}

int store_open_readonly(rb_store **out, const char *path, char *err, size_t errlen) {
    if (access(path, F_OK) != 0) return rb_fail(err, errlen, "%s: no such database: %s", path, strerror(errno));
    return open_impl(out, path, 0, 0, err, errlen);
}

void store_close(rb_store *s) {
    if (!s) return;
    sqlite3_close(s->db);
    free(s);
}

static int query_text(rb_store *s, const char *sql, char *out, size_t len, char *err, size_t errlen) {
    sqlite3_stmt *st;
    out[0] = 0;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading", err, errlen);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(s, rc, "reading", err, errlen);
    return 0;
}

int store_experiment_name(rb_store *s, char *name, size_t len, char *err, size_t errlen) {
    return query_text(s, "SELECT name FROM experiments ORDER BY id LIMIT 1", name, len, err, errlen);
}

int store_latest_overrides(rb_store *s, char *out, size_t len, int *runs, char *err, size_t errlen) {
    long long n;
    if (query_int(s, "SELECT count(*) FROM experiments", &n, err, errlen)) return -1;
    *runs = (int)n;
    return query_text(s, "SELECT coalesce(overrides, '') FROM experiments ORDER BY id DESC LIMIT 1", out, len, err,
                      errlen);
}

int store_latest_hash(rb_store *s, char *hash, size_t len, char *err, size_t errlen) {
    return query_text(s, "SELECT yaml_hash FROM experiments ORDER BY id DESC LIMIT 1", hash, len, err, errlen);
}

static void bind_real(sqlite3_stmt *st, int i, double v) {
    if (isfinite(v)) sqlite3_bind_double(st, i, v);
    else sqlite3_bind_null(st, i);
}

int store_begin_experiment(rb_store *s, const store_experiment *x, int64_t *id, char *err, size_t errlen) {
    sqlite3_stmt *st;
    char now[32];
    store_now(now, sizeof now);
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO experiments(name, description, kind, bench, yaml, yaml_hash, path, "
                                "git_commit, host, cpu, blas, threads, sgemm_gflops, shard, filter, argv, started_at, "
                                "status, uid, overrides) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'running',?,?)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "recording the run", err, errlen);
    const char *t[] = {x->name, x->description, x->kind, x->bench, x->yaml, x->yaml_hash, x->path,
                       x->git_commit, x->host, x->cpu, x->blas};
    for (int i = 0; i < 11; i++) bind_text(st, i + 1, t[i]);
    sqlite3_bind_int(st, 12, x->threads);
    bind_real(st, 13, x->sgemm_gflops > 0 ? x->sgemm_gflops : NAN);
    bind_text(st, 14, x->shard);
    bind_text(st, 15, x->filter);
    bind_text(st, 16, x->argv);
    bind_text(st, 17, now);
    /* identifies this run across merged databases */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char uid[256];
    snprintf(uid, sizeof uid, "%.100s-%ld-%lld.%09ld", x->host ? x->host : "?", (long)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec);
    bind_text(st, 18, uid);
    bind_text(st, 19, x->overrides && *x->overrides ? x->overrides : NULL);
    if (step_done(s, st, "recording the run", err, errlen)) return -1;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_end_experiment(rb_store *s, int64_t id, const char *status, char *err, size_t errlen) {
    sqlite3_stmt *st;
    char now[32];
    store_now(now, sizeof now);
    int rc = sqlite3_prepare_v2(s->db, "UPDATE experiments SET ended_at=?, status=? WHERE id=?", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "recording the end of the run", err, errlen);
    bind_text(st, 1, now);
    bind_text(st, 2, status);
    sqlite3_bind_int64(st, 3, id);
    if (step_done(s, st, "recording the end of the run", err, errlen)) return -1;
    return 0;
}

int store_set_sgemm_after(rb_store *s, int64_t id, double gflops, char *err, size_t errlen) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "UPDATE experiments SET sgemm_after=? WHERE id=?", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "recording the sgemm ceiling after the run", err, errlen);
    bind_real(st, 1, gflops > 0 ? gflops : NAN);
    sqlite3_bind_int64(st, 2, id);
    if (step_done(s, st, "recording the sgemm ceiling after the run", err, errlen)) return -1;
    return 0;
}

/* A parameter column's value, given as text in the trial-key form. */
static void bind_col(sqlite3_stmt *st, int i, const rb_param *d, const char *v) {
    if (!v) sqlite3_bind_null(st, i);
    else if (strcmp(col_sqltype(d), "INTEGER") == 0) sqlite3_bind_int64(st, i, strtoll(v, NULL, 10));
    else if (strcmp(col_sqltype(d), "REAL") == 0) bind_real(st, i, strtod(v, NULL));
    else sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static sqlite3_stmt *prepare_insert(rb_store *s, char *err, size_t errlen) {
    char sql[4096];
    int nc = store_ncols();
    size_t off = (size_t)snprintf(sql, sizeof sql,
                                  "INSERT OR IGNORE INTO trials(experiment_id, key, seed, name, idx, kind, bench, "
                                  "backend, params, status");
    for (int i = 0; i < nc; i++) off += (size_t)snprintf(sql + off, sizeof sql - off, ", \"%s\"", store_col(i)->name);
    off += (size_t)snprintf(sql + off, sizeof sql - off, ") VALUES (?,?,?,?,?,?,?,?,?,'pending'");
    for (int i = 0; i < nc; i++) off += (size_t)snprintf(sql + off, sizeof sql - off, ",?");
    snprintf(sql + off, sizeof sql - off, ")");
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "registering trials", err, errlen), NULL;
    return st;
}

int store_register_trials(rb_store *s, const store_trial *t, int n, int64_t exp_id, char *err, size_t errlen) {
    if (exec(s, "BEGIN IMMEDIATE", "registering trials", err, errlen)) return -1;
    sqlite3_stmt *st = prepare_insert(s, err, errlen);
    int rc = st ? SQLITE_OK : SQLITE_ERROR;
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        const store_trial *x = &t[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, exp_id);
        bind_text(st, 2, x->key);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)x->seed);
        bind_text(st, 4, x->name);
        sqlite3_bind_int(st, 5, x->idx);
        bind_text(st, 6, x->kind);
        bind_text(st, 7, x->bench);
        bind_text(st, 8, x->backend);
        bind_text(st, 9, x->params_json);
        for (int c = 0; c < store_ncols(); c++) bind_col(st, 10 + c, store_col(c), x->colv[c]);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
        if (rc != SQLITE_OK) db_fail(s, rc, "registering trials", err, errlen);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK || exec(s, "COMMIT", "registering trials", err, errlen)) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

int store_trial_status(rb_store *s, const char *key, uint64_t seed, char *status, size_t slen, int64_t *id,
                       char *runner, size_t rlen, char *err, size_t errlen) {
    sqlite3_stmt *st;
    status[0] = 0;
    if (runner && rlen) runner[0] = 0;
    *id = 0;
    int rc = sqlite3_prepare_v2(s->db, "SELECT status, id, runner FROM trials WHERE key=? AND seed=?", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading trials", err, errlen);
    bind_text(st, 1, key);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)seed);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(status, slen, "%s", (const char *)sqlite3_column_text(st, 0));
        *id = sqlite3_column_int64(st, 1);
        if (runner && rlen && sqlite3_column_text(st, 2))
            snprintf(runner, rlen, "%s", (const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(s, rc, "reading trials", err, errlen);
    return 0;
}

/* 1 unless the process pid of host rhost is known to be gone: only a process
 * of this host can be checked (kill 0); one of another host counts as gone
 * (databases are not shared between hosts: shards are, after the fact). */
static int process_alive(const char *host, const char *rhost, size_t rhlen, long pid) {
    if (strlen(host) != rhlen || strncmp(host, rhost, rhlen) != 0) return 0;
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Runs (experiments rows) left `running` by a process that is gone: their
 * uid is host-pid-seconds.nanoseconds. */
static int reset_stale_runs(rb_store *s, const char *host, char *err, size_t errlen) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "SELECT id, uid FROM experiments WHERE status='running'", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading runs", err, errlen);
    int64_t ids[1024];
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 1024) {
        const char *uid = (const char *)sqlite3_column_text(st, 1);
        const char *t = uid ? strrchr(uid, '-') : NULL, *p = t;
        while (p && p > uid && p[-1] != '-') p--;
        if (!t || !p || p == uid) continue; /* not ours to judge */
        if (!process_alive(host, uid, (size_t)(p - 1 - uid), strtol(p, NULL, 10))) ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_fail(s, rc, "reading runs", err, errlen);
    for (int i = 0; i < n; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "UPDATE experiments SET status='interrupted' WHERE id=%lld AND status='running'",
                 (long long)ids[i]);
        if (exec(s, sql, "updating runs", err, errlen)) return -1;
    }
    return 0;
}

int store_reset_stale(rb_store *s, const char *host, char *err, size_t errlen) {
    if (reset_stale_runs(s, host, err, errlen) != 0) return -1;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "SELECT id, runner FROM trials WHERE status='running'", -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "reading trials", err, errlen);
    int64_t ids[1024];
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 1024) {
        const char *r = (const char *)sqlite3_column_text(st, 1), *colon = r ? strrchr(r, ':') : NULL;
        /* a runner host:pid whose process still exists is left alone */
        if (!colon || !process_alive(host, r, (size_t)(colon - r), strtol(colon + 1, NULL, 10)))
            ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_fail(s, rc, "reading trials", err, errlen);
    for (int i = 0; i < n; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "UPDATE trials SET status='interrupted', error='the process running it ended without finishing "
                 "(killed?)' WHERE id=%lld AND status='running'",
                 (long long)ids[i]);
        if (exec(s, sql, "updating trials", err, errlen)) return -1;
    }
    return n;
}

int store_redo(rb_store *s, int64_t id, int only_noisy, char *err, size_t errlen) {
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE trials SET status='pending' WHERE id=%lld AND status='done'%s", (long long)id,
             only_noisy ? " AND noisy=1" : "");
    if (exec(s, sql, "updating trials", err, errlen)) return -1;
    return sqlite3_changes(s->db) == 1;
}

static int claim(rb_store *s, int64_t id, int64_t exp_id, const char *runner, const char *unless, char *err,
                 size_t errlen) {
    sqlite3_stmt *st;
    char now[32], sqlbuf[512];
    store_now(now, sizeof now);
    snprintf(sqlbuf, sizeof sqlbuf,
             "UPDATE trials SET status='running', runner=?, started_at=?, ended_at=NULL, "
             "error=NULL, seconds=NULL, attempts=attempts+1, experiment_id=? "
             "WHERE id=? AND status NOT IN (%s)",
             unless);
    int rc = sqlite3_prepare_v2(s->db, sqlbuf, -1, &st, NULL);
    if (rc != SQLITE_OK) return db_fail(s, rc, "starting a trial", err, errlen);
    bind_text(st, 1, runner);
    bind_text(st, 2, now);
    sqlite3_bind_int64(st, 3, exp_id);
    sqlite3_bind_int64(st, 4, id);
    if (step_done(s, st, "starting a trial", err, errlen)) return -1;
    return sqlite3_changes(s->db) == 1 ? 0 : 1;
}

int store_claim_trial(rb_store *s, int64_t id, int64_t exp_id, const char *runner, char *err, size_t errlen) {
    return claim(s, id, exp_id, runner, "'done','unsupported'", err, errlen) < 0 ? -1 : 0;
}

int store_try_claim_trial(rb_store *s, int64_t id, int64_t exp_id, const char *runner, char *err, size_t errlen) {
    /* the check and the claim are one statement: of two processes sharing a
     * database, only one gets the trial */
    return claim(s, id, exp_id, runner, "'done','unsupported','running'", err, errlen);
}

int store_finish_trial_noise(rb_store *s, int64_t id, const char *status, const char *error, const store_metric *m,
                             int n, int noisy, const char *noise, char *err, size_t errlen) {
    if (exec(s, "BEGIN IMMEDIATE", "recording a trial", err, errlen)) return -1;
    sqlite3_stmt *del = NULL, *ins = NULL, *up = NULL;
    char now[32];
    store_now(now, sizeof now);
    int rc = sqlite3_prepare_v2(s->db, "DELETE FROM metrics WHERE trial_id=?", -1, &del, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(s->db, "INSERT INTO metrics(trial_id, step, name, value) VALUES (?,?,?,?)", -1, &ins, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "UPDATE trials SET status=?, error=?, ended_at=?, "
                                "seconds=(julianday(?) - julianday(started_at)) * 86400.0, noisy=?, noise=? WHERE id=?",
                                -1, &up, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(del, 1, id);
        rc = sqlite3_step(del) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, id);
        if (m[i].step < 0) sqlite3_bind_null(ins, 2);
        else sqlite3_bind_int(ins, 2, m[i].step);
        bind_text(ins, 3, m[i].name);
        bind_real(ins, 4, m[i].value);
        rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    if (rc == SQLITE_OK) {
        bind_text(up, 1, status);
        bind_text(up, 2, error);
        bind_text(up, 3, now);
        bind_text(up, 4, now);
        if (noisy < 0) sqlite3_bind_null(up, 5);
        else sqlite3_bind_int(up, 5, noisy != 0);
        bind_text(up, 6, noisy > 0 ? noise : NULL);
        sqlite3_bind_int64(up, 7, id);
        rc = sqlite3_step(up) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    if (rc != SQLITE_OK) db_fail(s, rc, "recording a trial", err, errlen);
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    sqlite3_finalize(up);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (exec(s, "COMMIT", "recording a trial", err, errlen)) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

int store_finish_trial(rb_store *s, int64_t id, const char *status, const char *error, const store_metric *m, int n,
                       char *err, size_t errlen) {
    return store_finish_trial_noise(s, id, status, error, m, n, -1, NULL, err, errlen);
}

/* ------------------------------------------------------------------ */
/* merge                                                               */

static int status_rank(const char *st) {
    if (!st) return 0;
    if (!strcmp(st, ST_DONE)) return 5;
    if (!strcmp(st, ST_UNSUPPORTED)) return 4;
    if (!strcmp(st, ST_FAILED)) return 3;
    if (!strcmp(st, ST_INTERRUPTED)) return 2;
    return 1;
}

/* The columns of table (all but id and experiment_id) that both main and
 * src have: an input made before a column was added lacks it. */
static void shared_cols(rb_store *o, const char *table, char *out, size_t len) {
    sqlite3_stmt *st;
    size_t off = 0;
    out[0] = 0;
    char *q = sqlite3_mprintf("SELECT name FROM pragma_table_info(%Q, 'src')", table);
    int rc = sqlite3_prepare_v2(o->db, q, -1, &st, NULL);
    sqlite3_free(q);
    if (rc != SQLITE_OK) return;
    while (sqlite3_step(st) == SQLITE_ROW && off < len) {
        const char *c = (const char *)sqlite3_column_text(st, 0);
        if (!c || !strcmp(c, "id") || !strcmp(c, "experiment_id") || !has_column(o, "main", table, c)) continue;
        off += (size_t)snprintf(out + off, len - off, "%s\"%s\"", off ? ", " : "", c);
    }
    sqlite3_finalize(st);
}

static int merge_one(rb_store *o, const char *in, int *copied, int *kept, char *err, size_t errlen) {
    char sql[4096], trial_cols[4096];
    char *q = sqlite3_mprintf("ATTACH DATABASE %Q AS src", in);
    int rc = exec(o, q, "attaching an input", err, errlen);
    sqlite3_free(q);
    if (rc) return -1;
    char exp_cols[1024];
    shared_cols(o, "trials", trial_cols, sizeof trial_cols);
    shared_cols(o, "experiments", exp_cols, sizeof exp_cols);
    if (exec(o, "BEGIN IMMEDIATE", "merging", err, errlen)) goto detach;
    /* runs: each experiments row once (same start, host, shard and hash) */
    snprintf(sql, sizeof sql,
             "INSERT INTO main.experiments(%s) SELECT %s FROM src.experiments s WHERE NOT EXISTS ("
             "SELECT 1 FROM main.experiments m WHERE m.uid = s.uid)",
             exp_cols, exp_cols);
    if (exec(o, sql, "merging runs", err, errlen)) goto rollback;
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(o->db,
                            "SELECT s.id, s.status, m.id, m.status, "
                            "(SELECT e.id FROM main.experiments e JOIN src.experiments x ON e.uid = x.uid "
                            " WHERE x.id = s.experiment_id) "
                            "FROM src.trials s LEFT JOIN main.trials m ON m.key = s.key AND m.seed = s.seed",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        db_fail(o, rc, "merging trials", err, errlen);
        goto rollback;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        long long sid = sqlite3_column_int64(st, 0);
        const char *sst = (const char *)sqlite3_column_text(st, 1);
        int have = sqlite3_column_type(st, 2) != SQLITE_NULL;
        long long mid = sqlite3_column_int64(st, 2);
        const char *mst = (const char *)sqlite3_column_text(st, 3);
        long long eid = sqlite3_column_int64(st, 4);
        if (have && status_rank(mst) >= status_rank(sst)) {
            (*kept)++;
            continue;
        }
        char s2[10240];
        int bad = 0;
        if (have) {
            snprintf(s2, sizeof s2, "DELETE FROM main.metrics WHERE trial_id=%lld; DELETE FROM main.trials WHERE id=%lld;",
                     mid, mid);
            bad = exec(o, s2, "merging trials", err, errlen);
        }
        if (!bad) {
            snprintf(s2, sizeof s2, "INSERT INTO main.trials(experiment_id, %s) SELECT %lld, %s FROM src.trials WHERE id=%lld",
                     trial_cols, eid, trial_cols, sid);
            bad = exec(o, s2, "merging trials", err, errlen);
        }
        if (!bad) {
            long long nid = sqlite3_last_insert_rowid(o->db);
            snprintf(s2, sizeof s2,
                     "INSERT INTO main.metrics(trial_id, step, name, value) SELECT %lld, step, name, value FROM "
                     "src.metrics WHERE trial_id=%lld ORDER BY rowid",
                     nid, sid);
            bad = exec(o, s2, "merging metrics", err, errlen);
        }
        if (bad) {
            sqlite3_finalize(st);
            goto rollback;
        }
        (*copied)++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        db_fail(o, rc, "merging trials", err, errlen);
        goto rollback;
    }
    if (exec(o, "COMMIT", "merging", err, errlen)) goto rollback;
    return exec(o, "DETACH DATABASE src", "detaching an input", err, errlen);
rollback:
    sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
detach:
    sqlite3_exec(o->db, "DETACH DATABASE src", NULL, NULL, NULL);
    return -1;
}

int store_merge(const char *out, const char *const *in, int nin, int *copied, int *kept, char *err, size_t errlen) {
    *copied = *kept = 0;
    char name0[128] = "", hash0[32] = "";
    /* every input first: same experiment, readable; nothing is written before */
    for (int i = 0; i < nin; i++) {
        rb_store *s;
        if (store_open_readonly(&s, in[i], err, errlen)) return -1;
        char name[128], hash[32];
        int r = store_experiment_name(s, name, sizeof name, err, errlen) ||
                store_latest_hash(s, hash, sizeof hash, err, errlen);
        store_close(s);
        if (r) return -1;
        if (!name[0]) return rb_fail(err, errlen, "%s: holds no experiment run", in[i]);
        if (i == 0) {
            snprintf(name0, sizeof name0, "%s", name);
            snprintf(hash0, sizeof hash0, "%s", hash);
        } else if (strcmp(name, name0) || strcmp(hash, hash0)) {
            return rb_fail(err, errlen,
                           "%s: holds experiment '%s' (YAML hash %s) but %s holds '%s' (YAML hash %s); only shards "
                           "of the same experiment file can be merged",
                           in[i], name, hash, in[0], name0, hash0);
        }
        if (strcmp(in[i], out) == 0) return rb_fail(err, errlen, "%s: is both the output and an input", out);
    }
    rb_store *o;
    if (store_open(&o, out, 1, err, errlen)) return -1;
    char name[128], hash[32];
    if (store_experiment_name(o, name, sizeof name, err, errlen) || store_latest_hash(o, hash, sizeof hash, err, errlen)) {
        store_close(o);
        return -1;
    }
    if (name[0] && (strcmp(name, name0) || strcmp(hash, hash0))) {
        store_close(o);
        return rb_fail(err, errlen,
                       "%s: already holds experiment '%s' (YAML hash %s); %s holds '%s' (YAML hash %s); only shards of "
                       "the same experiment file can be merged",
                       out, name, hash, in[0], name0, hash0);
    }
    for (int i = 0; i < nin; i++)
        if (merge_one(o, in[i], copied, kept, err, errlen)) {
            store_close(o);
            return -1;
        }
    store_close(o);
    return 0;
}
