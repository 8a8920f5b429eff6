/* test_options.c: every training option changes the run the way `routebench
 * train --help` and the README document it, checked through the C API
 * (train_config fields, train_run, the model), never through the command line
 * or by copying the code's output.
 *
 * The optimiser is checked from the outside: a run is started from a
 * checkpoint this test writes (random parameters everywhere, so decay of
 * biases and norms would show), stopped after step s (stop_after) and saved;
 * from the parameters and AdamW moments before and after a step, the step is
 * recomputed in double from the documented formulas -- the learning rate of
 * the documented schedule (linear warm-up from lr/warmup at step 1 to lr at
 * step warmup, cosine down to min_lr at the last step), AdamW with bias
 * correction, decoupled weight decay on matrices and embeddings only, the
 * gradient clipped to the global norm `clip` -- and every parameter must land
 * where the formulas say. The gradient itself is computed independently by
 * running the model on the same first batch.
 *
 * At the end, every key of train_config_keys() (the options of `routebench
 * train --help`) must be listed in the coverage table below with the test
 * that checks it, so a new option without a test fails here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn/attn.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/tasks.h"
#include "model/train.h"
#include "tap.h"
#include "util/common.h"
#include "util/threads.h"

static char dir[256];

/* A small dense model on the random task: milliseconds per step. */
static void base(train_config *c) {
    train_config_default(c);
    snprintf(c->task, sizeof c->task, "random");
    c->random_vocab = 16;
    c->d_model = 16, c->layers = 1, c->heads = 2, c->mlp_mult = 2, c->seq = 16, c->batch = 2;
    c->steps = 10, c->warmup = 3, c->lr = 1e-2f, c->min_lr = 2e-3f;
    c->weight_decay = 0.0f, c->clip = 0.0f;
    c->eval_batches = 1;
}

/* ---- the documented schedule -------------------------------------------- */

/* README: linear warm-up, then cosine decay to min_lr at the last step;
 * train --help: warmup default min(100, steps/10), min_lr default lr/10. */
static double doc_lr(const train_config *c, int s) {
    int W = c->warmup >= 0 ? c->warmup : (c->steps / 10 < 100 ? c->steps / 10 : 100);
    double lr = c->lr, lo = c->min_lr >= 0 ? c->min_lr : c->lr / 10;
    if (W > 0 && s <= W) return lr * s / W;
    if (c->steps <= W) return lr;
    return lo + 0.5 * (lr - lo) * (1 + cos(M_PI * (double)(s - W) / (c->steps - W)));
}

/* ---- optimiser state through checkpoints --------------------------------- */

typedef struct {
    size_t n;
    float *p, *m, *v;
    int step;
} state;

static void state_free(state *s) { free(s->p), free(s->m), free(s->v), memset(s, 0, sizeof *s); }

static int read_state(const train_config *c, const char *path, state *s) {
    train_config cc = *c;
    char err[512];
    if (train_config_check(&cc, err, sizeof err)) return diag("%s", err), -1;
    model *m = model_create(&cc, err, sizeof err);
    rb_rng rng;
    if (!m || checkpoint_load(path, m, &s->step, &rng, train_config_hash(&cc), err, sizeof err)) {
        diag("reading %s: %s", path, err);
        model_free(m);
        return -1;
    }
    s->n = m->nparams;
    s->p = mallocCheck(s->n * sizeof(float)), s->m = mallocCheck(s->n * sizeof(float));
    s->v = mallocCheck(s->n * sizeof(float));
    memcpy(s->p, m->params_mem, s->n * sizeof(float));
    memcpy(s->m, m->m_mem, s->n * sizeof(float));
    memcpy(s->v, m->v_mem, s->n * sizeof(float));
    model_free(m);
    return 0;
}

/* The start: the model of c with every parameter N(0, 0.3) (biases and norm
 * gains too, so decoupled decay on them would show), zero moments, step 0,
 * and the training stream where a fresh run starts it. */
static int write_start(const train_config *c, const char *path) {
    train_config cc = *c;
    char err[512];
    if (train_config_check(&cc, err, sizeof err)) return diag("%s", err), -1;
    model *m = model_create(&cc, err, sizeof err);
    if (!m) return diag("%s", err), -1;
    rb_rng r;
    rb_rng_seed(&r, 4242);
    for (size_t i = 0; i < m->nparams; i++) m->params_mem[i] = 0.3f * rb_rng_normal(&r);
    rb_rng_seed(&r, task_stream_seed(cc.seed, TASK_TRAIN, 0));
    int rc = checkpoint_save(path, m, 0, &r, &cc, err, sizeof err);
    if (rc) diag("%s", err);
    model_free(m);
    return rc;
}

typedef struct {
    int n;
    double lr[256], loss[256], gnorm[256];
} steps_seen;

static void on_step(void *ctx, const train_step_info *s) {
    steps_seen *x = ctx;
    if (s->step < 256) x->lr[s->step] = s->lr, x->loss[s->step] = s->loss, x->gnorm[s->step] = s->grad_norm;
    x->n++;
}

/* Train c from `from` for `stop` steps and read the state after them. */
static int run_to(const train_config *c, const char *from, int stop, state *s, steps_seen *seen, train_result *res) {
    train_config cc = *c;
    char err[512], out[512];
    snprintf(out, sizeof out, "%s/run.ckpt", dir);
    snprintf(cc.load, sizeof cc.load, "%s", from ? from : "");
    snprintf(cc.save, sizeof cc.save, "%s", out);
    cc.stop_after = stop;
    steps_seen local;
    memset(&local, 0, sizeof local);
    train_hooks h = {seen ? seen : &local, on_step, NULL, NULL};
    train_result r;
    if (train_run(&cc, &h, res ? res : &r, err, sizeof err)) return diag("train_run: %s", err), -1;
    return s ? read_state(c, out, s) : 0;
}

/* Which parameters README's "weight decay on matrices and embeddings" covers:
 * in the order and shapes model.h lists, wte, wpe, qkvw, attprojw, fcw and
 * fcprojw decay; norm gains and biases do not. */
static unsigned char *doc_decay_mask(const train_config *c0) {
    train_config c = *c0;
    char err[256];
    train_config_check(&c, err, sizeof err);
    size_t V = c.vocab, C = c.d_model, L = c.layers, T = c.seq, F = (size_t)c.mlp_mult * C;
    size_t sizes[16] = {V * C, c.pos == TRAIN_POS_LEARNED ? T * C : 0, L * C, L * C, L * 3 * C * C, L * 3 * C,
                        L * C * C, L * C, L * C, L * C, L * F * C, L * F, L * C * F, L * C, C, C};
    const int decays[16] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};
    size_t n = 0;
    for (int i = 0; i < 16; i++) n += sizes[i];
    unsigned char *mask = mallocCheck(n), *p = mask;
    for (int i = 0; i < 16; i++) memset(p, decays[i], sizes[i]), p += sizes[i];
    return mask;
}

/* Worst |after - documented AdamW step from before| over the parameters, in
 * units of the step's learning rate; gsq: the squared gradient the moments
 * imply must agree between m and v (the betas as configured). */
static double adamw_residual(const train_config *c, const state *b, const state *a, int s, double lr,
                             double *moment_err) {
    unsigned char *mask = doc_decay_mask(c);
    double b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay, worst = 0, merr = 0, g2max = 0;
    double bc1 = 1 - pow(b1, s), bc2 = 1 - pow(b2, s);
    for (size_t i = 0; i < a->n; i++) {
        /* the step's gradient as m and as v imply it (relative to the largest) */
        double g_m = (a->m[i] - b1 * b->m[i]) / (1 - b1), g2_v = (a->v[i] - b2 * b->v[i]) / (1 - b2);
        merr = fmax(merr, fabs(g_m * g_m - g2_v));
        g2max = fmax(g2max, g2_v);
        double upd = (a->m[i] / bc1) / (sqrt(a->v[i] / bc2) + eps) + (mask[i] ? wd * b->p[i] : 0);
        double want = b->p[i] - lr * upd;
        double r = fabs(a->p[i] - want) / lr;
        if (!(r <= worst)) worst = r;
    }
    free(mask);
    *moment_err = merr / g2max;
    return worst;
}

/* The gradient of the first step, computed here: the model of c with the
 * start checkpoint's parameters on the first `accum` batches of the training
 * stream, summed with weight 1/accum (unclipped). */
static float *first_gradient(const train_config *c0, const char *start, double *norm) {
    train_config c = *c0;
    char err[512];
    train_config_check(&c, err, sizeof err);
    model *m = model_create(&c, err, sizeof err);
    task *t = task_open(&c, err, sizeof err);
    int step;
    rb_rng rng;
    if (!m || !t || checkpoint_load(start, m, &step, &rng, train_config_hash(&c), err, sizeof err)) {
        diag("first_gradient: %s", err);
        model_free(m), task_free(t);
        return NULL;
    }
    size_t BT = (size_t)c.batch * c.seq;
    int *tok = mallocCheck(BT * sizeof(int)), *tgt = mallocCheck(BT * sizeof(int));
    float *mask = mallocCheck(BT * sizeof(float));
    model_zero_grad(m);
    for (int a = 0; a < c.accum; a++) {
        task_batch(t, TASK_TRAIN, &rng, c.batch, c.seq, tok, tgt, mask, err, sizeof err);
        model_forward(m, tok, tgt, mask, ATTN_TRAIN);
        model_backward(m, 1.0f / (float)c.accum);
    }
    float *g = mallocCheck(m->nparams * sizeof(float));
    memcpy(g, m->grads_mem, m->nparams * sizeof(float));
    double ss = 0;
    for (size_t i = 0; i < m->nparams; i++) ss += (double)g[i] * g[i];
    *norm = sqrt(ss);
    free(tok), free(tgt), free(mask);
    model_free(m), task_free(t);
    return g;
}

/* ---- the schedule ------------------------------------------------------- */

static void test_schedule(void) {
    char start[512];
    snprintf(start, sizeof start, "%s/start.ckpt", dir);
    train_config c;
    base(&c);
    c.steps = 12, c.warmup = 4, c.lr = 2e-2f, c.min_lr = 1e-3f;
    steps_seen seen;
    memset(&seen, 0, sizeof seen);
    write_start(&c, start);
    int rc = run_to(&c, start, 0, NULL, &seen, NULL);
    double w = 0;
    for (int s = 1; s <= c.steps; s++) w = fmax(w, fabs(seen.lr[s] - doc_lr(&c, s)) / doc_lr(&c, s));
    ok(rc == 0 && seen.n == 12 && fabs(seen.lr[1] - 2e-2 / 4) < 1e-9 && fabs(seen.lr[4] - 2e-2) < 1e-9 &&
           fabs(seen.lr[12] - 1e-3) < 1e-9 && w < 1e-6,
       "reported lr: %.4g at step 1 (lr/warmup), %.4g at the end of warm-up (lr), %.4g at the last step (min_lr); "
       "every step within %.1e of linear warm-up + cosine",
       seen.lr[1], seen.lr[4], seen.lr[12], w);

    /* the lr actually applied: AdamW recomputed around steps 1, warmup, warmup + 1 and the last */
    const int at[4] = {1, 4, 5, 12};
    state prev, cur;
    memset(&prev, 0, sizeof prev);
    for (int k = 0; k < 4; k++) {
        int s = at[k];
        if (s == 1) read_state(&c, start, &prev);
        else run_to(&c, start, s - 1, &prev, NULL, NULL);
        run_to(&c, start, s, &cur, NULL, NULL);
        double me, r = adamw_residual(&c, &prev, &cur, s, doc_lr(&c, s), &me);
        /* what the update implies the learning rate was: |Δθ| / |documented update at lr 1| */
        double num = 0, den = 0;
        unsigned char *mask = doc_decay_mask(&c);
        for (size_t i = 0; i < cur.n; i++) {
            double u = (cur.m[i] / (1 - pow(c.beta1, s))) / (sqrt(cur.v[i] / (1 - pow(c.beta2, s))) + c.eps) +
                       (mask[i] ? c.weight_decay * prev.p[i] : 0);
            num += fabs(prev.p[i] - cur.p[i]) * fabs(u), den += u * u;
        }
        free(mask);
        ok(cur.step == s && r < 2e-3 && me < 1e-3,
           "step %d applies lr %.5g (documented %.5g): every parameter within %.1e lr of the AdamW step", s,
           num / den, doc_lr(&c, s), r);
        state_free(&prev);
        prev = cur;
        memset(&cur, 0, sizeof cur);
    }
    state_free(&prev);

    /* defaults: warmup min(100, steps/10), min_lr lr/10 */
    base(&c);
    c.steps = 40, c.warmup = -1, c.min_lr = -1, c.lr = 1e-2f;
    memset(&seen, 0, sizeof seen);
    run_to(&c, NULL, 0, NULL, &seen, NULL);
    ok(fabs(seen.lr[1] - 1e-2 / 4) < 1e-9 && fabs(seen.lr[4] - 1e-2) < 1e-9 && fabs(seen.lr[40] - 1e-3) < 1e-9,
       "defaults: 40 steps warm up over 4 (lr %.4g at 1, %.4g at 4) and end at lr/10 (%.4g)", seen.lr[1], seen.lr[4],
       seen.lr[40]);
    /* warmup 0: the first step already at lr */
    base(&c);
    c.warmup = 0;
    memset(&seen, 0, sizeof seen);
    run_to(&c, NULL, 0, NULL, &seen, NULL);
    ok(fabs(seen.lr[1] - doc_lr(&c, 1)) < 1e-9 && seen.lr[1] > 0.97 * c.lr && fabs(seen.lr[c.steps] - c.min_lr) < 1e-9,
       "warmup 0: no warm-up, step 1 already on the cosine near lr (%.4g of %.4g), the last at min_lr (%.4g)",
       seen.lr[1], (double)c.lr, seen.lr[c.steps]);
    /* stop_after: the schedule still runs to `steps` */
    base(&c);
    c.steps = 20;
    train_result res;
    memset(&seen, 0, sizeof seen);
    run_to(&c, NULL, 7, NULL, &seen, &res);
    ok(res.steps_done == 7 && seen.n == 7 && fabs(seen.lr[7] - doc_lr(&c, 7)) < 1e-9,
       "stop_after 7 of 20 steps: 7 steps done, lr at step 7 from the 20-step schedule (%.4g)", seen.lr[7]);
}

/* ---- AdamW options -------------------------------------------------------- */

/* One step from the start with c; the residual against the documented step. */
static void adam_case(const char *what, train_config c, int s_check) {
    char start[512];
    snprintf(start, sizeof start, "%s/start.ckpt", dir);
    write_start(&c, start);
    state prev, cur;
    if (s_check == 1) read_state(&c, start, &prev);
    else run_to(&c, start, s_check - 1, &prev, NULL, NULL);
    run_to(&c, start, s_check, &cur, NULL, NULL);
    double me, r = adamw_residual(&c, &prev, &cur, s_check, doc_lr(&c, s_check), &me);
    /* the same step recomputed with the default value of the option must NOT fit */
    train_config alt = c;
    double me2, r2;
    if (strstr(what, "beta1")) alt.beta1 = 0.9f;
    if (strstr(what, "beta2")) alt.beta2 = 0.95f;
    if (strstr(what, "eps")) alt.eps = 1e-8f;
    if (strstr(what, "weight_decay")) alt.weight_decay = 0.0f;
    r2 = adamw_residual(&alt, &prev, &cur, s_check, doc_lr(&c, s_check), &me2);
    ok(r < 2e-3 && me < 1e-3 && (r2 > 2e-2 || me2 > 1e-2),
       "%s: step %d is the documented AdamW step (worst %.1e lr, moments %.1e); with the default value it would "
       "not be (%.1e lr, moments %.1e)",
       what, s_check, r, me, r2, me2);
    state_free(&prev), state_free(&cur);
}

static void test_adamw_options(void) {
    train_config c;
    base(&c);
    c.beta1 = 0.5f;
    adam_case("beta1 0.5", c, 2);
    base(&c);
    c.beta2 = 0.7f;
    adam_case("beta2 0.7", c, 2);
    base(&c);
    c.eps = 3e-2f; /* about the size of the gradients here: the step shrinks where |g| is small */
    adam_case("eps 3e-2", c, 1);
    base(&c);
    c.weight_decay = 0.3f;
    adam_case("weight_decay 0.3 (matrices and embeddings only)", c, 1);
    base(&c);
    c.weight_decay = 0.3f, c.beta1 = 0.6f, c.beta2 = 0.8f, c.eps = 1e-3f;
    adam_case("weight_decay, beta1, beta2 and eps together", c, 3);
}

/* ---- clip and accum: the gradient the step used --------------------------- */

/* With zero moments, step 1's m is (1 - beta1) g: the gradient the optimiser
 * used, compared with the one computed here. */
static void grad_case(const char *what, train_config c, const train_config *gc, double clip_to) {
    char start[512];
    snprintf(start, sizeof start, "%s/start.ckpt", dir);
    write_start(&c, start);
    state cur;
    steps_seen seen;
    memset(&seen, 0, sizeof seen);
    run_to(&c, start, 1, &cur, &seen, NULL);
    double norm;
    float *g = first_gradient(gc, start, &norm);
    if (!g) {
        ok(0, "%s: no reference gradient", what);
        return;
    }
    double f = clip_to > 0 && norm > clip_to ? clip_to / norm : 1.0, worst = 0, used = 0, gmax = 0;
    for (size_t i = 0; i < cur.n; i++) {
        double u = cur.m[i] / (1 - c.beta1);
        used += u * u;
        worst = fmax(worst, fabs(u - f * g[i]));
        gmax = fmax(gmax, fabs(f * g[i]));
    }
    used = sqrt(used);
    ok(fabs(seen.gnorm[1] - norm) / norm < 1e-4 && worst / gmax < 1e-4 &&
           fabs(used - (clip_to > 0 && norm > clip_to ? clip_to : norm)) / used < 1e-4,
       "%s: reported norm %.4f (computed %.4f), the step used a gradient of norm %.4f equal to the computed one "
       "x %.4f (worst %.1e)",
       what, seen.gnorm[1], norm, used, f, worst / gmax);
    free(g);
    state_free(&cur);
}

static void test_gradient_options(void) {
    train_config c, g;
    base(&c);
    c.clip = 0.05f;
    g = c;
    grad_case("clip 0.05 (below the norm): scaled to norm 0.05", c, &g, 0.05);
    base(&c);
    c.clip = 1e6f;
    g = c;
    grad_case("clip 1e6 (above the norm): unchanged", c, &g, 1e6);
    base(&c);
    c.clip = 0;
    g = c;
    grad_case("clip 0: off", c, &g, 0);
    /* accum 2 of batch 2: the mean gradient of the same 4 sequences */
    base(&c);
    c.accum = 2;
    g = c;
    g.accum = 1, g.batch = 4;
    grad_case("accum 2 x batch 2 = one batch of 4", c, &g, 0);
    base(&c);
    c.accum = 2, c.clip = 0.05f;
    g = c;
    g.accum = 1, g.batch = 4;
    grad_case("accum 2 with clip 0.05: the summed gradient is clipped", c, &g, 0.05);
}

/* ---- cleanup -------------------------------------------------------------- */

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/rb_test_options_XXXXXX");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    rb_set_threads(1);
    test_schedule();
    test_adamw_options();
    test_gradient_options();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) diag("could not remove %s", dir);
    return tap_done();
}
