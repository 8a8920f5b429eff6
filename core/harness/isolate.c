/* isolate.c: a trial, or the sgemm ceiling, measured in a child process
 * (runner.h, util/child.h). The child runs the trial's exec as the runner
 * would in process and writes one record to the pipe: a header (outcome,
 * noise mark, message) and the metrics. The parent turns how the child
 * ended into the trial's outcome: a crash, a timeout or an out-of-memory
 * end is a failed trial with the reason, and the sweep goes on. */
#include "harness/runner.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/child.h"
#include "util/common.h"
#include "util/sysinfo.h"

#define TRIAL_MAGIC 0x52425452u /* "RBTR" */

typedef struct {
    uint32_t magic;
    int32_t out, n, noisy;
    char noise[256];
    char err[1024];
} trial_head;

typedef struct {
    trial_exec exec;
    const experiment *e;
    const exp_trial *t;
    double sgemm;
    run_progress *pr;
} trial_job;

static int trial_child(void *arg, int fd) {
    trial_job *j = arg;
    metric_list ml;
    memset(&ml, 0, sizeof ml);
    trial_head h;
    memset(&h, 0, sizeof h);
    h.magic = TRIAL_MAGIC;
    h.out = j->exec(j->e, j->t, j->sgemm, &ml, j->pr, h.err, sizeof h.err);
    if (runner_should_stop()) h.out = TRIAL_INTERRUPTED; /* a signal to this child alone */
    h.n = ml.n, h.noisy = ml.noisy;
    snprintf(h.noise, sizeof h.noise, "%s", ml.noise);
    int bad = rb_child_write(fd, &h, sizeof h) || rb_child_write(fd, ml.m, (size_t)ml.n * sizeof *ml.m);
    free(ml.m);
    return bad ? 1 : 0;
}

/* The child's record into out; 0, or -1 when it is missing or short. */
static int decode_trial(const rb_child_result *cr, metric_list *out, int *outcome, char *err, size_t errlen) {
    trial_head h;
    if (cr->len < sizeof h) return -1;
    memcpy(&h, cr->data, sizeof h);
    if (h.magic != TRIAL_MAGIC || h.n < 0 || cr->len != sizeof h + (size_t)h.n * sizeof(store_metric)) return -1;
    const store_metric *m = (const store_metric *)(const void *)(cr->data + sizeof h);
    for (int i = 0; i < h.n; i++) metric_add(out, m[i].step, m[i].name, m[i].value);
    out->noisy = h.noisy;
    h.noise[sizeof h.noise - 1] = h.err[sizeof h.err - 1] = 0;
    snprintf(out->noise, sizeof out->noise, "%s", h.noise);
    snprintf(err, errlen, "%s", h.err);
    *outcome = h.out;
    return 0;
}

int runner_exec_isolated(trial_exec exec, const experiment *e, const exp_trial *t, double sgemm, double timeout_s,
                         metric_list *out, run_progress *pr, char *err, size_t errlen) {
    trial_job j = {exec, e, t, sgemm, pr};
    rb_child_opts o = {timeout_s, runner_should_stop};
    rb_child_result cr;
    int ok = rb_child_run(trial_child, &j, &o, &cr) == 0, outcome = TRIAL_FAILED;
    if (ok && decode_trial(&cr, out, &outcome, err, errlen) != 0) {
        rb_fail(err, errlen, "its process ended without a result");
        outcome = TRIAL_FAILED;
    } else if (!ok) {
        /* a child our own stop request ended is interrupted, not failed */
        if (runner_should_stop() && cr.how != RB_CHILD_TIMEOUT) outcome = TRIAL_INTERRUPTED;
        rb_fail(err, errlen, "%s", cr.why);
        out->n = 0;
    }
    rb_child_result_free(&cr);
    return outcome;
}

/* ---- the sgemm ceiling ---- */

static int sgemm_child(void *arg, int fd) {
    (void)arg;
    rb_sgemm_rate r;
    memset(&r, 0, sizeof r);
    if (rb_sgemm_measure(RB_SGEMM_N, NULL, &r) != 0) return 1;
    return rb_child_write(fd, &r, sizeof r) ? 1 : 0;
}

int runner_sgemm_isolated(rb_sgemm_rate *out) {
    rb_child_opts o = {600, NULL};
    rb_child_result cr;
    int rc = rb_child_run(sgemm_child, NULL, &o, &cr) == 0 && cr.len == sizeof *out ? 0 : -1;
    if (rc == 0) memcpy(out, cr.data, sizeof *out);
    else memset(out, 0, sizeof *out);
    rb_child_result_free(&cr);
    return rc;
}
