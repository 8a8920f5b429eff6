/* runner.h: running the trials of an expanded experiment against a results
 * store: shard and filter selection, resume (done trials are skipped, failed
 * and interrupted ones rerun), one transaction per finished trial, SIGINT /
 * SIGTERM handling (the trial in flight is marked interrupted; a second
 * signal ends the process at once) and progress on stderr. The work of one
 * trial is a trial_exec function: runner_exec_default times or trains through
 * bench.h / train.h; tests may plug in their own. */
#ifndef RB_RUNNER_H
#define RB_RUNNER_H

#include <stddef.h>

#include "harness/experiment.h"
#include "store/store.h"
#include "util/sysinfo.h"

/* Exit statuses of a run (commands.h's convention plus 130 for a signal). */
enum { RUN_OK = 0, RUN_SOME_FAILED = 1, RUN_BAD_INPUT = 2, RUN_INTERRUPTED = 130 };

/* Outcome of one trial. */
enum { TRIAL_DONE = 0, TRIAL_FAILED = 1, TRIAL_UNSUPPORTED = 2, TRIAL_INTERRUPTED = 3 };

typedef struct {
    int n, cap;
    store_metric *m;
    int noisy;        /* the trial's measurement judged noisy (util/measure.h) */
    char noise[256];  /* why */
} metric_list;

/* Append a metric (step -1: a summary of the whole trial). */
void metric_add(metric_list *l, int step, const char *name, double value);

typedef struct run_progress run_progress;

/* Runs trial t, appending its metrics to out. Returns TRIAL_*; for
 * FAILED/UNSUPPORTED a message in err. Should poll runner_should_stop(). */
typedef int (*trial_exec)(const experiment *e, const exp_trial *t, double sgemm_gflops, metric_list *out,
                          run_progress *pr, char *err, size_t errlen);

int runner_exec_default(const experiment *e, const exp_trial *t, double sgemm_gflops, metric_list *out,
                        run_progress *pr, char *err, size_t errlen);

/* Progress of a training trial (step, loss) for the status line. */
void runner_progress_step(run_progress *pr, int step, int steps, double loss);

typedef struct {
    const char *db_path;   /* required */
    int threads;           /* 0 = all cores */
    int shard_i, shard_n;  /* run trials with index % shard_n == shard_i; shard_n 0 or 1 = all */
    const char *filter;    /* substring, or glob when it has * ? [; NULL = all */
    int measure_sgemm;     /* measure the sgemm ceiling at the start */
    int quiet;             /* no progress output */
    const char *argv;      /* the command line, recorded */
    trial_exec exec;       /* NULL = runner_exec_default */
    int new_overrides;     /* accept --set overrides other than the database's runs had */
    int redo_noisy;        /* measure again the selected trials that are done but marked noisy */
    int redo;              /* measure again every selected trial that is done */
    int in_process;        /* run trials in this process (tests); default: each in its own child */
    double timeout_s;      /* per-trial time limit (s) overriding the file's `timeout:`; 0 = the file's */
    /* a training trial saves a checkpoint beside the database (DB.ckpt/) this
     * often and resumes from it when rerun (harness/trial_ckpt.h); 0 = every
     * RUN_CHECKPOINT_EVERY seconds, < 0 = never */
    double checkpoint_every_s;
    /* With measure_sgemm, the ceiling is measured again after every trial
     * that ran at least recheck_min_s seconds (0: RUN_RECHECK_MIN_S; < 0
     * never): a trial after which it fell below RUN_RECHECK_DROP of the
     * start's is noisy. This catches a host that slowed under the machine
     * (another tenant of it, throttling), which the machine's own load
     * figures do not show. probe measures it (GFLOP/s; 0 or -1); NULL: the
     * sgemm ceiling in a child (in this process with in_process). */
    double recheck_min_s;
    int (*probe)(double *gflops);
} run_options;

#define RUN_CHECKPOINT_EVERY 300.0
#define RUN_RECHECK_MIN_S 10.0
#define RUN_RECHECK_DROP 0.8

/* 1 when trial t is selected by the shard and filter options. */
int runner_selected(const run_options *o, const exp_trial *t);

/* Run the selected trials of e. Returns a RUN_* status; on RUN_BAD_INPUT
 * (database problems) a message in err. */
int runner_run(const experiment *e, const run_options *o, char *err, size_t errlen);

/* Run exec for trial t in a child process (util/child.h): its peak RSS is
 * its own, and a crash, an out-of-memory end or a run past timeout_s
 * seconds (0: no limit) is TRIAL_FAILED with the reason in err; a child
 * ended by a stop request (runner_should_stop) is TRIAL_INTERRUPTED. The
 * calling process must not have run OpenMP parallel regions (child.h). */
int runner_exec_isolated(trial_exec exec, const experiment *e, const exp_trial *t, double sgemm, double timeout_s,
                         metric_list *out, run_progress *pr, char *err, size_t errlen);

/* The sgemm ceiling (rb_sgemm_measure) measured in a child; 0 or -1. */
int runner_sgemm_isolated(rb_sgemm_rate *out);

/* Signal handling: install SIGINT/SIGTERM handlers; the flag they set. */
void runner_install_signals(void);
int runner_should_stop(void);
/* Forget a stop request, so a process can run another sweep after an
 * interrupted one (tests/test_runner.c runs several in one process). */
void runner_reset_stop(void);

#endif
