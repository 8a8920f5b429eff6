/* test_runner.c: the sweep runner's bookkeeping through runner_run with a
 * trial function of this test's (run_options.exec), so nothing is timed or
 * trained: a trial that fails or is interrupted after appending metrics
 * leaves none in the database; a rerun of the same experiment runs exactly
 * the trials not done, leaves the done ones (row, metrics, attempts) as they
 * were, and a third run has nothing to do. With the ceiling probed (a probe
 * of this test's) a trial after which it fell is noisy; --redo runs the
 * selected done trials again. The database is read with plain SQL,
 * independently of store.c. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/experiment.h"
#include "harness/runner.h"
#include "tap.h"
#include "testutil.h"

static char dir[256];

/* What each trial does in the current round, by the trial's sequence length:
 * 'd' done, 'f' failed, 'i' interrupted by SIGINT; all after appending
 * metrics. Calls are recorded. */
static const char *g_plan;
static int g_calls, g_called[8];
static const int seqs[3] = {16, 32, 64};

static int fake_exec(const experiment *e, const exp_trial *t, double sgemm, metric_list *out, run_progress *pr,
                     char *err, size_t errlen) {
    (void)e, (void)sgemm, (void)pr;
    int k = 0;
    while (k < 3 && seqs[k] != t->attn.seq) k++;
    g_called[g_calls++ % 8] = k;
    metric_add(out, -1, "fwd_ms", 1.0 + k);
    metric_add(out, 1, "train_loss", 2.0 + k);
    metric_add(out, 2, "train_loss", 1.5 + k);
    switch (g_plan[k]) {
    case 'f': snprintf(err, errlen, "boom %d", k); return TRIAL_FAILED;
    case 'i': raise(SIGINT); return TRIAL_DONE; /* the runner must see the signal and not record it done */
    default: return TRIAL_DONE;
    }
}

static int run_round(const experiment *e, const char *db, const char *plan, char *err, size_t errlen) {
    g_plan = plan, g_calls = 0;
    runner_reset_stop();
    run_options o;
    memset(&o, 0, sizeof o);
    o.db_path = db, o.threads = 1, o.quiet = 1, o.exec = fake_exec;
    o.in_process = 1; /* the calls are counted in this process (test_isolate.c runs trials in children) */
    int rc = runner_run(e, &o, err, errlen);
    runner_reset_stop();
    return rc;
}

/* The sgemm ceiling as the runner sees it: 200 GFLOP/s at the start (no
 * trial called yet), then after the trial of seq 16, 32, 64: 190, 150 (75%
 * of the start: the host slowed), 170. */
static int g_probes;
static int fake_probe(double *gflops) {
    static const double after[3] = {190, 150, 170};
    g_probes++;
    *gflops = g_calls == 0 ? 200 : after[g_called[(g_calls - 1) % 8]];
    return 0;
}

/* run_round with the ceiling probed (recheck_min_s: run_options) or with
 * --redo of the trials whose name contains redo_filter ("": --redo-noisy). */
static int run_opts(const experiment *e, const char *db, double recheck_min_s, const char *redo_filter, char *err,
                    size_t errlen) {
    g_plan = "ddd", g_calls = 0, g_probes = 0;
    runner_reset_stop();
    run_options o;
    memset(&o, 0, sizeof o);
    o.db_path = db, o.threads = 1, o.quiet = 1, o.exec = fake_exec, o.in_process = 1;
    if (redo_filter && !redo_filter[0]) o.redo_noisy = 1;
    else if (redo_filter) o.redo = 1, o.filter = redo_filter;
    else o.measure_sgemm = 1, o.probe = fake_probe, o.recheck_min_s = recheck_min_s;
    int rc = runner_run(e, &o, err, errlen);
    runner_reset_stop();
    return rc;
}

static long long qk(const char *db, const char *fmt, int seq) {
    char s[512];
    snprintf(s, sizeof s, fmt, seq);
    return tu_q1(db, s);
}

int main(void) {
    if (tu_tmpdir(dir, sizeof dir, "test_runner")) return 1;
    runner_install_signals();
    const char *yaml = "name: runner_test\nparams:\n  heads: 1\n  head_dim: 8\nsweep:\n  backend: [dense]\n"
                       "  seq: [16, 32, 64]\n";
    experiment e;
    if (tu_load_exp(&e, yaml, "runner_test.yaml", 3)) return 1;
    char db[512], err[512];
    snprintf(db, sizeof db, "%s/r.db", dir);

    /* round 1: done, failed, interrupted (the run stops there) */
    int rc = run_round(&e, db, "dfi", err, sizeof err);
    ok(rc == RUN_INTERRUPTED && g_calls == 3, "round 1 ran 3 trials and ended interrupted (rc %d)", rc);
    const char *by_seq = "SELECT count(*) FROM trials t WHERE t.seq=%d AND ";
    char qs[512];
    snprintf(qs, sizeof qs, "%sstatus='done' AND (SELECT count(*) FROM metrics WHERE trial_id=t.id)=3", by_seq);
    ok(qk(db, qs, 16) == 1, "the done trial has its 3 metrics");
    snprintf(qs, sizeof qs,
             "%sstatus='failed' AND error='boom 1' AND (SELECT count(*) FROM metrics WHERE trial_id=t.id)=0", by_seq);
    ok(qk(db, qs, 32) == 1, "the failed trial has its error and none of the 3 metrics it appended");
    snprintf(qs, sizeof qs, "%sstatus='interrupted' AND (SELECT count(*) FROM metrics WHERE trial_id=t.id)=0", by_seq);
    ok(qk(db, qs, 64) == 1, "the trial interrupted by a signal is interrupted, with none of its metrics");
    long long done_id = qk(db, "SELECT id FROM trials WHERE seq=%d", 16);
    long long done_end = qk(db, "SELECT length(ended_at) + 1000 * attempts FROM trials WHERE seq=%d", 16);

    /* round 2: everything succeeds; only the two not done run */
    rc = run_round(&e, db, "ddd", err, sizeof err);
    int ran_right = g_calls == 2 && ((g_called[0] == 1 && g_called[1] == 2) || (g_called[0] == 2 && g_called[1] == 1));
    ok(rc == RUN_OK && ran_right, "round 2 ran exactly the failed and the interrupted trial (%d calls)", g_calls);
    ok(tu_q1(db, "SELECT count(*) FROM trials") == 3 &&
           tu_q1(db, "SELECT count(*) FROM trials WHERE status='done'") == 3,
       "3 trials, all done");
    ok(qk(db, "SELECT id FROM trials WHERE seq=%d", 16) == done_id &&
           qk(db, "SELECT length(ended_at) + 1000 * attempts FROM trials WHERE seq=%d", 16) == done_end &&
           qk(db, "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.seq=%d", 16) == 3,
       "the trial done in round 1 was not reset, rerun or given more metrics");
    ok(tu_q1(db, "SELECT count(*) FROM trials WHERE attempts=2") == 2 &&
           tu_q1(db, "SELECT count(*) FROM (SELECT trial_id FROM metrics GROUP BY trial_id HAVING count(*)=3)") == 3 &&
           tu_q1(db, "SELECT count(*) FROM metrics") == 9,
       "the retried trials ran twice and hold exactly one attempt's metrics each");

    /* round 3: nothing left */
    rc = run_round(&e, db, "fff", err, sizeof err);
    ok(rc == RUN_OK && g_calls == 0 && tu_q1(db, "SELECT count(*) FROM trials WHERE status='done'") == 3 &&
           tu_q1(db, "SELECT count(*) FROM experiments") == 3,
       "round 3 has nothing to run; each run is recorded");

    /* the ceiling measured again after each trial: the one after which it
     * fell below 80% of the start's is noisy, with the reason */
    snprintf(db, sizeof db, "%s/ceiling.db", dir);
    rc = run_opts(&e, db, 1e-9, NULL, err, sizeof err);
    const char *after = "SELECT value FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.seq=%d AND "
                        "m.name='sgemm_after_trial'";
    ok(rc == RUN_OK && g_calls == 3 && qk(db, after, 16) == 190 && qk(db, after, 32) == 150 && qk(db, after, 64) == 170,
       "the ceiling is measured after every trial and kept as sgemm_after_trial (190, 150, 170; rc %d)", rc);
    ok(qk(db, "SELECT count(*) FROM trials WHERE seq=%d AND noisy=1 AND noise LIKE '%%sgemm ceiling after it was 150 "
              "GFLOP/s, 75%% of the 200%%'",
          32) == 1 &&
           qk(db, "SELECT value FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.seq=%d AND m.name='noisy'",
              32) == 1 &&
           tu_q1(db, "SELECT count(*) FROM trials WHERE noisy=1") == 1,
       "the trial after which the ceiling fell to 75%% of the start's is noisy (and says why); the two at 95%% and 85%% "
       "are not");
    snprintf(db, sizeof db, "%s/short.db", dir);
    rc = run_opts(&e, db, 0, NULL, err, sizeof err);
    ok(rc == RUN_OK && g_probes == 2 && tu_q1(db, "SELECT count(*) FROM metrics WHERE name='sgemm_after_trial'") == 0,
       "trials shorter than %.0f s are not followed by a measurement (2 probes: the start and the end, %d)",
       RUN_RECHECK_MIN_S, g_probes);

    /* --redo-noisy: the noisy trial is measured again, the others left;
     * --redo: the selected done trials, noisy or not */
    snprintf(db, sizeof db, "%s/ceiling.db", dir);
    long long others = tu_q1(db, "SELECT sum(length(ended_at)) FROM trials WHERE seq<>32");
    rc = run_opts(&e, db, 0, "", err, sizeof err);
    ok(rc == RUN_OK && g_calls == 1 && g_called[0] == 1 && tu_q1(db, "SELECT count(*) FROM trials WHERE attempts=1") == 2,
       "--redo-noisy runs the noisy trial again and only it (%d calls)", g_calls);
    rc = run_opts(&e, db, 0, "n32", err, sizeof err);
    ok(rc == RUN_OK && g_calls == 1 && g_called[0] == 1 && qk(db, "SELECT attempts FROM trials WHERE seq=%d", 32) == 3 &&
           tu_q1(db, "SELECT count(*) FROM trials WHERE attempts=1") == 2 &&
           tu_q1(db, "SELECT sum(length(ended_at)) FROM trials WHERE seq<>32") == others,
       "--redo with --filter n32 runs that trial again, no longer noisy, and only it (%d calls)", g_calls);
    ok(qk(db, "SELECT count(*) FROM trials WHERE seq=%d AND status='done' AND noisy=0", 32) == 1 &&
           qk(db, "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.seq=%d", 32) == 3,
       "the trial measured again replaced its metrics and is no longer noisy");

    exp_free(&e);
    tu_rmtree(dir);
    return tap_done();
}
