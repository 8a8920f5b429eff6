/* test_isolate.c: trials run each in a child process (runner.h
 * runner_exec_isolated, util/child.h), through runner_run with a trial
 * function of this test's, so what is checked is the runner's isolation and
 * not a backend: a trial after one that allocated 1 GiB records the peak RSS
 * it has when run alone (not what the allocator kept); a trial that
 * segfaults, one that outlives its time limit and one whose allocation fails
 * are recorded failed with the reason, and the trials after them run; a
 * trial function that calls exit() mid-way is a failure too. The database
 * is read with plain SQL. */
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness/experiment.h"
#include "harness/runner.h"
#include "util/common.h"
#include "tap.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer (make sanitize) the faults this test plants must
 * reach the runner as they would without it: a segfault as the signal, an
 * impossible malloc as NULL (mallocCheck's out-of-memory exit). A forked
 * child's peak RSS there also carries shadow memory and quarantine that
 * depend on the parent's history, so the "its own peak" comparison allows
 * more: it still tells a trial's few MiB from the 1 GiB before it. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "handle_segv=0:allocator_may_return_null=1"; }
#define RSS_SLACK_MIB 64
#else
#define RSS_SLACK_MIB 4
#endif

/* n bytes in RSS at once (MAP_POPULATE: page faults one at a time take
 * seconds per GiB on some virtual machines), never given back. */
static char *hold(size_t n) {
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Touch n bytes so they count in RSS. */
static char *touch(size_t n) {
    char *p = mallocCheck(n);
    for (size_t i = 0; i < n; i += 4096) p[i] = (char)i;
    return p;
}

/* What a trial does, by its sequence length (the sweep's order):
 * 16 allocates and touches 1 GiB and keeps it (a leak, as a backend's cache
 * would be); 32 touches 8 MiB and records its peak RSS; 48 segfaults; 64
 * sleeps 60 s (past the 15 s limit: a loaded machine may need seconds for
 * the 1 GiB); 80 asks for an impossible allocation;
 * 96 calls exit(3); 112 records its peak RSS again. */
static int exec(const experiment *e, const exp_trial *t, double sgemm, metric_list *out, run_progress *pr, char *err,
                size_t errlen) {
    (void)e, (void)sgemm, (void)pr, (void)err, (void)errlen;
    static char *volatile keep;
    (void)keep;
    switch (t->attn.seq) {
    case 16: keep = hold((size_t)1 << 30); break;
    case 48: raise(SIGSEGV); break;
    case 64: sleep(60); break;
    case 80: keep = mallocCheck((size_t)1 << 62); break;
    case 96: exit(3);
    default: {
        char *p = touch((size_t)8 << 20);
        metric_add(out, -1, "peak_rss_bytes", (double)rb_peak_rss());
        free(p);
    }
    }
    metric_add(out, -1, "ran", 1);
    return TRIAL_DONE;
}

static int run_limit(const experiment *e, const char *db, const char *filter, int in_process, double limit) {
    char err[512];
    run_options o;
    memset(&o, 0, sizeof o);
    o.db_path = db, o.threads = 1, o.quiet = 1, o.exec = exec, o.filter = filter;
    o.in_process = in_process, o.timeout_s = limit;
    runner_reset_stop();
    int rc = runner_run(e, &o, err, sizeof err);
    if (rc == RUN_BAD_INPUT) diag("%s", err);
    return rc;
}

static int run(const experiment *e, const char *db, const char *filter, int in_process) {
    return run_limit(e, db, filter, in_process, 15);
}

static double peak(const char *db, int seq) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT m.value FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE t.seq = %d AND "
             "m.name = 'peak_rss_bytes'", seq);
    return tu_qd(db, sql) / (1 << 20);
}

static void status_is(const char *db, int seq, const char *status, const char *why, const char *what) {
    char sql[256], st[64], er[512];
    snprintf(sql, sizeof sql, "SELECT status FROM trials WHERE seq = %d", seq);
    tu_qs(db, sql, st, sizeof st);
    snprintf(sql, sizeof sql, "SELECT coalesce(error, '') FROM trials WHERE seq = %d", seq);
    tu_qs(db, sql, er, sizeof er);
    ok(!strcmp(st, status) && strstr(er, why) != NULL, "%s: %s (%s)", what, st, er);
}

int main(void) {
    char dir[256];
    if (tu_tmpdir(dir, sizeof dir, "isolate")) return 1;
    runner_install_signals();
    /* the sleeping trial (seq 64) has its own head_dim: the trials after it
     * are other configurations, so the runner runs them (a longer length of
     * the configuration that went over the limit would not be: below) */
    const char *yaml = "name: isolate_test\nparams:\n  heads: 1\n  backend: dense\n"
                       "sweep:\n  zip:\n    seq: [16, 32, 48, 64, 80, 96, 112]\n"
                       "    head_dim: [8, 8, 8, 16, 8, 8, 8]\n";
    experiment e;
    if (tu_load_exp(&e, yaml, "isolate_test.yaml", 7)) return 1;
    char db[600], alone[600];
    snprintf(db, sizeof db, "%s/all.db", dir);
    snprintf(alone, sizeof alone, "%s/alone.db", dir);

    double t0 = rb_now();
    int rc = run(&e, db, NULL, 0);
    double dt = rb_now() - t0;
    ok(rc == RUN_SOME_FAILED, "the sweep ends with exit status 1 (some trials failed), not in a crash (rc %d)", rc);
    ok(dt < 50, "the sleeping trial was stopped at its limit: the sweep took %.1f s", dt);
    ok(tu_qd(db, "SELECT count(*) FROM trials WHERE status = 'done'") == 3,
       "the 1 GiB trial and both small ones are done");
    status_is(db, 48, "failed", "Segmentation fault", "the segfaulting trial is failed with the signal");
    status_is(db, 64, "failed", "time limit", "the trial past its limit is failed with the limit");
    status_is(db, 80, "failed", "out of memory", "the impossible allocation is failed as out of memory");
    status_is(db, 96, "failed", "status 3", "the trial that called exit(3) is failed with its status");
    ok(tu_qd(db, "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE t.status = 'failed'") == 0,
       "failed trials left no metrics");

    rc = run(&e, alone, "*-n32-*", 0);
    double a = peak(alone, 32), after = peak(db, 32), later = peak(db, 112);
    ok(rc == RUN_OK && a > 8, "the small trial alone: peak RSS %.1f MiB", a);
    ok(after > 8 && fabs(after - a) < RSS_SLACK_MIB, "after the 1 GiB trial its peak RSS is its own: %.1f MiB (alone %.1f)", after,
       a);
    ok(later > 8 && fabs(later - a) < RSS_SLACK_MIB, "and after the failures too: %.1f MiB", later);

    /* the same sweep in process: the 1 GiB stays in the small trial's peak
     * (this is what isolation removes; the faulting trials are left out) */
    char inproc[600];
    snprintf(inproc, sizeof inproc, "%s/inproc.db", dir);
    run(&e, inproc, "*-n[13][62]-*", 1);
    double in = peak(inproc, 32);
    ok(in > 1000, "in process the small trial's peak RSS includes the 1 GiB before it: %.0f MiB", in);

    exp_free(&e);

    /* a configuration over the time limit at seq 64: its longer lengths
     * (which would finish at once here) are recorded over the limit unrun,
     * with the length that went over it; a shorter one and another
     * configuration run; a rerun tries the one over the limit again */
    const char *ylong = "name: isolate_long\nparams:\n  heads: 1\n  backend: dense\n"
                        "sweep:\n  head_dim: [8, 16]\n  seq: [32, 64, 128, 256]\n";
    if (tu_load_exp(&e, ylong, "isolate_long.yaml", 8)) return 1;
    char dl[600];
    snprintf(dl, sizeof dl, "%s/long.db", dir);
    t0 = rb_now();
    rc = run_limit(&e, dl, "*-d8*", 0, 2);
    dt = rb_now() - t0;
    char er[512];
    tu_qs(dl, "SELECT group_concat(seq || ':' || status, ' ') FROM (SELECT seq, status FROM trials WHERE head_dim = 8 "
              "ORDER BY seq)", er, sizeof er);
    ok(rc == RUN_SOME_FAILED && !strcmp(er, "32:done 64:failed 128:failed 256:failed"),
       "over the limit at seq 64: the longer lengths are failed too (%s)", er);
    tu_qs(dl, "SELECT error FROM trials WHERE head_dim = 8 AND seq = 256", er, sizeof er);
    ok(strstr(er, "not run: over the time limit of 2 s (the same configuration at seq 64 went over it)") != NULL,
       "the longer ones say why they were not run: %s", er);
    ok(dt < 3 * 2 + 5, "only the one trial waited for the limit: %.1f s", dt);
    rc = run_limit(&e, dl, "*-d16*", 0, 2);
    tu_qs(dl, "SELECT group_concat(status || ':' || substr(coalesce(error, ''), 1, 7), ' ') FROM (SELECT status, error "
              "FROM trials WHERE head_dim = 16 ORDER BY seq)", er, sizeof er);
    ok(rc == RUN_SOME_FAILED && !strcmp(er, "done: failed:exceede failed:not run failed:not run"),
       "another configuration is judged by its own trials: its seq 64 ran into the limit itself (%s)", er);
    exp_free(&e);
    if (getenv("KEEP")) return tap_done();
    tu_rmtree(dir);
    return tap_done();
}
