/* test_store.c: the SQLite results store. Schema and version on creation,
 * idempotent registration, a trial's rows committing all-or-nothing (a
 * failure forced by a trigger in the middle of the metrics leaves neither
 * metrics nor a new status), stale `running` rows of dead processes, files
 * that are not SQLite / not routebench / of a newer schema refused without
 * being changed, and merge (done wins, mismatched experiments refused). The
 * database is inspected with plain SQL, independently of store.c. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/experiment.h"
#include "store/store.h"
#include "tap.h"
#include "testutil.h"

static char dir[256];

static long long q1(const char *path, const char *sql) {
    sqlite3 *db;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

static int sql(const char *path, const char *s) {
    sqlite3 *db;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, s, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static store_trial trow(const char *key, uint64_t seed, const char *name) {
    store_trial t;
    memset(&t, 0, sizeof t);
    t.key = key, t.seed = seed, t.name = name, t.kind = "bench", t.bench = "attn", t.backend = "dense";
    t.params_json = "{}";
    tu_col(&t, "seq", "64"), tu_col(&t, "heads", "1"), tu_col(&t, "head_dim", "8"), tu_col(&t, "batch", "1");
    tu_col(&t, "causal", "1");
    return t;
}

static store_experiment xrow(const char *name, const char *hash) {
    store_experiment x;
    memset(&x, 0, sizeof x);
    x.name = name, x.kind = "bench", x.yaml = "name: x\n", x.yaml_hash = hash, x.host = "testhost", x.threads = 1;
    return x;
}

/* a database with one run and trials k1..kn (seed 1), statuses given */
static int make_db(const char *path, const char *name, const char *hash, int n, const char *const *status) {
    rb_store *s;
    char err[512];
    if (store_open(&s, path, 1, err, sizeof err)) return diag("%s", err), -1;
    store_experiment x = xrow(name, hash);
    int64_t eid, id;
    store_begin_experiment(s, &x, &eid, err, sizeof err);
    store_trial t[8];
    char keys[8][17], names[8][16];
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "%016d", i + 1);
        snprintf(names[i], sizeof names[i], "dense-n%d", 64 * (i + 1));
        t[i] = trow(keys[i], 1, names[i]);
    }
    store_register_trials(s, t, n, eid, err, sizeof err);
    for (int i = 0; i < n; i++) {
        char st[32];
        store_trial_status(s, keys[i], 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
        if (!strcmp(status[i], ST_PENDING)) continue;
        store_claim_trial(s, id, eid, "testhost:1", err, sizeof err);
        store_metric m[2] = {{-1, "fwd_ms", 1.0 + i}, {-1, "bwd_ms", 2.0 + i}};
        store_finish_trial(s, id, status[i], strcmp(status[i], ST_DONE) ? "boom" : NULL, m,
                           strcmp(status[i], ST_DONE) ? 0 : 2, err, sizeof err);
    }
    store_end_experiment(s, eid, "done", err, sizeof err);
    store_close(s);
    return 0;
}

/* A schema-1 database as routebench wrote it before the parameter table:
 * the old trials columns (no kmeans_iters here, to see a missing column
 * added), a model trial whose JSON has the old order and commit_beta. */
static void make_v1(const char *path, const char *params, const char *key) {
    sqlite3 *db;
    char *sql = sqlite3_mprintf(
        "CREATE TABLE experiments(id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT, kind TEXT, bench TEXT,"
        " yaml TEXT NOT NULL, yaml_hash TEXT NOT NULL, path TEXT, git_commit TEXT, host TEXT, cpu TEXT, blas TEXT,"
        " threads INTEGER, sgemm_gflops REAL, shard TEXT, filter TEXT, argv TEXT, started_at TEXT, ended_at TEXT,"
        " status TEXT, uid TEXT UNIQUE);"
        "CREATE TABLE trials(id INTEGER PRIMARY KEY, experiment_id INTEGER, key TEXT NOT NULL, seed INTEGER NOT NULL,"
        " name TEXT NOT NULL, idx INTEGER, kind TEXT, bench TEXT, backend TEXT, seq INTEGER, heads INTEGER,"
        " head_dim INTEGER, batch INTEGER, causal INTEGER, window INTEGER, clusters INTEGER, local_heads INTEGER,"
        " share_qk INTEGER, assign TEXT, norm TEXT, decay REAL, commit_weight REAL, d_model INTEGER,"
        " layers INTEGER, steps INTEGER, lr REAL, task TEXT, params TEXT NOT NULL, status TEXT NOT NULL,"
        " error TEXT, attempts INTEGER NOT NULL DEFAULT 0, runner TEXT, started_at TEXT, ended_at TEXT,"
        " seconds REAL, UNIQUE(key, seed));"
        "CREATE TABLE metrics(trial_id INTEGER NOT NULL, step INTEGER, name TEXT NOT NULL, value REAL);"
        "INSERT INTO experiments(id, name, yaml, yaml_hash) VALUES (1, 't', 'name: t', 'h');"
        "INSERT INTO trials(experiment_id, key, seed, name, kind, backend, params, status)"
        " VALUES (1, %Q, 1, 'routing-s128', 'train', 'routing', %Q, 'done');"
        "PRAGMA user_version=1;",
        key, params);
    sqlite3_open(path, &db);
    sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    sqlite3_close(db);
}

/* Opening a schema-1 database re-keys its model trials, so the trial an
 * experiment file expands to today is found done (resume works across the
 * upgrade), and adds the parameter columns it lacks. */
static void test_migration(const char *dir) {
    static const char yaml[] = "name: t\nkind: train\nparams: {backend: routing, d_model: 64, layers: 2, heads: 4,"
                               " seq: 128, clusters: 4, commit_beta: 0.001, steps: 10, task: copy}\n";
    experiment e;
    exp_errors errs;
    if (exp_load_string(&e, yaml, strlen(yaml), "t.yaml", &errs) != 0) {
        exp_errors_print(&errs, stderr);
        ok(0, "the experiment loads");
        return;
    }
    char p[512], err[512] = "", key[64] = "";
    snprintf(p, sizeof p, "%s/v1.db", dir);
    make_v1(p, "{\"kind\":\"train\",\"backend\":\"routing\",\"d_model\":64,\"layers\":2,\"heads\":4,\"seq\":128,"
               "\"clusters\":4,\"commit_beta\":0.001,\"steps\":10,\"task\":\"copy\"}",
            "0123456789abcdef");
    rb_store *s;
    ok(store_open(&s, p, 0, err, sizeof err) == 0, "a schema-1 database opens (upgraded): %s", err);
    store_close(s);
    ok(q1(p, "PRAGMA user_version") == STORE_SCHEMA_VERSION, "its schema version is now %d", STORE_SCHEMA_VERSION);
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL);
    if (sqlite3_prepare_v2(db, "SELECT key FROM trials", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        snprintf(key, sizeof key, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    ok(e.ntrials == 1 && strcmp(key, e.trials[0].key) == 0,
       "the old trial's key is today's key of the same file (%s, expected %s)", key, e.trials[0].key);
    ok(q1(p, "SELECT count(*) FROM pragma_table_info('trials') WHERE name = 'kmeans_iters'") == 1,
       "a missing parameter column is added");
    ok(q1(p, "SELECT count(*) FROM trials WHERE params LIKE '%commit_beta%'") == 0, "old spellings are renamed");
    exp_free(&e);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/rb_test_store_XXXXXX");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    char p[512], err[512];
    rb_store *s;

    /* ---- creation ---- */
    snprintf(p, sizeof p, "%s/a.db", dir);
    ok(store_open(&s, p, 1, err, sizeof err) == 0, "a new database is created");
    store_close(s);
    ok(q1(p, "PRAGMA user_version") == STORE_SCHEMA_VERSION, "schema version in PRAGMA user_version");
    ok(q1(p, "SELECT count(*) FROM sqlite_master WHERE name IN ('experiments','trials','metrics')") == 3,
       "tables experiments, trials, metrics");
    ok(q1(p, "PRAGMA journal_mode") >= 0, "journal mode readable");
    {
        sqlite3 *db;
        sqlite3_open(p, &db);
        sqlite3_stmt *st;
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
        sqlite3_step(st);
        ok(strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0, "WAL mode");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }

    /* ---- registration, claim, finish ---- */
    store_open(&s, p, 1, err, sizeof err);
    store_experiment x = xrow("exp", "h1");
    int64_t eid, id;
    ok(store_begin_experiment(s, &x, &eid, err, sizeof err) == 0, "a run is recorded");
    store_trial t[3] = {trow("aaaa", 1, "dense-n64"), trow("aaaa", 2, "dense-n64"), trow("bbbb", 1, "dense-n128")};
    tu_col(&t[2], "seq", "128");
    ok(store_register_trials(s, t, 3, eid, err, sizeof err) == 0, "three trials registered");
    ok(store_register_trials(s, t, 3, eid, err, sizeof err) == 0, "registering again is harmless");
    ok(q1(p, "SELECT count(*) FROM trials") == 3 && q1(p, "SELECT count(*) FROM trials WHERE status='pending'") == 3,
       "still three trials, all pending");
    ok(q1(p, "SELECT count(*) FROM trials WHERE window IS NULL AND clusters IS NULL AND seq=128") == 1,
       "parameters that do not apply are NULL, the others are columns");
    char st[32], runner[64];
    store_trial_status(s, "aaaa", 2, st, sizeof st, &id, NULL, 0, err, sizeof err);
    ok(!strcmp(st, ST_PENDING) && id > 0, "status of (key, seed) found");
    char me[64];
    snprintf(me, sizeof me, "testhost:%ld", (long)getpid());
    ok(store_try_claim_trial(s, id, eid, me, err, sizeof err) == 0, "a pending trial is claimed");
    ok(store_try_claim_trial(s, id, eid, "otherhost:2", err, sizeof err) == 1, "a running trial cannot be claimed again");
    store_metric m[3] = {{-1, "fwd_ms", 1.5}, {3, "train_loss", 2.25}, {-1, "nan_value", 0.0 / 0.0}};
    ok(store_finish_trial(s, id, ST_DONE, NULL, m, 3, err, sizeof err) == 0, "a trial finishes");
    ok(q1(p, "SELECT count(*) FROM metrics WHERE step IS NULL") == 2 && q1(p, "SELECT step FROM metrics WHERE name='train_loss'") == 3,
       "summary metrics have step NULL, curves their step");
    ok(q1(p, "SELECT count(*) FROM metrics WHERE name='nan_value' AND value IS NULL") == 1, "a non-finite value is stored as NULL");
    ok(q1(p, "SELECT attempts FROM trials WHERE key='aaaa' AND seed=2") == 1, "attempts counted");
    ok(store_try_claim_trial(s, id, eid, me, err, sizeof err) == 1 && store_claim_trial(s, id, eid, me, err, sizeof err) == 0 &&
           q1(p, "SELECT status='done' FROM trials WHERE key='aaaa' AND seed=2") == 1,
       "a done trial cannot be claimed (claim leaves it done)");

    /* all-or-nothing: a trigger makes the third metric insert fail */
    sql(p, "CREATE TRIGGER boom BEFORE INSERT ON metrics WHEN NEW.name='boom' BEGIN SELECT RAISE(ABORT, 'forced'); END;");
    store_trial_status(s, "bbbb", 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
    store_claim_trial(s, id, eid, me, err, sizeof err);
    store_metric mb[3] = {{-1, "fwd_ms", 1.0}, {-1, "bwd_ms", 2.0}, {-1, "boom", 3.0}};
    int rc = store_finish_trial(s, id, ST_DONE, NULL, mb, 3, err, sizeof err);
    ok(rc != 0 && strstr(err, "a.db"), "a failing insert fails the finish, message names the file: %s", err);
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM metrics WHERE trial_id=%lld", (long long)id);
    ok(q1(p, q) == 0, "none of that trial's metrics were written");
    snprintf(q, sizeof q, "SELECT status='running' FROM trials WHERE id=%lld", (long long)id);
    ok(q1(p, q) == 1, "and its status did not become done");
    sql(p, "DROP TRIGGER boom;");

    /* stale running rows */
    ok(store_reset_stale(s, "testhost", err, sizeof err) == 0, "a running trial of a live process is left alone");
    sql(p, "UPDATE trials SET runner='testhost:999999999' WHERE status='running'");
    ok(store_reset_stale(s, "testhost", err, sizeof err) == 1, "a running trial of a dead process is reset");
    store_trial_status(s, "bbbb", 1, st, sizeof st, &id, runner, sizeof runner, err, sizeof err);
    ok(!strcmp(st, ST_INTERRUPTED), "it is now interrupted (%s)", st);
    store_close(s);

    /* ---- files that must be refused, and left as they were ---- */
    snprintf(p, sizeof p, "%s/text.db", dir);
    FILE *f = fopen(p, "w");
    fputs("this is not a database, and must survive\n", f);
    fclose(f);
    rc = store_open(&s, p, 1, err, sizeof err);
    ok(rc != 0 && strstr(err, "not an SQLite database") && strstr(err, "text.db"), "a text file is refused: %s", err);
    f = fopen(p, "r");
    char line[128] = "";
    fgets(line, sizeof line, f);
    fclose(f);
    ok(strcmp(line, "this is not a database, and must survive\n") == 0, "and left unchanged");

    snprintf(p, sizeof p, "%s/other.db", dir);
    sql(p, "CREATE TABLE mine(x); INSERT INTO mine VALUES (42);");
    rc = store_open(&s, p, 1, err, sizeof err);
    ok(rc != 0 && strstr(err, "not one routebench wrote"), "an SQLite file of another program is refused: %s", err);
    ok(q1(p, "SELECT x FROM mine") == 42 && q1(p, "SELECT count(*) FROM sqlite_master") == 1, "and left unchanged");

    snprintf(p, sizeof p, "%s/newer.db", dir);
    make_db(p, "exp", "h1", 1, (const char *const[]){ST_DONE});
    sql(p, "PRAGMA user_version=99;");
    rc = store_open(&s, p, 1, err, sizeof err);
    ok(rc != 0 && strstr(err, "newer routebench") && strstr(err, "99"), "a newer schema is refused with why: %s", err);
    ok(q1(p, "PRAGMA user_version") == 99 && q1(p, "SELECT count(*) FROM metrics") == 2, "and left unchanged");

    snprintf(p, sizeof p, "/dev/null/x.db");
    rc = store_open(&s, p, 1, err, sizeof err);
    ok(rc != 0 && strstr(err, "/dev/null/x.db"), "a path under a file cannot be created: %s", err);

    /* ---- merge ---- */
    char a[512], b[512], c[512], o[512];
    snprintf(a, sizeof a, "%s/m_a.db", dir);
    snprintf(b, sizeof b, "%s/m_b.db", dir);
    snprintf(c, sizeof c, "%s/m_c.db", dir);
    snprintf(o, sizeof o, "%s/m_out.db", dir);
    make_db(a, "exp", "h1", 3, (const char *const[]){ST_DONE, ST_FAILED, ST_PENDING});
    make_db(b, "exp", "h1", 3, (const char *const[]){ST_INTERRUPTED, ST_DONE, ST_PENDING});
    make_db(c, "another", "h2", 1, (const char *const[]){ST_DONE});
    const char *in[2] = {a, b};
    int copied, kept;
    ok(store_merge(o, in, 2, &copied, &kept, err, sizeof err) == 0, "two shards merge");
    ok(q1(o, "SELECT count(*) FROM trials") == 3, "one copy of each trial (%lld)", q1(o, "SELECT count(*) FROM trials"));
    ok(q1(o, "SELECT count(*) FROM trials WHERE status='done'") == 2, "done wins over failed and interrupted");
    ok(q1(o, "SELECT count(*) FROM metrics") == 4 &&
           q1(o, "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.status='done'") == 4,
       "metrics follow the kept trials");
    ok(q1(o, "SELECT count(*) FROM experiments") == 2, "both runs recorded");
    ok(store_merge(o, in, 2, &copied, &kept, err, sizeof err) == 0 && copied == 0 &&
           q1(o, "SELECT count(*) FROM trials") == 3 && q1(o, "SELECT count(*) FROM experiments") == 2,
       "merging again changes nothing");
    const char *in2[2] = {a, c};
    char o2[512];
    snprintf(o2, sizeof o2, "%s/m_out2.db", dir);
    rc = store_merge(o2, in2, 2, &copied, &kept, err, sizeof err);
    ok(rc != 0 && strstr(err, "another") && access(o2, F_OK) != 0, "shards of different experiments are refused, nothing written: %s", err);
    const char *in3[1] = {c};
    long long before = q1(o, "SELECT count(*) FROM metrics");
    rc = store_merge(o, in3, 1, &copied, &kept, err, sizeof err);
    ok(rc != 0 && q1(o, "SELECT count(*) FROM metrics") == before, "merging another experiment into an output refused, rows kept: %s", err);

    test_migration(dir);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) diag("could not remove %s", dir);
    return tap_done();
}
