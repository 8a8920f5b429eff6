/* runner.c: the sweep runner (runner.h). The loop is: open and check the
 * database, record this run, register the selected trials as pending, then
 * for each trial not yet done: mark it running, execute it, and commit its
 * metrics and final status in one transaction. A trial found `running` whose
 * process is gone (SIGKILL, power loss) counts as interrupted and runs again.
 *
 * Where `failed` ends and `unsupported` begins: a trial is `unsupported` when
 * the runner refuses it before starting because the backend's analytic memory
 * (act_bytes plus the bench tensors) exceeds the memory available on this
 * machine; it is not retried on resume. Anything that goes wrong once a trial
 * has started (allocation failure, non-finite loss, the backend refusing at
 * create time) is `failed` and is retried on resume. Configurations a backend
 * refuses in validate() never get this far: they are validation errors. */
#include "harness/runner.h"
#include "harness/columns.h"
#include "harness/trial_ckpt.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/analyze.h"
#include "attn/bench.h"
#include "util/child.h"
#include "util/common.h"
#include "util/sysinfo.h"
#include "model/tasks.h"
#include "util/threads.h"
#include "model/train.h"

/* ------------------------------------------------------------------ */
/* signals                                                             */

static volatile sig_atomic_t g_stop = 0;

/* The first signal asks the trial in flight to stop (a training trial saves
 * its checkpoint); a second ends the runner at once, its trial's child with
 * it: committed rows are safe in the WAL. Inside a trial's child only the
 * flag is set, so the runner forwarding a Ctrl-C the child also got from the
 * terminal does not cut its checkpoint short. */
static void on_signal(int sig) {
    (void)sig;
    if (g_stop && !rb_child_inside()) {
        rb_child_kill_current(SIGKILL);
        _exit(RUN_INTERRUPTED);
    }
    g_stop = 1;
}

void runner_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int runner_should_stop(void) { return g_stop != 0; }
void runner_reset_stop(void) { g_stop = 0; }

/* ------------------------------------------------------------------ */
/* metrics and progress                                                */

void metric_add(metric_list *l, int step, const char *name, double value) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->m = reallocCheck(l->m, (size_t)l->cap * sizeof *l->m);
    }
    store_metric *x = &l->m[l->n++];
    x->step = step;
    snprintf(x->name, sizeof x->name, "%.*s", (int)sizeof x->name - 1, name);
    x->value = value;
}

struct run_progress {
    int tty, quiet;
    int total;       /* selected trials */
    int finished;    /* selected trials done (before or in this run) or otherwise settled */
    int ran;         /* trials executed in this run */
    int to_run;      /* trials this run still has to execute */
    double run_s;    /* seconds spent executing */
    double t0;       /* start of the current trial */
    double last_draw;
    const exp_trial *cur;
    const char *ckpt_dir; /* training trials' checkpoints (trial_ckpt.h); NULL = off */
    double ckpt_every;    /* seconds between them */
};

static void fmt_eta(double s, char *out, size_t len) {
    if (!(s >= 0) || !isfinite(s)) snprintf(out, len, "?");
    else if (s < 60) snprintf(out, len, "%.0fs", s);
    else if (s < 3600) snprintf(out, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(out, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static double eta_s(const run_progress *pr) {
    if (pr->ran == 0) return NAN;
    double per = pr->run_s / pr->ran;
    double elapsed = rb_now() - pr->t0;
    return per * pr->to_run - RB_MIN(elapsed, per);
}

void runner_progress_step(run_progress *pr, int step, int steps, double loss) {
    if (!pr || pr->quiet || !pr->cur) return;
    double now = rb_now();
    if (pr->tty) {
        /* a terminal: one line rewritten in place, at most 5 times a second */
        if (now - pr->last_draw < 0.2 && step != steps) return;
    } else {
        /* a log file (nohup, Slurm): a plain line every half minute of a long trial */
        if (pr->last_draw == 0.0) pr->last_draw = now;
        if (now - pr->last_draw < 30.0) return;
    }
    pr->last_draw = now;
    char eta[32];
    fmt_eta(eta_s(pr), eta, sizeof eta);
    fprintf(stderr, "%s[%d/%d] %s seed %llu  step %d/%d  loss %.4f  ETA %s%s", pr->tty ? "\r\033[K" : "",
            pr->finished + 1, pr->total, pr->cur->name, (unsigned long long)pr->cur->seed, step, steps, loss, eta,
            pr->tty ? "" : "\n");
    fflush(stderr);
}

static void progress_start(run_progress *pr, const exp_trial *t) {
    pr->cur = t;
    pr->t0 = rb_now();
    if (pr->quiet || !pr->tty) return;
    char eta[32];
    fmt_eta(eta_s(pr), eta, sizeof eta);
    fprintf(stderr, "\r\033[K[%d/%d] %s seed %llu  ETA %s", pr->finished + 1, pr->total, t->name,
            (unsigned long long)t->seed, eta);
    fflush(stderr);
}

static void progress_end(run_progress *pr, const exp_trial *t, const char *status, const char *error) {
    double dt = rb_now() - pr->t0;
    pr->run_s += dt;
    pr->ran++;
    pr->to_run--;
    pr->finished++;
    pr->cur = NULL;
    if (pr->quiet) return;
    char eta[32];
    fmt_eta(pr->to_run > 0 ? pr->run_s / pr->ran * pr->to_run : 0, eta, sizeof eta);
    if (pr->tty) fprintf(stderr, "\r\033[K");
    int bad = strcmp(status, ST_DONE) != 0;
    if (pr->tty && !bad) {
        fprintf(stderr, "[%d/%d] %s seed %llu  %s  %.2fs  ETA %s", pr->finished, pr->total, t->name,
                (unsigned long long)t->seed, status, dt, eta);
        fflush(stderr);
        return;
    }
    fprintf(stderr, "[%d/%d] %s %s seed %llu (%.2fs, ETA %s)%s%s\n", pr->finished, pr->total, status, t->name,
            (unsigned long long)t->seed, dt, eta, error ? ": " : "", error ? error : "");
}

/* ------------------------------------------------------------------ */
/* trial execution                                                     */

typedef struct {
    metric_list *out;
    run_progress *pr;
    int steps;
    double step_min, step_max; /* spread of step times after the first (warm-up) step */
    double *step_ms;           /* step times after the first, for their median and IQR */
    int nstep, capstep;
    trial_ckpt ck;             /* checkpoints that outlive the process (off for bench and analyze) */
    int side_written;
} train_ctx;

static void on_step(void *ctx, const train_step_info *s) {
    train_ctx *c = ctx;
    if (c->ck.resumed && !c->ck.started && !c->pr->quiet)
        fprintf(stderr, "%sroutebench run: %s seed %llu resumes from its checkpoint at step %d (%s)\n",
                c->pr->tty ? "\n" : "", c->pr->cur ? c->pr->cur->name : "the trial",
                c->pr->cur ? (unsigned long long)c->pr->cur->seed : 0ULL, s->step - 1, c->ck.path);
    trial_ckpt_first_step(&c->ck, s->step, c->out);
    metric_add(c->out, s->step, "train_loss", s->loss);
    metric_add(c->out, s->step, "lr", s->lr);
    metric_add(c->out, s->step, "grad_norm", s->grad_norm);
    metric_add(c->out, s->step, "step_ms", s->step_ms);
    if (s->step > 1) {
        c->step_min = RB_MIN(c->step_min, s->step_ms);
        c->step_max = RB_MAX(c->step_max, s->step_ms);
        if (c->nstep == c->capstep) {
            c->capstep = c->capstep ? 2 * c->capstep : 256;
            c->step_ms = reallocCheck(c->step_ms, (size_t)c->capstep * sizeof *c->step_ms);
        }
        c->step_ms[c->nstep++] = s->step_ms;
    }
    runner_progress_step(c->pr, s->step, c->steps, s->loss);
}

static void on_eval(void *ctx, const train_eval_info *e) {
    train_ctx *c = ctx;
    /* the evaluation train_run makes when it stops early is not a point of
     * the curve the resumed trial continues */
    if (runner_should_stop() && c->ck.path[0]) return;
    metric_add(c->out, e->step, "eval_loss", e->eval_loss);
    metric_add(c->out, e->step, "bits_per_token", e->bits_per_token);
    if (isfinite(e->accuracy)) metric_add(c->out, e->step, "accuracy", e->accuracy);
}

static int should_stop(void *ctx) {
    train_ctx *c = ctx;
    int stop = runner_should_stop();
    if (stop && !c->side_written) trial_ckpt_side(&c->ck, c->out), c->side_written = 1; /* before the last save */
    return stop;
}

static int should_save(void *ctx, int step) {
    (void)step;
    train_ctx *c = ctx;
    return trial_ckpt_due(&c->ck, c->out);
}

static void add_train_result(metric_list *out, const train_result *r, double sgemm, int train) {
    if (train) {
        metric_add(out, -1, "steps_done", r->steps_done);
        metric_add(out, -1, "final_train_loss", r->final_train_loss);
        metric_add(out, -1, "eval_loss", r->final_eval_loss);
        metric_add(out, -1, "bits_per_token", r->bits_per_token);
        if (isfinite(r->accuracy)) metric_add(out, -1, "accuracy", r->accuracy);
        metric_add(out, -1, "test_loss", r->test_loss);
        metric_add(out, -1, "test_bits_per_token", r->test_bits_per_token);
        if (isfinite(r->test_accuracy)) metric_add(out, -1, "test_accuracy", r->test_accuracy);
    }
    metric_add(out, -1, "step_ms", r->median_step_ms);
    metric_add(out, -1, "fwd_ms", r->fwd_ms);
    metric_add(out, -1, "bwd_ms", r->bwd_ms);
    metric_add(out, -1, "opt_ms", r->opt_ms);
    metric_add(out, -1, "tokens_per_s", r->tokens_per_s);
    metric_add(out, -1, "flops", r->flops_per_step);
    metric_add(out, -1, "gflops", r->gflops);
    if (sgemm > 0) metric_add(out, -1, "sgemm_fraction", r->gflops / sgemm);
    metric_add(out, -1, "params", (double)r->params);
    metric_add(out, -1, "peak_rss_bytes", (double)r->peak_rss);
    metric_add(out, -1, "arena_bytes", (double)r->arena_bytes);
    metric_add(out, -1, "arena_peak_bytes", (double)r->arena_peak);
    metric_add(out, -1, "attn_bytes", (double)r->attn_bytes);
    for (int i = 0; i < r->nstats && i < TRAIN_MAX_STATS; i++) {
        char n[64];
        snprintf(n, sizeof n, "attn.%.40s", r->stat_names[i]);
        metric_add(out, -1, n, r->stat_values[i]);
    }
}

/* kind analyze: train as a train trial does (into a temporary checkpoint),
 * then analyse the trained model on held-out data (core/model/analyze.h) and add
 * its analyze.* measures to the trial's metrics. */
static int exec_analyze(train_config *c, const train_hooks *h, double sgemm, metric_list *out, char *err,
                        size_t errlen) {
    char ckpt[] = "/tmp/routebench_analyze_XXXXXX";
    int fd = mkstemp(ckpt);
    if (fd < 0) return rb_fail(err, errlen, "cannot make a temporary checkpoint file: %s", strerror(errno)), TRIAL_FAILED;
    close(fd);
    snprintf(c->save, sizeof c->save, "%s", ckpt);
    c->save_every = 0;
    train_result r;
    memset(&r, 0, sizeof r);
    int rc = TRIAL_DONE;
    analyze_acc *acc = NULL;
    if (train_run(c, h, &r, err, errlen) != 0) rc = TRIAL_FAILED;
    else if (runner_should_stop() && r.steps_done < c->steps) rc = TRIAL_INTERRUPTED;
    else if (!isfinite(r.final_train_loss)) rc = (rb_fail(err, errlen, "training loss is not finite"), TRIAL_FAILED);
    else {
        analyze_options o = {c->eval_batches, TASK_VAL};
        if (analyze_checkpoint(c, ckpt, &o, &acc, err, errlen) != 0) rc = TRIAL_FAILED;
    }
    unlink(ckpt);
    if (rc != TRIAL_DONE) return rc;
    add_train_result(out, &r, sgemm, 1);
    int max = analyze_metrics_max(acc);
    store_metric *m = mallocCheck((size_t)max * sizeof *m);
    int n = analyze_metrics(acc, m, max);
    for (int i = 0; i < n; i++) metric_add(out, -1, m[i].name, m[i].value);
    free(m);
    analyze_acc_free(acc);
    return TRIAL_DONE;
}

/* A timing as metrics: M (median), M_iqr, M_n. */
static void add_timing(metric_list *out, const char *name, double median, double iqr, int n) {
    char nm[64];
    metric_add(out, -1, name, median);
    snprintf(nm, sizeof nm, "%s_iqr", name), metric_add(out, -1, nm, iqr);
    snprintf(nm, sizeof nm, "%s_n", name), metric_add(out, -1, nm, n);
}

static int exec_bench_attn(const experiment *e, const exp_trial *t, double sgemm, metric_list *out, char *err,
                           size_t errlen) {
    attn_params p = t->attn;
    const attn_backend *be = attn_find(t->backend);
    if (!be) return rb_fail(err, errlen, "unknown backend '%s'", t->backend), TRIAL_FAILED;
    double n = (double)p.batch * p.heads * p.seq * p.head_dim;
    if (attn_memory_check(be, &p, 8.0 * n * sizeof(float), err, errlen) != 0) return TRIAL_UNSUPPORTED;
    attn_bench_opts o;
    attn_bench_opts_default(&o, e->timing_runs);
    o.warmup = e->timing_warmup, o.ar.min_time = e->timing_min_time, o.ar.max_time = e->timing_max_time;
    attn_bench_result r;
    if (attn_bench(t->backend, &p, &o, &r, err, errlen) != 0) return TRIAL_FAILED;
    if (!isfinite(r.fwd_ms) || !isfinite(r.bwd_ms)) return rb_fail(err, errlen, "non-finite timing"), TRIAL_FAILED;
    add_timing(out, "fwd_ms", r.fwd_ms, r.fwd_ms_iqr, r.repeat);
    add_timing(out, "bwd_ms", r.bwd_ms, r.bwd_ms_iqr, r.repeat);
    add_timing(out, "fwdbwd_ms", r.fwdbwd_ms, r.fwdbwd_ms_iqr, r.repeat);
    const struct {
        const char *name;
        double v;
    } m[] = {{"fwd_ms_min", r.fwd_ms_min}, {"fwd_ms_max", r.fwd_ms_max},
             {"bwd_ms_min", r.bwd_ms_min}, {"bwd_ms_max", r.bwd_ms_max},
             {"fwd_flops", r.fwd_flops},   {"bwd_flops", r.bwd_flops},
             {"fwd_gflops", r.fwd_gflops}, {"fwdbwd_gflops", r.fwdbwd_gflops},
             {"sgemm_fraction", sgemm > 0 ? r.fwdbwd_gflops / sgemm : NAN},
             {"tokens_per_s", r.fwdbwd_ms > 0 ? (double)p.batch * p.seq / (r.fwdbwd_ms * 1e-3) : NAN},
             {"act_bytes", (double)r.act_bytes},   {"inst_bytes", (double)r.inst_bytes},
             {"base_rss_bytes", (double)r.base_rss_bytes}, {"peak_rss_bytes", (double)r.peak_rss_bytes},
             {"runs", r.repeat}, {"load_avg", r.load_avg}, {"other_cpu", r.other_cpu}, {"noisy", r.noisy}};
    /* other_cpu is kept even when unknown (NULL: the run was too short for
     * /proc/stat's 10 ms ticks to tell), so every trial has the same set */
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!isnan(m[i].v) || !strcmp(m[i].name, "other_cpu")) metric_add(out, -1, m[i].name, m[i].v);
    for (int i = 0; i < r.nstats && i < ATTN_BENCH_MAX_STATS; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "attn.%.40s", r.stats[i].name);
        metric_add(out, -1, nm, r.stats[i].value);
    }
    out->noisy = r.noisy;
    snprintf(out->noise, sizeof out->noise, "%s", r.noise);
    return TRIAL_DONE;
}

/* The spread of a training trial's step times (after the warm-up step):
 * step_ms_iqr, step_ms_n, min and max, and whether the machine's load or the
 * spread makes them noisy (util/measure.h). */
static void add_step_spread(metric_list *out, train_ctx *ctx, const rb_load_probe *probe) {
    rb_load load;
    rb_load_end(probe, &load);
    if (ctx->nstep == 0) return;
    metric_add(out, -1, "step_ms_min", ctx->step_min);
    metric_add(out, -1, "step_ms_max", ctx->step_max);
    rb_summary s;
    rb_summarize(ctx->step_ms, ctx->nstep, &s);
    metric_add(out, -1, "step_ms_iqr", s.iqr);
    metric_add(out, -1, "step_ms_n", s.n);
    metric_add(out, -1, "load_avg", load.load_avg);
    metric_add(out, -1, "other_cpu", load.other_cpu);
    rb_noise_rule rule;
    rb_noise_rule_default(&rule, rb_threads());
    out->noisy = rb_noise_judge(&rule, &s, &load, out->noise, sizeof out->noise);
    metric_add(out, -1, "noisy", out->noisy);
}

static int train_outcome(const train_config *c, const train_result *r, char *err, size_t errlen) {
    if (runner_should_stop() && r->steps_done < c->steps) return TRIAL_INTERRUPTED;
    if (!isfinite(r->final_train_loss)) return rb_fail(err, errlen, "training loss is not finite"), TRIAL_FAILED;
    return TRIAL_DONE;
}

static int exec_train(const experiment *e, const exp_trial *t, double sgemm, metric_list *out, run_progress *pr,
                      char *err, size_t errlen) {
    train_config c;
    if (exp_trial_config(e, t, &c, err, errlen) != 0) return TRIAL_FAILED;
    train_result r;
    memset(&r, 0, sizeof r);
    if (e->kind == EXP_KIND_BENCH) {
        if (train_bench_step(&c, e->timing_runs, e->timing_warmup, e->timing_min_time, &r, err, errlen) != 0) return TRIAL_FAILED;
        add_train_result(out, &r, sgemm, 0);
        /* the spread and the machine's load, judged as a training trial's
         * steps are (a step twice as slow as the next run's was stored
         * without a word) */
        metric_add(out, -1, "step_ms_iqr", r.step_ms_iqr);
        metric_add(out, -1, "step_ms_min", r.step_ms_min);
        metric_add(out, -1, "step_ms_max", r.step_ms_max);
        metric_add(out, -1, "step_ms_n", r.steps_timed);
        metric_add(out, -1, "load_avg", r.load_avg);
        metric_add(out, -1, "other_cpu", r.other_cpu);
        metric_add(out, -1, "noisy", r.noisy);
        out->noisy = r.noisy;
        snprintf(out->noise, sizeof out->noise, "%s", r.noise);
        return TRIAL_DONE;
    }
    train_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.out = out, ctx.pr = pr, ctx.steps = c.steps, ctx.step_min = INFINITY, ctx.step_max = -INFINITY;
    train_hooks h = {&ctx, on_step, on_eval, should_stop, should_save};
    if (e->kind == EXP_KIND_ANALYZE) return exec_analyze(&c, &h, sgemm, out, err, errlen);
    if (trial_ckpt_open(&ctx.ck, pr->ckpt_dir, t, pr->ckpt_every, &c, err, errlen) != 0) return TRIAL_FAILED;
    rb_load_probe probe;
    rb_load_begin(&probe);
    int rc = train_run(&c, &h, &r, err, errlen) != 0 ? TRIAL_FAILED : train_outcome(&c, &r, err, errlen);
    if (rc == TRIAL_FAILED && ctx.ck.resumed && r.steps_done == 0) {
        /* a checkpoint this trial cannot continue from (corrupt, or of an
         * older build's model): start over next time rather than fail forever */
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, " (its checkpoint was removed: the next run starts the trial over)");
        trial_ckpt_remove(&ctx.ck);
        ctx.ck.path[0] = 0;
    }
    trial_ckpt_first_step(&ctx.ck, r.steps_done + 1, out); /* resumed at the last step: no step ran */
    if (rc == TRIAL_DONE) {
        add_train_result(out, &r, sgemm, 1);
        add_step_spread(out, &ctx, &probe);
        trial_ckpt_remove(&ctx.ck);
    } else trial_ckpt_side(&ctx.ck, out); /* the checkpoint train_run saved on its way out is the newer */
    trial_ckpt_free(&ctx.ck);
    free(ctx.step_ms);
    return rc;
}

int runner_exec_default(const experiment *e, const exp_trial *t, double sgemm, metric_list *out, run_progress *pr,
                        char *err, size_t errlen) {
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) return exec_bench_attn(e, t, sgemm, out, err, errlen);
    return exec_train(e, t, sgemm, out, pr, err, errlen);
}

/* ------------------------------------------------------------------ */
/* selection                                                           */

int runner_selected(const run_options *o, const exp_trial *t) {
    if (o->shard_n > 1 && t->index % o->shard_n != o->shard_i) return 0;
    if (o->filter && *o->filter) {
        if (strpbrk(o->filter, "*?[")) return fnmatch(o->filter, t->name, 0) == 0;
        return strstr(t->name, o->filter) != NULL;
    }
    return 1;
}

/* The trial's row: identity, the resolved parameters as columns (NULL where
 * a parameter does not apply), the canonical JSON. json and cb hold the
 * texts r points at. */
static int trial_row(const experiment *e, const exp_trial *t, store_trial *r, char *json, size_t jlen,
                     trial_colbuf *cb, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->key = t->key, r->name = t->name, r->seed = t->seed, r->idx = t->index;
    r->kind = exp_kind_name(e->kind);
    r->bench = e->kind == EXP_KIND_BENCH ? exp_bench_name(e->bench) : NULL;
    r->backend = t->backend;
    if (exp_trial_json(e, t, json, jlen) != 0) return rb_fail(err, errlen, "%s: parameters too long", t->name);
    r->params_json = json;
    if (e->kind == EXP_KIND_BENCH && e->bench == EXP_BENCH_ATTN) {
        const attn_backend *be = attn_find(t->backend);
        columns_from_attn(&t->attn, be ? be->uses : 0, cb, r->colv);
        return 0;
    }
    train_config *c = mallocCheck(sizeof *c);
    int rc = exp_trial_config(e, t, c, err, errlen);
    if (rc == 0) columns_from_model(c, cb, r->colv);
    free(c);
    return rc;
}

static void git_commit(char *out, size_t len) {
    snprintf(out, len, "unknown");
    FILE *p = popen("git rev-parse HEAD 2>/dev/null", "r");
    if (!p) return;
    char buf[128];
    if (fgets(buf, sizeof buf, p)) {
        buf[strcspn(buf, "\r\n")] = 0;
        if (strlen(buf) >= 7) snprintf(out, len, "%s", buf);
    }
    pclose(p);
}

/* ------------------------------------------------------------------ */

/* One invocation of runner_run. */
typedef struct {
    const experiment *e;
    const run_options *o;
    trial_exec exec;
    rb_store *s;
    int64_t exp_id;
    rb_sysinfo si;
    char runner[200]; /* host:pid, in the trials we claim */
    int *sel, nsel;   /* the selected trials (indices into e->trials) */
    int stale;        /* trials of killed runs found and marked interrupted */
    run_progress pr;
    metric_list ml;
    int nfailed, interrupted, nnoisy;
    /* configurations that went over the time limit in this run: their
     * canonical parameters without seq, the length and the seed (a longer
     * length of the same configuration is recorded over the limit unrun) */
    struct over_limit {
        char *rest;
        long long seq;
        uint64_t seed;
    } *over;
    int nover;
} run_ctx;

/* The machine and its sgemm ceiling. With trials in children the ceiling is
 * measured in a child too: this process must not start OpenMP's threads,
 * which a fork does not carry over (util/child.h). */
static void measure_machine(run_ctx *r) {
    int child = !r->o->in_process;
    rb_sysinfo_read(&r->si, r->o->measure_sgemm && !child && !r->o->probe);
    if (r->o->measure_sgemm && r->o->probe) {
        double g = 0;
        memset(&r->si.sgemm, 0, sizeof r->si.sgemm);
        if (r->o->probe(&g) == 0) r->si.sgemm_gflops = r->si.sgemm.gflops = g;
    } else if (r->o->measure_sgemm && child && runner_sgemm_isolated(&r->si.sgemm) == 0)
        r->si.sgemm_gflops = r->si.sgemm.gflops;
    if (r->o->measure_sgemm && r->si.sgemm.noisy && !r->o->quiet)
        fprintf(stderr, "routebench run: warning: the sgemm ceiling (%.1f GFLOP/s) is a noisy measurement: %s\n",
                r->si.sgemm_gflops, r->si.sgemm.noise);
}

/* After the trials: the ceiling again (experiments.sgemm_after), so a run
 * whose machine changed speed under it shows it. Only when this run ran
 * something and measured before. */
static int probe_ceiling(const run_ctx *r, double *gflops);
static void measure_after(run_ctx *r) {
    if (!r->o->measure_sgemm || r->pr.ran == 0 || !r->s) return;
    double g;
    if (probe_ceiling(r, &g) != 0) return;
    char err[512];
    if (store_set_sgemm_after(r->s, r->exp_id, g, err, sizeof err) != 0 && !r->o->quiet)
        fprintf(stderr, "routebench run: warning: %s\n", err);
    double before = r->si.sgemm_gflops;
    if (!r->o->quiet && before > 0 && fabs(g - before) > 0.15 * before)
        fprintf(stderr, "routebench run: warning: the sgemm ceiling moved during the run: %.1f GFLOP/s before, %.1f after\n",
                before, g);
}

/* The sgemm ceiling now (GFLOP/s; 0 or -1), as measure_machine took it. */
static int probe_ceiling(const run_ctx *r, double *gflops) {
    if (r->o->probe) return r->o->probe(gflops);
    rb_sgemm_rate a;
    memset(&a, 0, sizeof a);
    int rc = r->o->in_process ? rb_sgemm_measure(RB_SGEMM_N, NULL, &a) : runner_sgemm_isolated(&a);
    *gflops = a.gflops;
    return rc == 0 && a.gflops > 0 ? 0 : -1;
}

/* After a trial of `seconds` that is done: the ceiling again (metric
 * sgemm_after_trial); one fallen below RUN_RECHECK_DROP of the start's
 * makes the trial noisy (run_options.recheck_min_s). */
static void recheck_ceiling(run_ctx *r, double seconds) {
    double min_s = r->o->recheck_min_s ? r->o->recheck_min_s : RUN_RECHECK_MIN_S, before = r->si.sgemm_gflops, g;
    if (!r->o->measure_sgemm || before <= 0 || min_s < 0 || seconds < min_s || probe_ceiling(r, &g) != 0) return;
    metric_add(&r->ml, -1, "sgemm_after_trial", g);
    if (g >= RUN_RECHECK_DROP * before) return;
    size_t n = strlen(r->ml.noise);
    snprintf(r->ml.noise + n, sizeof r->ml.noise - n,
             "%sthe sgemm ceiling after it was %.0f GFLOP/s, %.0f%% of the %.0f at the start (the host slowed: "
             "another tenant, throttling)",
             n ? "; " : "", g, 100 * g / before, before);
    r->ml.noisy = 1;
    int have = 0;
    for (int i = 0; i < r->ml.n; i++)
        if (r->ml.m[i].step < 0 && !strcmp(r->ml.m[i].name, "noisy")) r->ml.m[i].value = 1, have = 1;
    if (!have) metric_add(&r->ml, -1, "noisy", 1);
}

/* Open the database (it must hold this experiment or nothing), measure the
 * machine, record the run. */
static int open_run(run_ctx *r, char *err, size_t errlen) {
    const experiment *e = r->e;
    const run_options *o = r->o;
    char have[128];
    if (store_open(&r->s, o->db_path, 1, err, errlen) != 0) return RUN_BAD_INPUT;
    if (store_experiment_name(r->s, have, sizeof have, err, errlen) != 0) return RUN_BAD_INPUT;
    if (have[0] && strcmp(have, e->name) != 0)
        return rb_fail(err, errlen, "%s: holds results of experiment '%s', not '%s' (use --db to choose another file)",
                       o->db_path, have, e->name),
               RUN_BAD_INPUT;
    char had[2048];
    int runs = 0;
    if (store_latest_overrides(r->s, had, sizeof had, &runs, err, errlen) != 0) return RUN_BAD_INPUT;
    if (runs > 0 && strcmp(had, e->overrides) != 0 && !o->new_overrides)
        return rb_fail(err, errlen, "%s: its runs had %s%s%s, this one has %s%s%s; the trials would differ (add "
                       "--new-overrides to run anyway, or use another --db)", o->db_path,
                       had[0] ? "--set " : "no --set overrides", had, "", e->overrides[0] ? "--set " : "no --set overrides",
                       e->overrides, ""),
               RUN_BAD_INPUT;
    rb_set_threads(o->threads);
    measure_machine(r);
    char commit[128], shard[32];
    git_commit(commit, sizeof commit);
    if (o->shard_n > 1) snprintf(shard, sizeof shard, "%d/%d", o->shard_i, o->shard_n);
    char blas[600];
    rb_sysinfo_blas_line(&r->si, blas, sizeof blas);
    store_experiment x = {e->name, e->description, exp_kind_name(e->kind),
                          e->kind == EXP_KIND_BENCH ? exp_bench_name(e->bench) : NULL,
                          e->yaml, e->hash, e->path, commit, r->si.host, r->si.cpu, blas,
                          o->shard_n > 1 ? shard : NULL, o->filter, o->argv, e->overrides, rb_threads(),
                          r->si.sgemm_gflops};
    if (store_begin_experiment(r->s, &x, &r->exp_id, err, errlen) != 0) return RUN_BAD_INPUT;
    snprintf(r->runner, sizeof r->runner, "%.150s:%ld", r->si.host, (long)getpid());
    return RUN_OK;
}

/* --redo-noisy: the selected trials done but marked noisy are pending
 * again; --redo: every selected trial done. */
static int redo_done(run_ctx *r, char *err, size_t errlen) {
    int n = 0;
    for (int i = 0; i < r->nsel; i++) {
        const exp_trial *t = &r->e->trials[r->sel[i]];
        char status[32];
        int64_t id;
        if (store_trial_status(r->s, t->key, t->seed, status, sizeof status, &id, NULL, 0, err, errlen) != 0)
            return RUN_BAD_INPUT;
        int c = strcmp(status, ST_DONE) ? 0 : store_redo(r->s, id, !r->o->redo, err, errlen);
        if (c < 0) return RUN_BAD_INPUT;
        n += c;
    }
    if (!r->o->quiet)
        fprintf(stderr, "routebench run: %s: %d %strial%s to measure again\n", r->o->redo ? "--redo" : "--redo-noisy", n,
                r->o->redo ? "" : "noisy ", n == 1 ? "" : "s");
    return RUN_OK;
}

/* Register the selected trials as pending (those already there keep their
 * state), and mark trials left running by killed processes interrupted. */
static int register_selected(run_ctx *r, char *err, size_t errlen) {
    const experiment *e = r->e;
    r->sel = mallocCheck(sizeof(int) * (size_t)(e->ntrials ? e->ntrials : 1));
    for (int i = 0; i < e->ntrials; i++)
        if (runner_selected(r->o, &e->trials[i])) r->sel[r->nsel++] = i;
    size_t n = (size_t)(r->nsel ? r->nsel : 1);
    store_trial *rows = mallocCheck(sizeof *rows * n);
    char (*json)[4096] = mallocCheck(sizeof *json * n);
    trial_colbuf *cols = mallocCheck(sizeof *cols * n);
    int rc = RUN_OK;
    for (int i = 0; i < r->nsel && rc == RUN_OK; i++)
        if (trial_row(e, &e->trials[r->sel[i]], &rows[i], json[i], sizeof json[i], &cols[i], err, errlen) != 0)
            rc = RUN_BAD_INPUT;
    if (rc == RUN_OK && store_register_trials(r->s, rows, r->nsel, r->exp_id, err, errlen) != 0) rc = RUN_BAD_INPUT;
    free(rows), free(json), free(cols);
    if (rc == RUN_OK && (r->stale = store_reset_stale(r->s, r->si.host, err, errlen)) < 0) rc = RUN_BAD_INPUT;
    if (rc == RUN_OK && (r->o->redo_noisy || r->o->redo)) rc = redo_done(r, err, errlen);
    return rc;
}

/* How many selected trials are not done (nor unsupported). */
static int count_to_run(run_ctx *r, char *err, size_t errlen) {
    char status[32];
    int64_t id;
    r->pr.to_run = 0;
    for (int i = 0; i < r->nsel; i++) {
        const exp_trial *t = &r->e->trials[r->sel[i]];
        if (store_trial_status(r->s, t->key, t->seed, status, sizeof status, &id, NULL, 0, err, errlen) != 0)
            return RUN_BAD_INPUT;
        if (strcmp(status, ST_DONE) && strcmp(status, ST_UNSUPPORTED)) r->pr.to_run++;
    }
    return RUN_OK;
}

/* The canonical parameters of t without its "seq" into rest; the length,
 * or -1 when the trial has none. */
static long long params_without_seq(const experiment *e, const exp_trial *t, char *rest, size_t len) {
    char json[4096];
    if (exp_trial_json(e, t, json, sizeof json) != 0) return -1;
    char *p = strstr(json, "\"seq\":");
    if (!p) return -1;
    char *end;
    long long seq = strtoll(p + 6, &end, 10);
    if (*end == ',') end++;
    else if (p > json && p[-1] == ',') p--;
    snprintf(rest, len, "%.*s%s", (int)(p - json), json, end);
    return seq;
}

/* When the same configuration and seed went over the time limit at a
 * shorter length in this run, the reason trial t is not run into why; 1,
 * else 0. */
static int over_limit_before(run_ctx *r, const exp_trial *t, double limit, char *why, size_t len) {
    if (!r->nover) return 0;
    char rest[4096];
    long long seq = params_without_seq(r->e, t, rest, sizeof rest);
    for (int i = 0; seq > 0 && i < r->nover; i++)
        if (r->over[i].seed == t->seed && seq > r->over[i].seq && !strcmp(r->over[i].rest, rest)) {
            snprintf(why, len, "not run: over the time limit of %g s (the same configuration at seq %lld went over it)",
                     limit, r->over[i].seq);
            return 1;
        }
    return 0;
}

static void remember_over_limit(run_ctx *r, const exp_trial *t) {
    char rest[4096];
    long long seq = params_without_seq(r->e, t, rest, sizeof rest);
    if (seq <= 0) return;
    size_t n = strlen(rest) + 1;
    char *copy = mallocCheck(n);
    memcpy(copy, rest, n);
    r->over = reallocCheck(r->over, sizeof *r->over * (size_t)(r->nover + 1));
    r->over[r->nover++] = (struct over_limit){copy, seq, t->seed};
}

static const char *trial_status(int out) {
    return out == TRIAL_DONE ? ST_DONE : out == TRIAL_UNSUPPORTED ? ST_UNSUPPORTED
                                     : out == TRIAL_INTERRUPTED   ? ST_INTERRUPTED
                                                                  : ST_FAILED;
}

/* Claim trial t and run it, unless it is done, unsupported or running in
 * another process. RUN_OK, or RUN_BAD_INPUT (the database refused). */
static int run_one(run_ctx *r, const exp_trial *t, char *err, size_t errlen) {
    char status[32], other[200], terr[1024] = "";
    int64_t id;
    if (store_trial_status(r->s, t->key, t->seed, status, sizeof status, &id, other, sizeof other, err, errlen) != 0)
        return RUN_BAD_INPUT;
    if (!strcmp(status, ST_DONE) || !strcmp(status, ST_UNSUPPORTED) || !status[0]) return RUN_OK;
    int claimed = !strcmp(status, ST_RUNNING) ? 1 : store_try_claim_trial(r->s, id, r->exp_id, r->runner, err, errlen);
    if (claimed < 0) return RUN_BAD_INPUT;
    if (claimed == 1) { /* another live process has it (two runs on one database) */
        if (!r->o->quiet)
            fprintf(stderr, "routebench run: %s seed %llu is being run by %s; waiting for it at the end\n", t->name,
                    (unsigned long long)t->seed, other[0] ? other : "another process");
        r->pr.to_run--;
        return RUN_OK;
    }
    progress_start(&r->pr, t);
    r->ml.n = 0, r->ml.noisy = 0, r->ml.noise[0] = 0;
    double limit = r->o->timeout_s > 0 ? r->o->timeout_s : r->e->timeout_s, t0 = rb_now();
    int out = over_limit_before(r, t, limit, terr, sizeof terr) ? TRIAL_FAILED
              : r->o->in_process ? r->exec(r->e, t, r->si.sgemm_gflops, &r->ml, &r->pr, terr, sizeof terr)
                                 : runner_exec_isolated(r->exec, r->e, t, r->si.sgemm_gflops, limit, &r->ml, &r->pr,
                                                        terr, sizeof terr);
    /* a failure at the limit is the time limit's: longer lengths would go over it too */
    if (out == TRIAL_FAILED && limit > 0 && !r->o->in_process && rb_now() - t0 >= limit) remember_over_limit(r, t);
    if (runner_should_stop()) out = TRIAL_INTERRUPTED; /* the trial in flight is not a clean measurement */
    if (out == TRIAL_INTERRUPTED) snprintf(terr, sizeof terr, "interrupted by a signal");
    if (out != TRIAL_DONE) r->ml.n = 0; /* a trial that did not finish leaves no metrics */
    if (out == TRIAL_DONE) recheck_ceiling(r, rb_now() - t0);
    int noisy = out == TRIAL_DONE ? r->ml.noisy : -1;
    if (store_finish_trial_noise(r->s, id, trial_status(out), out == TRIAL_DONE ? NULL : terr, r->ml.m, r->ml.n, noisy,
                                 r->ml.noise, err, errlen) != 0)
        return RUN_BAD_INPUT;
    progress_end(&r->pr, t, trial_status(out), out == TRIAL_DONE ? NULL : terr);
    if (noisy > 0) {
        r->nnoisy++;
        if (!r->o->quiet)
            fprintf(stderr, "%sroutebench run: warning: %s seed %llu is a noisy measurement: %s\n", r->pr.tty ? "\n" : "",
                    t->name, (unsigned long long)t->seed, r->ml.noise);
    }
    r->nfailed += out == TRIAL_FAILED;
    r->interrupted |= out == TRIAL_INTERRUPTED;
    return RUN_OK;
}

/* Trials another live process is running (two runs on one database): wait
 * for them, so that exit 0 means every selected trial is done. A process
 * that dies meanwhile leaves its trials interrupted (store_reset_stale), and
 * then this run takes them. Ctrl-C stops the waiting. */
static int wait_elsewhere(run_ctx *r, char *err, size_t errlen) {
    double said = 0;
    for (;;) {
        int elsewhere = 0, rc = RUN_OK;
        char status[32];
        int64_t id;
        if (store_reset_stale(r->s, r->si.host, err, errlen) < 0) return RUN_BAD_INPUT;
        for (int i = 0; i < r->nsel && rc == RUN_OK && !r->interrupted; i++) {
            const exp_trial *t = &r->e->trials[r->sel[i]];
            if (store_trial_status(r->s, t->key, t->seed, status, sizeof status, &id, NULL, 0, err, errlen) != 0)
                return RUN_BAD_INPUT;
            if (!strcmp(status, ST_RUNNING)) elsewhere++;
            else if (strcmp(status, ST_DONE) && strcmp(status, ST_UNSUPPORTED) && strcmp(status, ST_FAILED)) {
                r->pr.to_run++; /* left by a process that died: ours now */
                rc = run_one(r, t, err, errlen);
            }
        }
        if (rc != RUN_OK || elsewhere == 0 || r->interrupted) return rc;
        if (runner_should_stop()) {
            r->interrupted = 1;
            return RUN_OK;
        }
        if (!r->o->quiet && rb_now() - said > 30) {
            fprintf(stderr, "routebench run: waiting for %d trial%s another process is running in %s\n", elsewhere,
                    elsewhere == 1 ? "" : "s", r->o->db_path);
            said = rb_now();
        }
        usleep(500 * 1000);
    }
}

/* Record how the run ended and say so; the exit status. */
static int end_run(run_ctx *r, int rc, char *err, size_t errlen) {
    const run_options *o = r->o;
    if (r->pr.tty && !o->quiet) fprintf(stderr, "\n");
    const char *end = rc != RUN_OK ? "failed" : r->interrupted ? "interrupted" : "done";
    char err2[512];
    if (r->s && store_end_experiment(r->s, r->exp_id, end, err2, sizeof err2) != 0 && rc == RUN_OK) {
        snprintf(err, errlen, "%s", err2);
        rc = RUN_BAD_INPUT;
    }
    store_close(r->s);
    free(r->ml.m), free(r->sel);
    for (int i = 0; i < r->nover; i++) free(r->over[i].rest);
    free(r->over);
    if (rc != RUN_OK) return rc;
    if (r->interrupted) {
        if (!o->quiet) fprintf(stderr, "routebench run: interrupted; rerun the same command to resume\n");
        return RUN_INTERRUPTED;
    }
    if (!o->quiet)
        fprintf(stderr, "routebench run: %s: %d run in this invocation, %d failed, %d noisy; results in %s\n",
                r->e->name, r->pr.ran, r->nfailed, r->nnoisy, o->db_path);
    return r->nfailed ? RUN_SOME_FAILED : RUN_OK;
}

int runner_run(const experiment *e, const run_options *o, char *err, size_t errlen) {
    run_ctx r;
    memset(&r, 0, sizeof r);
    r.e = e, r.o = o, r.exec = o->exec ? o->exec : runner_exec_default;
    int rc = open_run(&r, err, errlen);
    if (rc == RUN_OK) rc = register_selected(&r, err, errlen);
    if (rc == RUN_OK) rc = count_to_run(&r, err, errlen);
    r.pr.tty = isatty(2), r.pr.quiet = o->quiet, r.pr.total = r.nsel, r.pr.finished = r.nsel - r.pr.to_run;
    char ckdir[600];
    snprintf(ckdir, sizeof ckdir, "%s.ckpt", o->db_path);
    r.pr.ckpt_dir = o->checkpoint_every_s >= 0 ? ckdir : NULL;
    r.pr.ckpt_every = o->checkpoint_every_s > 0 ? o->checkpoint_every_s : RUN_CHECKPOINT_EVERY;
    if (rc == RUN_OK && !o->quiet)
        fprintf(stderr, "routebench run: %s: %d trials selected of %d, %d to run, database %s%s\n", e->name, r.nsel,
                e->ntrials, r.pr.to_run, o->db_path, r.stale ? " (trials of a killed run marked interrupted)" : "");
    for (int i = 0; i < r.nsel && rc == RUN_OK && !r.interrupted; i++) {
        if (runner_should_stop()) r.interrupted = 1;
        else rc = run_one(&r, &e->trials[r.sel[i]], err, errlen);
    }
    if (rc == RUN_OK && !r.interrupted) rc = wait_elsewhere(&r, err, errlen);
    if (rc == RUN_OK && !r.interrupted) measure_after(&r);
    if (rc != RUN_OK && r.s == NULL) return rc;
    if (r.pr.ckpt_dir) rmdir(r.pr.ckpt_dir); /* when no trial left a checkpoint in it */
    return end_run(&r, rc, err, errlen);
}
