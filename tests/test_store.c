/* test_store.c: the SQLite results store. Schema and version on creation,
 * idempotent registration, a trial's rows committing all-or-nothing (a
 * failure forced by a trigger in the middle of the metrics leaves neither
 * metrics nor a new status), stale `running` rows of dead processes, files
 * that are not SQLite / not routebench / of a newer schema refused without
 * being changed, and merge (done wins, mismatched experiments refused). The
 * database is inspected with plain SQL, independently of store.c.
 *
 * Then the invariants under re-registration, resume and merge, each on its
 * own: registering again never resets a trial nor touches its metrics; when a
 * trial becomes done its metrics are already there (checked by a trigger
 * that records what the status change saw, and by a process that dies in the
 * middle of its finishing transaction); a retried trial keeps only the last
 * attempt's metrics; merge keeps the best status whatever the input order,
 * is idempotent and keeps each run once. */
#include <signal.h>
#include <sys/wait.h>
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
    ok(tu_q1(p, "PRAGMA user_version") == STORE_SCHEMA_VERSION, "its schema version is now %d", STORE_SCHEMA_VERSION);
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL);
    if (sqlite3_prepare_v2(db, "SELECT key FROM trials", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        snprintf(key, sizeof key, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    ok(e.ntrials == 1 && strcmp(key, e.trials[0].key) == 0,
       "the old trial's key is today's key of the same file (%s, expected %s)", key, e.trials[0].key);
    ok(tu_q1(p, "SELECT count(*) FROM pragma_table_info('trials') WHERE name = 'kmeans_iters'") == 1,
       "a missing parameter column is added");
    ok(tu_q1(p, "SELECT count(*) FROM trials WHERE params LIKE '%commit_beta%'") == 0, "old spellings are renamed");
    exp_free(&e);
}

/* ---- invariants under re-registration, resume and merge ---------------- */

static long long q1f(const char *path, const char *fmt, long long a) {
    char sqlq[512];
    snprintf(sqlq, sizeof sqlq, fmt, a);
    return tu_q1(path, sqlq);
}

/* Register, claim and finish one trial; its id. */
static int64_t put(rb_store *s, int64_t eid, const store_trial *t, const char *status, const store_metric *m, int n) {
    char err[512], st[32];
    int64_t id;
    store_register_trials(s, t, 1, eid, err, sizeof err);
    store_trial_status(s, t->key, t->seed, st, sizeof st, &id, NULL, 0, err, sizeof err);
    if (strcmp(status, ST_PENDING)) {
        store_claim_trial(s, id, eid, "testhost:1", err, sizeof err);
        store_finish_trial(s, id, status, strcmp(status, ST_DONE) ? "boom" : NULL, m, n, err, sizeof err);
    }
    return id;
}

/* A new database dir/name (its path into p) with the experiment xrow("exp",
 * "h1") begun in it, whose id goes into *eid. */
static rb_store *open_exp(char *p, size_t plen, const char *name, int64_t *eid) {
    char err[512];
    snprintf(p, plen, "%s/%s", dir, name);
    rb_store *s;
    store_open(&s, p, 1, err, sizeof err);
    store_experiment x = xrow("exp", "h1");
    store_begin_experiment(s, &x, eid, err, sizeof err);
    return s;
}

/* Registering the same (key, seed) again, from a new run and with other
 * fields, leaves every recorded trial as it was. */
static void test_reregister(void) {
    char p[512], err[512];
    int64_t e1, e2;
    rb_store *s = open_exp(p, sizeof p, "rereg.db", &e1);
    store_experiment x = xrow("exp", "h1");
    store_trial t[4] = {trow("d000", 1, "done-one"), trow("f000", 1, "failed-one"), trow("u000", 1, "unsup-one"),
                        trow("i000", 1, "interrupted-one")};
    store_metric m[3] = {{-1, "fwd_ms", 1.0}, {-1, "bwd_ms", 2.0}, {5, "train_loss", 3.0}};
    int64_t id0 = put(s, e1, &t[0], ST_DONE, m, 3);
    put(s, e1, &t[1], ST_FAILED, NULL, 0);
    put(s, e1, &t[2], ST_UNSUPPORTED, NULL, 0);
    put(s, e1, &t[3], ST_INTERRUPTED, NULL, 0);
    long long ended = q1f(p, "SELECT length(ended_at) FROM trials WHERE id=%lld", id0);
    /* a second run registers them again, renamed and with other columns, plus a new one */
    store_begin_experiment(s, &x, &e2, err, sizeof err);
    store_trial t2[5];
    for (int i = 0; i < 4; i++)
        t2[i] = t[i], t2[i].name = "renamed", tu_col(&t2[i], "seq", "999"), t2[i].params_json = "{\"x\":1}";
    t2[4] = trow("n000", 1, "new-one");
    int rc = store_register_trials(s, t2, 5, e2, err, sizeof err);
    store_close(s);
    ok(rc == 0 && tu_q1(p, "SELECT count(*) FROM trials") == 5,
       "registering 4 recorded trials again and a new one: 5 trials");
    ok(q1f(p, "SELECT count(*) FROM trials WHERE id=%lld AND status='done' AND name='done-one' AND seq=64 "
              "AND params='{}' AND attempts=1",
           id0) == 1 &&
           q1f(p, "SELECT experiment_id FROM trials WHERE id=%lld", id0) == e1 &&
           q1f(p, "SELECT length(ended_at) FROM trials WHERE id=%lld", id0) == ended,
       "the done trial keeps its row: status, name, parameters, run, attempts, end time");
    ok(q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id0) == 3,
       "and its 3 metrics (%lld)", q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id0));
    ok(tu_q1(p, "SELECT count(*) FROM trials WHERE (key='f000' AND status='failed' AND error='boom') OR "
             "(key='u000' AND status='unsupported') OR (key='i000' AND status='interrupted')") == 3 &&
           tu_q1(p, "SELECT count(*) FROM trials WHERE name='renamed'") == 0,
       "failed, unsupported and interrupted trials keep their status and error");
    ok(tu_q1(p, "SELECT count(*) FROM trials WHERE key='n000' AND status='pending' AND experiment_id=2") == 1,
       "the new trial is pending, registered by the second run");
}

/* When a trial's status becomes done, its metrics are already written: a
 * trigger records what the status change could see. */
static void test_status_after_metrics(void) {
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/order.db", dir);
    rb_store *s;
    store_open(&s, p, 1, err, sizeof err);
    sql(p, "CREATE TABLE seen(trial INTEGER, status TEXT, metrics INTEGER);"
           "CREATE TRIGGER watch AFTER UPDATE OF status ON trials BEGIN "
           "INSERT INTO seen VALUES (NEW.id, NEW.status, (SELECT count(*) FROM metrics WHERE trial_id=NEW.id)); END;");
    store_experiment x = xrow("exp", "h1");
    int64_t eid;
    store_begin_experiment(s, &x, &eid, err, sizeof err);
    store_trial t = trow("o000", 1, "ordered");
    store_metric m[4] = {{-1, "a", 1}, {-1, "b", 2}, {1, "c", 3}, {2, "c", 4}};
    int64_t id = put(s, eid, &t, ST_DONE, m, 4);
    store_close(s);
    ok(q1f(p, "SELECT count(*) FROM seen WHERE trial=%lld AND status='done'", id) == 1 &&
           q1f(p, "SELECT metrics FROM seen WHERE trial=%lld AND status='done'", id) == 4,
       "when the status turned done, the trial's 4 metrics were already there (%lld)",
       q1f(p, "SELECT metrics FROM seen WHERE trial=%lld AND status='done'", id));
}

/* A process killed inside store_finish_trial: an SQL function that ends the
 * process at once (registered on every connection of the child through
 * sqlite3_auto_extension) fires from a trigger on the last metric. */
static void rb_die(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)ctx, (void)argc, (void)argv;
    _exit(9);
}
static int add_die(sqlite3 *db, const char **msg, const void *api) {
    (void)msg, (void)api;
    return sqlite3_create_function(db, "rb_die", 0, SQLITE_UTF8, NULL, rb_die, NULL, NULL);
}

static void test_killed_in_finish(void) {
    char p[512], err[512], host_me[64];
    int64_t eid, id;
    rb_store *s = open_exp(p, sizeof p, "killed.db", &eid);
    store_trial t = trow("k000", 1, "killed");
    store_register_trials(s, &t, 1, eid, err, sizeof err);
    char st[32];
    store_trial_status(s, "k000", 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
    store_close(s);
    sql(p, "CREATE TRIGGER die AFTER INSERT ON metrics WHEN NEW.name='last' BEGIN SELECT rb_die(); END;");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3_auto_extension((void (*)(void))add_die);
        char e2[512];
        rb_store *c;
        char me[64];
        snprintf(me, sizeof me, "testhost:%ld", (long)getpid());
        if (store_open(&c, p, 0, e2, sizeof e2) || store_claim_trial(c, id, eid, me, e2, sizeof e2)) _exit(3);
        store_metric m[40];
        for (int i = 0; i < 40; i++) {
            m[i].step = i, m[i].value = i;
            snprintf(m[i].name, sizeof m[i].name, "%s", i == 39 ? "last" : "loss");
        }
        store_finish_trial(c, id, ST_DONE, NULL, m, 40, e2, sizeof e2);
        _exit(4); /* not reached: the trigger ends the process */
    }
    int wst;
    waitpid(pid, &wst, 0);
    sql(p, "DROP TRIGGER die;");
    ok(WIFEXITED(wst) && WEXITSTATUS(wst) == 9, "the child died inside store_finish_trial (exit %d)",
       WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
    ok(q1f(p, "SELECT status='running' FROM trials WHERE id=%lld", id) == 1 &&
           q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id) == 0,
       "after the kill the trial is still running with none of its 39 written metrics");
    /* resume: the dead runner's trial becomes interrupted, is claimed again and finishes */
    store_open(&s, p, 0, err, sizeof err);
    int reset = store_reset_stale(s, "testhost", err, sizeof err);
    store_trial_status(s, "k000", 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
    snprintf(host_me, sizeof host_me, "testhost:%ld", (long)getpid());
    int claimed = store_try_claim_trial(s, id, eid, host_me, err, sizeof err);
    store_metric m2[2] = {{-1, "fwd_ms", 1.0}, {-1, "bwd_ms", 2.0}};
    store_finish_trial(s, id, ST_DONE, NULL, m2, 2, err, sizeof err);
    store_close(s);
    ok(reset == 1 && !strcmp(st, ST_INTERRUPTED) && claimed == 0 &&
           q1f(p, "SELECT count(*) FROM trials WHERE id=%lld AND status='done' AND attempts=2 AND error IS NULL", id) ==
               1 &&
           q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id) == 2,
       "resumed: marked interrupted, claimed again, done with exactly the new attempt's 2 metrics");
}

/* A trial retried keeps only its last attempt's metrics: a failure after a
 * failure that had written some, or an interruption, leaves none. */
static void test_retry_metrics(void) {
    char p[512], err[512], st[32];
    int64_t eid;
    rb_store *s = open_exp(p, sizeof p, "retry.db", &eid);
    store_trial t = trow("r000", 1, "retried");
    store_metric m[2] = {{-1, "partial", 1.0}, {3, "loss", 2.0}};
    int64_t id = put(s, eid, &t, ST_FAILED, m, 2);
    long long first = q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id);
    store_claim_trial(s, id, eid, "testhost:1", err, sizeof err);
    long long during = q1f(p, "SELECT count(*) FROM trials WHERE id=%lld AND status='running' AND error IS NULL", id);
    store_finish_trial(s, id, ST_FAILED, "boom again", NULL, 0, err, sizeof err);
    long long after = q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id);
    store_claim_trial(s, id, eid, "testhost:1", err, sizeof err);
    store_finish_trial(s, id, ST_INTERRUPTED, "interrupted by a signal", NULL, 0, err, sizeof err);
    long long after2 = q1f(p, "SELECT count(*) FROM metrics WHERE trial_id=%lld", id);
    store_trial_status(s, "r000", 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
    store_close(s);
    ok(first == 2 && during == 1 && after == 0 && after2 == 0 && !strcmp(st, ST_INTERRUPTED) &&
           q1f(p, "SELECT attempts FROM trials WHERE id=%lld", id) == 3,
       "a retried trial: its claim clears the error, and finishing failed or interrupted without metrics leaves none "
       "of the earlier attempt's (%lld, %lld, %lld)",
       first, after, after2);
}

/* merge: whatever the order of the inputs, each (key, seed) once with the
 * best status (done > unsupported > failed > interrupted > pending) and
 * exactly its metrics; each run once; merging again changes nothing. */
static void test_merge_invariants(void) {
    const char *const st_a[4] = {ST_DONE, ST_FAILED, ST_PENDING, ST_UNSUPPORTED};
    const char *const st_b[4] = {ST_INTERRUPTED, ST_DONE, ST_FAILED, ST_FAILED};
    char a[512], b[512], err[512];
    snprintf(a, sizeof a, "%s/mi_a.db", dir);
    snprintf(b, sizeof b, "%s/mi_b.db", dir);
    make_db(a, "exp", "h1", 4, st_a);
    make_db(b, "exp", "h1", 4, st_b);
    long long total_metrics = -1;
    for (int order = 0; order < 2; order++) {
        char o[512];
        snprintf(o, sizeof o, "%s/mi_out%d.db", dir, order);
        const char *in[2] = {order ? b : a, order ? a : b};
        int copied, kept;
        int rc = store_merge(o, in, 2, &copied, &kept, err, sizeof err);
        /* k1 done (a), k2 done (b), k3 failed (b), k4 unsupported (a) */
        int best = tu_q1(o, "SELECT count(*) FROM trials WHERE (key='0000000000000001' AND status='done') OR "
                         "(key='0000000000000002' AND status='done') OR (key='0000000000000003' AND status='failed') "
                         "OR (key='0000000000000004' AND status='unsupported')") == 4;
        /* done trials carry make_db's 2 metrics, the others none */
        long long orphans =
            tu_q1(o, "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.status<>'done'");
        long long nm = tu_q1(o, "SELECT count(*) FROM metrics");
        long long dangling = tu_q1(o, "SELECT count(*) FROM metrics WHERE trial_id NOT IN (SELECT id FROM trials)");
        long long bad_exp =
            tu_q1(o, "SELECT count(*) FROM trials WHERE experiment_id NOT IN (SELECT id FROM experiments)");
        ok(rc == 0 && tu_q1(o, "SELECT count(*) FROM trials") == 4 && best && orphans == 0 && nm == 4 &&
               dangling == 0 && bad_exp == 0,
           "merge %s: 4 trials, each with its best status, 4 metrics all of done trials, every trial of a recorded "
           "run",
           order ? "b, a" : "a, b");
        if (order == 0) total_metrics = nm;
        const char *again[1] = {in[1]};
        int rc2 = store_merge(o, again, 1, &copied, &kept, err, sizeof err);
        ok(rc2 == 0 && copied == 0 && tu_q1(o, "SELECT count(*) FROM metrics") == total_metrics &&
               tu_q1(o, "SELECT count(*) FROM experiments") == 2,
           "merging an input again copies nothing (%d) and keeps each run once", copied);
    }
    /* a shard's pending copy never replaces a done one already merged */
    char c[512], o[512];
    snprintf(c, sizeof c, "%s/mi_c.db", dir);
    snprintf(o, sizeof o, "%s/mi_out0.db", dir);
    make_db(c, "exp", "h1", 4, (const char *const[]){ST_PENDING, ST_PENDING, ST_PENDING, ST_PENDING});
    const char *in3[1] = {c};
    int copied, kept;
    store_merge(o, in3, 1, &copied, &kept, err, sizeof err);
    ok(copied == 0 && kept == 4 && tu_q1(o, "SELECT count(*) FROM trials WHERE status='done'") == 2 &&
           tu_q1(o, "SELECT count(*) FROM metrics") == total_metrics,
       "merging a shard of pending copies keeps the recorded trials and their metrics (kept %d)", kept);
}

int main(void) {
    if (tu_tmpdir(dir, sizeof dir, "test_store")) return 1;
    char p[512], err[512];
    rb_store *s;

    /* ---- creation ---- */
    snprintf(p, sizeof p, "%s/a.db", dir);
    ok(store_open(&s, p, 1, err, sizeof err) == 0, "a new database is created");
    store_close(s);
    ok(tu_q1(p, "PRAGMA user_version") == STORE_SCHEMA_VERSION, "schema version in PRAGMA user_version");
    ok(tu_q1(p, "SELECT count(*) FROM sqlite_master WHERE name IN ('experiments','trials','metrics')") == 3,
       "tables experiments, trials, metrics");
    ok(tu_q1(p, "PRAGMA journal_mode") >= 0, "journal mode readable");
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
    ok(tu_q1(p, "SELECT count(*) FROM trials") == 3 &&
           tu_q1(p, "SELECT count(*) FROM trials WHERE status='pending'") == 3,
       "still three trials, all pending");
    ok(tu_q1(p, "SELECT count(*) FROM trials WHERE window IS NULL AND clusters IS NULL AND seq=128") == 1,
       "parameters that do not apply are NULL, the others are columns");
    char st[32], runner[64];
    store_trial_status(s, "aaaa", 2, st, sizeof st, &id, NULL, 0, err, sizeof err);
    ok(!strcmp(st, ST_PENDING) && id > 0, "status of (key, seed) found");
    char me[64];
    snprintf(me, sizeof me, "testhost:%ld", (long)getpid());
    ok(store_try_claim_trial(s, id, eid, me, err, sizeof err) == 0, "a pending trial is claimed");
    ok(store_try_claim_trial(s, id, eid, "otherhost:2", err, sizeof err) == 1,
       "a running trial cannot be claimed again");
    store_metric m[3] = {{-1, "fwd_ms", 1.5}, {3, "train_loss", 2.25}, {-1, "nan_value", 0.0 / 0.0}};
    ok(store_finish_trial(s, id, ST_DONE, NULL, m, 3, err, sizeof err) == 0, "a trial finishes");
    ok(tu_q1(p, "SELECT count(*) FROM metrics WHERE step IS NULL") == 2 &&
           tu_q1(p, "SELECT step FROM metrics WHERE name='train_loss'") == 3,
       "summary metrics have step NULL, curves their step");
    ok(tu_q1(p, "SELECT count(*) FROM metrics WHERE name='nan_value' AND value IS NULL") == 1,
       "a non-finite value is stored as NULL");
    ok(tu_q1(p, "SELECT attempts FROM trials WHERE key='aaaa' AND seed=2") == 1, "attempts counted");
    ok(store_try_claim_trial(s, id, eid, me, err, sizeof err) == 1 &&
           store_claim_trial(s, id, eid, me, err, sizeof err) == 0 &&
           tu_q1(p, "SELECT status='done' FROM trials WHERE key='aaaa' AND seed=2") == 1,
       "a done trial cannot be claimed (claim leaves it done)");

    /* all-or-nothing: a trigger makes the third metric insert fail */
    sql(p,
        "CREATE TRIGGER boom BEFORE INSERT ON metrics WHEN NEW.name='boom' BEGIN SELECT RAISE(ABORT, 'forced'); END;");
    store_trial_status(s, "bbbb", 1, st, sizeof st, &id, NULL, 0, err, sizeof err);
    store_claim_trial(s, id, eid, me, err, sizeof err);
    store_metric mb[3] = {{-1, "fwd_ms", 1.0}, {-1, "bwd_ms", 2.0}, {-1, "boom", 3.0}};
    int rc = store_finish_trial(s, id, ST_DONE, NULL, mb, 3, err, sizeof err);
    ok(rc != 0 && strstr(err, "a.db"), "a failing insert fails the finish, message names the file: %s", err);
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM metrics WHERE trial_id=%lld", (long long)id);
    ok(tu_q1(p, q) == 0, "none of that trial's metrics were written");
    snprintf(q, sizeof q, "SELECT status='running' FROM trials WHERE id=%lld", (long long)id);
    ok(tu_q1(p, q) == 1, "and its status did not become done");
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
    ok(tu_q1(p, "SELECT x FROM mine") == 42 && tu_q1(p, "SELECT count(*) FROM sqlite_master") == 1,
       "and left unchanged");

    snprintf(p, sizeof p, "%s/newer.db", dir);
    make_db(p, "exp", "h1", 1, (const char *const[]){ST_DONE});
    sql(p, "PRAGMA user_version=99;");
    rc = store_open(&s, p, 1, err, sizeof err);
    ok(rc != 0 && strstr(err, "newer routebench") && strstr(err, "99"), "a newer schema is refused with why: %s", err);
    ok(tu_q1(p, "PRAGMA user_version") == 99 && tu_q1(p, "SELECT count(*) FROM metrics") == 2, "and left unchanged");

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
    ok(tu_q1(o, "SELECT count(*) FROM trials") == 3, "one copy of each trial (%lld)",
       tu_q1(o, "SELECT count(*) FROM trials"));
    ok(tu_q1(o, "SELECT count(*) FROM trials WHERE status='done'") == 2, "done wins over failed and interrupted");
    ok(tu_q1(o, "SELECT count(*) FROM metrics") == 4 &&
           tu_q1(o, "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.status='done'") == 4,
       "metrics follow the kept trials");
    ok(tu_q1(o, "SELECT count(*) FROM experiments") == 2, "both runs recorded");
    ok(store_merge(o, in, 2, &copied, &kept, err, sizeof err) == 0 && copied == 0 &&
           tu_q1(o, "SELECT count(*) FROM trials") == 3 && tu_q1(o, "SELECT count(*) FROM experiments") == 2,
       "merging again changes nothing");
    const char *in2[2] = {a, c};
    char o2[512];
    snprintf(o2, sizeof o2, "%s/m_out2.db", dir);
    rc = store_merge(o2, in2, 2, &copied, &kept, err, sizeof err);
    ok(rc != 0 && strstr(err, "another") && access(o2, F_OK) != 0,
       "shards of different experiments are refused, nothing written: %s", err);
    const char *in3[1] = {c};
    long long before = tu_q1(o, "SELECT count(*) FROM metrics");
    rc = store_merge(o, in3, 1, &copied, &kept, err, sizeof err);
    ok(rc != 0 && tu_q1(o, "SELECT count(*) FROM metrics") == before,
       "merging another experiment into an output refused, rows kept: %s", err);

    test_migration(dir);
    test_reregister();
    test_status_after_metrics();
    test_killed_in_finish();
    test_retry_metrics();
    test_merge_invariants();

    tu_rmtree(dir);
    return tap_done();
}
