/* test_train.c: the training loop: the same seed and thread count give a
 * bit-identical loss curve (and another seed does not), gradient
 * accumulation over micro-batches matches one big batch, a diverging run
 * stops with a clear message, evaluation reports accuracy where the task has
 * one, the whole-step benchmark fills its figures, and configuration by name
 * accepts and refuses what it should. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tap.h"
#include "util/threads.h"
#include "model/train.h"
#include "testutil.h"

#define MAXS 64

typedef struct {
    int n, neval;
    double loss[MAXS];
    double eval_loss, eval_acc;
} curve;

static void on_step(void *ctx, const train_step_info *s) {
    curve *c = ctx;
    if (c->n < MAXS) c->loss[c->n++] = s->loss;
}
static void on_eval(void *ctx, const train_eval_info *e) {
    curve *c = ctx;
    c->neval++;
    c->eval_loss = e->eval_loss;
    c->eval_acc = e->accuracy;
}

static void small(train_config *c) {
    tu_small_model(c, "copy", 8, 32, 32, 4, 12, NULL);
    c->lr = 3e-3f;
    c->eval_batches = 2;
}

static int run(const train_config *c, curve *cv, train_result *r, char *err, size_t errlen) {
    memset(cv, 0, sizeof *cv);
    train_hooks h = {cv, on_step, on_eval, NULL, NULL};
    return train_run(c, &h, r, err, errlen);
}

int main(void) {
    char err[512];
    train_config c;
    train_result r;
    curve a, b;

    /* two threads for the determinism pair (the thread count is part of the
     * promise); the rest runs on one, which is quicker on a shared machine */
    rb_set_threads(2);
    small(&c);
    c.steps = 8;
    int ra = run(&c, &a, &r, err, sizeof err);
    ok(ra == 0, "a small copy run trains (%s)", ra ? err : "ok");
    int rb = run(&c, &b, &r, err, sizeof err);
    ok(rb == 0 && a.n == 8 && b.n == 8 && memcmp(a.loss, b.loss, sizeof a.loss) == 0,
       "same seed, 2 threads: bit-identical loss curves (%d steps, last %.6f)", a.n, a.loss[7]);
    ok(isfinite(r.accuracy) && r.accuracy >= 0 && r.accuracy <= 1 && isfinite(r.final_eval_loss) &&
           fabs(r.bits_per_token - r.final_eval_loss / log(2)) < 1e-12 && b.neval == 1,
       "copy: final evaluation with accuracy %.3f, loss %.4f, %.4f bits/token", r.accuracy, r.final_eval_loss,
       r.bits_per_token);
    c.seed = 2;
    run(&c, &b, &r, err, sizeof err);
    ok(memcmp(a.loss, b.loss, sizeof a.loss) != 0, "another seed gives another curve");
    rb_set_threads(1);

    /* one batch of 4 == two accumulated micro-batches of 2 (same sequences, other summation order) */
    small(&c);
    c.steps = 5;
    c.clip = 0; /* clipping is nonlinear; the point here is the summed gradient */
    run(&c, &a, &r, err, sizeof err);
    c.batch = 2;
    c.accum = 2;
    run(&c, &b, &r, err, sizeof err);
    double worst = 0;
    for (int i = 0; i < 5; i++) worst = fmax(worst, fabs(a.loss[i] - b.loss[i]));
    diag("accumulation: worst loss difference over 5 steps %.3g", worst);
    ok(b.n == 5 && worst < 1e-4, "gradient accumulation over 2 micro-batches matches one batch of 4");

    /* evaluation every 4 steps; random task has no accuracy */
    small(&c);
    snprintf(c.task, sizeof c.task, "random");
    c.eval_every = 4;
    run(&c, &a, &r, err, sizeof err);
    ok(a.neval == 3 + 1 - 1 && isnan(r.accuracy) && isfinite(r.test_loss),
       "eval_every 4 of 12 steps: evaluations at 4, 8 and the end; no accuracy for random (%d)", a.neval);

    /* end to end: content-based attention solves the copy task on sequences
     * it never saw (the validation split shares no w with training) */
    small(&c);
    c.d_model = 64;
    c.batch = 16;
    c.steps = 250;
    c.eval_batches = 4;
    rb = run(&c, &a, &r, err, sizeof err);
    ok(rb == 0 && r.accuracy > 0.9, "dense learns the copy task: validation accuracy %.3f after 250 steps (loss %.4f)",
       r.accuracy, r.final_eval_loss);

    /* divergence is an error with the step */
    small(&c);
    c.lr = 1e30f;
    c.warmup = 0;
    c.clip = 0;
    int rn = run(&c, &a, &r, err, sizeof err);
    ok(rn != 0 && strstr(err, "became") && strstr(err, "at step"), "a diverging run stops: %s", err);

    /* the whole-step benchmark */
    small(&c);
    rb = train_bench_step(&c, 3, 1, 0, &r, err, sizeof err);
    ok(rb == 0 && r.median_step_ms > 0 && r.fwd_ms > 0 && r.bwd_ms > 0 && r.flops_per_step > 0 &&
           r.arena_peak > 0 && r.arena_peak <= r.arena_bytes && r.params > 0,
       "bench step: %.3f ms (fwd %.3f, bwd %.3f, opt %.3f), %.3g flops, arena peak %zu", r.median_step_ms, r.fwd_ms,
       r.bwd_ms, r.opt_ms, r.flops_per_step, r.arena_peak);

    /* a bench whose N steps take less than min_time adds steps until it
     * has sampled that long, so the machine's load over it can be read */
    small(&c);
    rb = train_bench_step(&c, 2, 1, 0.3, &r, err, sizeof err);
    ok(rb == 0 && r.steps_timed > 2 && r.steps_timed * r.step_ms_max >= 300 && !isnan(r.other_cpu),
       "bench with min_time 0.3 s: %d steps of %.3f ms median, other_cpu %.2f", r.steps_timed, r.median_step_ms,
       r.other_cpu);
    rb = train_bench_step(&c, 2, 1, 0, &r, err, sizeof err);
    ok(rb == 0 && r.steps_timed == 2, "and with min_time 0 exactly the steps asked for (%d)", r.steps_timed);

    /* configuration by name */
    train_config_default(&c);
    int s1 = train_config_set(&c, "d-model", "64", err, sizeof err);
    int s2 = train_config_set(&c, "clusters", "auto", err, sizeof err);
    int s3 = train_config_set(&c, "pos", "sinusoidal", err, sizeof err);
    ok(s1 == 0 && s2 == 0 && s3 == 0 && c.d_model == 64 && c.attn.clusters == 0 && c.pos == TRAIN_POS_SINUSOIDAL,
       "options set by name (dashes or underscores)");
    ok(train_config_set(&c, "d_modle", "64", err, sizeof err) != 0 && strstr(err, "unknown"),
       "an unknown option is refused: %s", err);
    ok(train_config_set(&c, "layers", "4x", err, sizeof err) != 0 && strstr(err, "expected an integer"),
       "a malformed number is refused: %s", err);
    train_config_default(&c);
    c.heads = 3;
    ok(train_config_check(&c, err, sizeof err) != 0 && strstr(err, "divide"), "heads must divide d_model: %s", err);
    train_config_default(&c);
    snprintf(c.backend, sizeof c.backend, "nosuch");
    ok(train_config_check(&c, err, sizeof err) != 0 && strstr(err, "unknown backend"), "unknown backend: %s", err);
    train_config d;
    train_config_default(&c);
    train_config_default(&d);
    d.lr = 1;
    ok(train_config_hash(&c) == train_config_hash(&d), "the config hash ignores the optimiser");
    d.d_model = 128;
    ok(train_config_hash(&c) != train_config_hash(&d), "the config hash covers the model shape");

    /* the command line (RB is set by make check): exit codes, help, summary */
    const char *rbin = getenv("RB");
    if (!rbin) {
        skip("RB not set: routebench train's command line not checked");
    } else {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s train --help | grep -q -- '--local-layers'", rbin);
        ok(system(cmd) == 0, "train --help documents the flags");
        snprintf(cmd, sizeof cmd, "%s train --layers 2x 2>/dev/null", rbin);
        int st = system(cmd);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a bad flag value exits 2");
        snprintf(cmd, sizeof cmd, "%s train --no-such-flag 1 2>/dev/null", rbin);
        st = system(cmd);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "an unknown flag exits 2");
        snprintf(cmd, sizeof cmd, "%s train --data /nonexistent/x.txt 2>&1 | grep -q 'make data'", rbin);
        ok(system(cmd) == 0, "a missing corpus says to run make data");
        snprintf(cmd, sizeof cmd,
                 "%s train --task copy --d-model 16 --layers 1 --heads 2 --seq 16 --batch 2 --steps 3 --threads 1 "
                 "2>/tmp/rb_train_err.$$ | grep -q '^validation: loss' && grep -q '^step 3/3' /tmp/rb_train_err.$$; "
                 "r=$?; rm -f /tmp/rb_train_err.$$; exit $r",
                 rbin);
        ok(system(cmd) == 0, "a short run prints plain progress lines (not a terminal) and the evaluation");
    }
    return tap_done();
}
