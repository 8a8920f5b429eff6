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
#include "util/params.h"
#include "util/common.h"
#include "util/threads.h"
#include "testutil.h"

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
    train_hooks h = {seen ? seen : &local, on_step, NULL, NULL, NULL};
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
        state_free(&prev); /* the state after the last step checked, not the one before this */
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
        state_free(&cur);
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
 * used, compared with the one computed here. clip_to < 0: clip at -clip_to
 * times the gradient's norm. */
static void grad_case(const char *what, train_config c, const train_config *gc, double clip_to) {
    char start[512];
    snprintf(start, sizeof start, "%s/start.ckpt", dir);
    write_start(&c, start);
    double norm;
    float *g = first_gradient(gc, start, &norm);
    if (!g) {
        ok(0, "%s: no reference gradient", what);
        return;
    }
    if (clip_to < 0) c.clip = (float)(-clip_to * norm), clip_to = c.clip;
    state cur;
    steps_seen seen;
    memset(&seen, 0, sizeof seen);
    run_to(&c, start, 1, &cur, &seen, NULL);
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
    g = c;
    grad_case("clip at 0.9 x the norm: scaled to it", c, &g, -0.9);
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

/* ---- routing options: commitment loss, decay, k-means iterations ----------- */

static void routing_base(train_config *c) {
    base(c);
    snprintf(c->backend, sizeof c->backend, "routing");
    c->layers = 2, c->attn.clusters = 2;
}

static void tokens_for(const model *m, int *tok, int *tgt) {
    for (int i = 0; i < m->B * m->T; i++) tok[i] = (i * 7 + i / 5) % m->V, tgt[i] = (i * 3 + 1) % m->V;
}

/* Sum over layers of commit_beta x the commitment loss each backend reports. */
static double reported_commit(model *m, double beta) {
    double t = 0;
    for (int l = 0; l < m->L; l++) {
        attn *a = model_layer_attn(m, l);
        attn_stat st[32];
        int n = a->be->stats ? a->be->stats(a, st, 32) : 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(st[i].name, "commit_loss")) t += beta * st[i].value;
    }
    return t;
}

static void test_commit_beta(void) {
    int tok[64], tgt[64];
    double loss[2], ce[2], commit[2];
    float *g[2];
    size_t np = 0;
    int cw_ok = 1;
    for (int k = 0; k < 2; k++) {
        train_config c;
        routing_base(&c);
        c.commit_beta = 0.5f, c.accum = k + 1;
        train_config cc = c;
        char err[256];
        train_config_check(&cc, err, sizeof err);
        model *m = model_create(&cc, err, sizeof err);
        for (int l = 0; l < m->L; l++) cw_ok &= model_layer_attn(m, l)->p.commit_weight == 0.5f / (float)(k + 1);
        tokens_for(m, tok, tgt);
        loss[k] = model_forward(m, tok, tgt, NULL, ATTN_EVAL);
        ce[k] = m->ce_loss;
        commit[k] = reported_commit(m, 0.5);
        model_zero_grad(m);
        model_backward(m, 1.0f / (float)(k + 1));
        np = m->nparams;
        g[k] = mallocCheck(np * sizeof(float));
        memcpy(g[k], m->grads_mem, np * sizeof(float));
        model_free(m);
    }
    ok(cw_ok, "commit_beta 0.5: each routing layer's backend gets commit_weight commit_beta / accum");
    ok(commit[0] > 1e-3 && fabs(loss[0] - ce[0] - commit[0]) <= 1e-6 * loss[0] &&
           fabs(loss[1] - ce[1] - commit[1]) <= 1e-6 * loss[1] && fabs(loss[1] - loss[0]) <= 1e-6 * loss[0],
       "commit_beta 0.5: the loss is cross-entropy + commit_beta x each layer's commitment loss (%.6f = %.6f + "
       "%.6f), the same with accum 2 (%.6f)",
       loss[0], ce[0], commit[0], loss[1]);
    /* the gradient of one micro-batch of accum 2 is half of accum 1's, commitment terms included */
    double w = 0, gm = 0;
    for (size_t i = 0; i < np; i++) w = fmax(w, fabs(g[1][i] - 0.5 * g[0][i])), gm = fmax(gm, fabs(g[0][i]));
    ok(w <= 1e-5 * gm, "accum 2: a micro-batch contributes half of the gradient, commitment terms included (%.1e)",
       w / gm);
    free(g[0]), free(g[1]);
    /* commit_beta 0: the loss is the cross-entropy */
    train_config c;
    routing_base(&c);
    c.commit_beta = 0;
    char err[256];
    train_config_check(&c, err, sizeof err);
    model *m = model_create(&c, err, sizeof err);
    tokens_for(m, tok, tgt);
    double l0 = model_forward(m, tok, tgt, NULL, ATTN_EVAL);
    ok(l0 == m->ce_loss && fabs(l0 - ce[0]) < 1e-9, "commit_beta 0: the loss is the cross-entropy alone (%.6f)", l0);
    model_free(m);
}

/* decay: after a training forward each centroid is decay x itself + (1 -
 * decay) x the mean of the normalised routing vectors nearest to it. */
static void test_decay(void) {
    train_config c;
    routing_base(&c);
    c.layers = 1, c.attn.decay = 0.7f;
    char err[256];
    train_config_check(&c, err, sizeof err);
    model *m = model_create(&c, err, sizeof err);
    attn *a = model_layer_attn(m, 0);
    int H = a->p.heads, K = a->p.clusters, d = a->p.head_dim, n = a->p.seq, B = a->p.batch;
    float *mu = a->be->centroids(a), *mu0 = mallocCheck(sizeof(float) * (size_t)H * K * d);
    rb_rng r;
    rb_rng_seed(&r, 8);
    for (int i = 0; i < H * K * d; i++) mu[i] = mu0[i] = 0.3f * rb_rng_normal(&r);
    int tok[64], tgt[64];
    tokens_for(m, tok, tgt);
    model_forward(m, tok, tgt, NULL, ATTN_TRAIN);
    const float *q;
    model_layer_qkv(m, 0, &q, NULL, NULL);
    double worst = 0, moved = 0;
    for (int h = 0; h < H; h++) {
        double sum[8][64] = {{0}};
        int cnt[8] = {0};
        for (int b = 0; b < B; b++)
            for (int i = 0; i < n; i++) {
                const float *v = q + (((size_t)b * H + h) * n + i) * d;
                double ss = 0, x[64], best = INFINITY;
                int bc = 0;
                for (int e = 0; e < d; e++) ss += (double)v[e] * v[e];
                for (int e = 0; e < d; e++) x[e] = v[e] / sqrt(ss + 1e-12);
                for (int cl = 0; cl < K; cl++) {
                    double dist = 0;
                    for (int e = 0; e < d; e++) dist += (x[e] - mu0[(h * K + cl) * d + e]) * (x[e] - mu0[(h * K + cl) * d + e]);
                    if (dist < best) best = dist, bc = cl;
                }
                cnt[bc]++;
                for (int e = 0; e < d; e++) sum[bc][e] += x[e];
            }
        const float *now = a->be->centroids(a);
        for (int cl = 0; cl < K; cl++)
            for (int e = 0; e < d; e++) {
                double old = mu0[(h * K + cl) * d + e];
                double want = cnt[cl] ? 0.7 * old + 0.3 * sum[cl][e] / cnt[cl] : old;
                worst = fmax(worst, fabs(now[(h * K + cl) * d + e] - want));
                moved = fmax(moved, fabs(now[(h * K + cl) * d + e] - old));
            }
    }
    ok(worst < 1e-5 && moved > 1e-2,
       "decay 0.7: a training pass moves each centroid to 0.7 x itself + 0.3 x the mean of its nearest normalised "
       "queries (worst %.1e, moved up to %.3f)",
       worst, moved);
    /* an evaluation pass does not move them */
    float keep[1024];
    memcpy(keep, a->be->centroids(a), sizeof(float) * (size_t)H * K * d);
    model_forward(m, tok, tgt, NULL, ATTN_EVAL);
    ok(memcmp(keep, a->be->centroids(a), sizeof(float) * (size_t)H * K * d) == 0, "an evaluation pass leaves them");
    free(mu0);
    model_free(m);
}

/* kmeans_iters: the centroids start as k-means++ seeds, which are routing
 * vectors of the first batch, and each Lloyd iteration can only lower the
 * k-means objective. */
static void test_kmeans_iters(void) {
    double obj[4];
    int seeds_are_data = 1, iters[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        train_config c;
        routing_base(&c);
        c.layers = 1, c.attn.clusters = 3, c.attn.kmeans_iters = iters[k];
        char err[256];
        train_config_check(&c, err, sizeof err);
        model *m = model_create(&c, err, sizeof err);
        int tok[64], tgt[64];
        tokens_for(m, tok, tgt);
        model_forward(m, tok, tgt, NULL, ATTN_EVAL);
        attn *a = model_layer_attn(m, 0);
        attn_stat st[32];
        int ns = a->be->stats(a, st, 32);
        for (int i = 0; i < ns; i++)
            if (!strcmp(st[i].name, "kmeans_objective")) obj[k] = st[i].value;
        if (iters[k] == 0) {
            const float *q;
            model_layer_qkv(m, 0, &q, NULL, NULL);
            int H = a->p.heads, K = a->p.clusters, d = a->p.head_dim, n = a->p.seq, B = a->p.batch;
            const float *mu = a->be->centroids(a);
            for (int h = 0; h < H; h++)
                for (int cl = 0; cl < K; cl++) {
                    double best = INFINITY;
                    for (int b = 0; b < B; b++)
                        for (int i = 0; i < n; i++) {
                            const float *v = q + (((size_t)b * H + h) * n + i) * d;
                            double ss = 0, dist = 0;
                            for (int e = 0; e < d; e++) ss += (double)v[e] * v[e];
                            for (int e = 0; e < d; e++) {
                                double x = v[e] / sqrt(ss + 1e-12) - mu[(h * K + cl) * d + e];
                                dist += x * x;
                            }
                            best = fmin(best, dist);
                        }
                    seeds_are_data &= best < 1e-10;
                }
        }
        model_free(m);
    }
    ok(seeds_are_data, "kmeans_iters 0: every centroid is one of the first batch's normalised queries (k-means++ seeds)");
    ok(obj[1] < obj[0] && obj[2] <= obj[1] * (1 + 1e-6),
       "kmeans_iters 0, 1, 3: the k-means objective falls with Lloyd iterations (%.4f, %.4f, %.4f)", obj[0], obj[1],
       obj[2]);
}

/* ---- the model's shape and inputs ----------------------------------------- */

/* model.h's parameter list: wte (V,C), wpe (T,C) when learned, per layer two
 * norms (2C each), qkv (3C x C + 3C), projection (C x C + C), fc (F x C + F),
 * fcproj (C x F + C), a final norm (2C). */
static size_t doc_nparams(const train_config *c) {
    size_t V = c->vocab, C = c->d_model, L = c->layers, T = c->seq, F = (size_t)c->mlp_mult * C;
    return V * C + (c->pos == TRAIN_POS_LEARNED ? T * C : 0) +
           L * (4 * C + 3 * C * C + 3 * C + C * C + C + F * C + F + C * F + C) + 2 * C;
}

static void test_shape_options(void) {
    struct {
        const char *what;
        int vocab, d_model, layers, heads, mlp_mult, seq, pos;
    } cs[] = {
        {"defaults of this test", 0, 16, 1, 2, 2, 16, TRAIN_POS_LEARNED},
        {"vocab 40", 40, 16, 1, 2, 2, 16, TRAIN_POS_LEARNED},
        {"d_model 24, heads 3", 0, 24, 1, 3, 2, 16, TRAIN_POS_LEARNED},
        {"layers 3", 0, 16, 3, 2, 2, 16, TRAIN_POS_LEARNED},
        {"mlp_mult 5", 0, 16, 1, 2, 5, 16, TRAIN_POS_LEARNED},
        {"seq 24", 0, 16, 1, 2, 2, 24, TRAIN_POS_LEARNED},
        {"pos sinusoidal", 0, 16, 1, 2, 2, 16, TRAIN_POS_SINUSOIDAL},
    };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        train_config c;
        base(&c);
        c.vocab = cs[k].vocab, c.d_model = cs[k].d_model, c.layers = cs[k].layers, c.heads = cs[k].heads;
        c.mlp_mult = cs[k].mlp_mult, c.seq = cs[k].seq, c.pos = cs[k].pos;
        char err[256];
        train_config_check(&c, err, sizeof err);
        model *m = model_create(&c, err, sizeof err);
        attn *a = model_layer_attn(m, 0);
        ok(m->nparams == doc_nparams(&c) && m->V == (cs[k].vocab ? cs[k].vocab : 16) && a->p.heads == c.heads &&
               a->p.head_dim == c.d_model / c.heads && a->p.seq == c.seq && a->p.batch == c.batch,
           "%s: %zu parameters as model.h lists them, vocab %d, attention of %d heads of %d over %d tokens",
           cs[k].what, m->nparams, m->V, a->p.heads, a->p.head_dim, a->p.seq);
        model_free(m);
    }
    /* pos: what is added to the token embedding */
    for (int pos = 0; pos < 2; pos++) {
        train_config c;
        base(&c);
        c.pos = pos;
        char err[256];
        train_config_check(&c, err, sizeof err);
        model *m = model_create(&c, err, sizeof err);
        int tok[64], tgt[64];
        tokens_for(m, tok, tgt);
        model_forward(m, tok, tgt, NULL, ATTN_EVAL);
        double worst = 0;
        int C = m->C;
        for (int b = 0; b < m->B; b++)
            for (int t = 0; t < m->T; t++)
                for (int i = 0; i < C; i++) {
                    /* README: the sinusoids are scaled to the rms of a token
                     * embedding at initialisation (std 0.02): 0.02 sqrt(2) */
                    double amp = 0.02 * sqrt(2.0);
                    double p = pos == TRAIN_POS_SINUSOIDAL
                                   ? amp * (i % 2 ? cos(t * pow(10000.0, -(double)(i - 1) / C))
                                                  : sin(t * pow(10000.0, -(double)i / C)))
                                   : m->params.wpe[(size_t)t * C + i];
                    double want = m->params.wte[(size_t)tok[b * m->T + t] * C + i] + p;
                    worst = fmax(worst, fabs(m->encoded[((size_t)b * m->T + t) * C + i] - want));
                }
        ok(worst < 1e-6, "pos %s: the input is the token embedding plus %s (worst %.1e)",
           pos ? "sinusoidal" : "learned", pos ? "0.02 sqrt(2) sin/cos of position / 10000^(2i/d_model)" : "the learned row of the position", worst);
        model_free(m);
    }
}

/* The attention options reach every layer's backend as documented. */
static void test_attention_options(void) {
    struct {
        const char *what, *backend, *layer_backends;
        int local_layers, window, clusters, local_heads, share_qk, assign, norm, heads;
    } cs[] = {
        {"backend local, window 8", "local", "", 0, 8, 0, -1, -1, 0, 0, 2},
        {"backend routing, clusters 3, share_qk 0, assign argmax, norm layernorm", "routing", "", 0, 0, 3, -1, 0,
         ATTN_ASSIGN_ARGMAX, ATTN_NORM_LAYERNORM, 2},
        {"backend hybrid, local_heads 1 of 4, window 4", "hybrid", "", 0, 4, 0, 1, -1, 0, 0, 4},
        {"local_layers 1 under routing", "routing", "", 1, 0, 0, -1, -1, 0, 0, 2},
        {"layer_backends dense,routing (wins over backend)", "local", "dense,routing", 1, 0, 0, -1, -1, 0, 0, 2},
    };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        train_config c;
        base(&c);
        c.layers = 2, c.heads = cs[k].heads;
        snprintf(c.backend, sizeof c.backend, "%s", cs[k].backend);
        snprintf(c.layer_backends, sizeof c.layer_backends, "%s", cs[k].layer_backends);
        c.local_layers = cs[k].local_layers, c.attn.window = cs[k].window, c.attn.clusters = cs[k].clusters;
        c.attn.local_heads = cs[k].local_heads, c.attn.share_qk = cs[k].share_qk, c.attn.assign = cs[k].assign;
        c.attn.norm = cs[k].norm;
        char err[256];
        train_config_check(&c, err, sizeof err);
        model *m = model_create(&c, err, sizeof err);
        int tok[64], tgt[64];
        tokens_for(m, tok, tgt);
        model_forward(m, tok, tgt, NULL, ATTN_EVAL);
        int good = 1;
        char names[128] = "";
        for (int l = 0; l < 2; l++) {
            attn *a = model_layer_attn(m, l);
            const char *want = cs[k].layer_backends[0] ? (l ? "routing" : "dense")
                               : l < cs[k].local_layers ? "local" : cs[k].backend;
            good &= !strcmp(a->be->name, want);
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", l ? "," : "", a->be->name);
            if (cs[k].window) good &= a->p.window == cs[k].window;
            if (!strcmp(a->be->name, "routing") || !strcmp(a->be->name, "hybrid")) {
                const int *mem;
                int K = cs[k].clusters ? cs[k].clusters : 4; /* auto: round(sqrt(16)) */
                int h = cs[k].local_heads > 0 ? cs[k].local_heads : 0; /* the first routed head */
                good &= a->p.clusters == K && a->be->routes(a, 0, h, K - 1, 0, &mem) >= 0 &&
                        a->be->routes(a, 0, h, K, 0, &mem) < 0;
                good &= a->p.share_qk == (cs[k].share_qk >= 0 ? cs[k].share_qk : 1) && a->p.assign == cs[k].assign &&
                        a->p.norm == cs[k].norm;
                if (cs[k].local_heads > 0)
                    good &= a->p.local_heads == cs[k].local_heads && a->be->routes(a, 0, cs[k].local_heads - 1, 0, 0, &mem) < 0;
            }
        }
        ok(good, "%s: layers %s with the parameters given", cs[k].what, names);
        model_free(m);
    }
}

/* The parameters of the head-group backends reach the layer, and change its
 * cost the way the README says: hybrid's local_window sets its local heads'
 * block, strided's stride and strided_heads its pattern, lsh's hashes its
 * rounds and buckets its hash range (one layer; flops from the backend's own
 * count, which test_analytic checks against the pairs each pattern visits). */
static void test_group_options(void) {
    struct {
        const char *what, *backend;
        int heads, window, local_heads, local_window, stride, strided_heads, hashes, buckets, lsh_heads;
    } cs[] = {
        {"hybrid, local_window 4 beside routing window 8", "hybrid", 2, 8, 1, 4, 0, -1, 0, 0, 0},
        {"strided, stride 8, strided_heads 2 of 2", "strided", 2, 0, -1, 0, 8, 2, 0, 0, 0},
        {"lsh, hashes 2, buckets 4", "lsh", 2, 4, -1, 0, 0, -1, 2, 4, 0},
        {"hybrid, lsh_heads 2 of 4 (hashes 2) beside 1 local and 1 routing", "hybrid", 4, 8, 1, 0, 0, -1, 2, 0, 2},
    };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        double fl[2] = {0, 0};
        int good = 1;
        for (int v = 0; v < 2; v++) { /* v 0: the option given; v 1: at its default */
            train_config c;
            base(&c);
            c.layers = 1, c.heads = cs[k].heads;
            snprintf(c.backend, sizeof c.backend, "%s", cs[k].backend);
            c.attn.window = cs[k].window, c.attn.local_heads = cs[k].local_heads;
            if (!v) {
                c.attn.local_window = cs[k].local_window, c.attn.stride = cs[k].stride;
                c.attn.strided_heads = cs[k].strided_heads, c.attn.hashes = cs[k].hashes;
                c.attn.buckets = cs[k].buckets, c.attn.lsh_heads = cs[k].lsh_heads;
            }
            char err[256];
            if (train_config_check(&c, err, sizeof err)) {
                good = 0, diag("%s: %s", cs[k].what, err);
                continue;
            }
            model *m = model_create(&c, err, sizeof err);
            attn *a = m ? model_layer_attn(m, 0) : NULL;
            if (!a) {
                good = 0;
                continue;
            }
            if (!v) {
                if (cs[k].local_window) good &= a->p.local_window == cs[k].local_window;
                if (cs[k].stride) good &= a->p.stride == cs[k].stride && a->p.strided_heads == cs[k].strided_heads;
                if (cs[k].hashes && !cs[k].lsh_heads)
                    good &= a->p.hashes == cs[k].hashes && a->p.buckets == cs[k].buckets;
                if (cs[k].lsh_heads) {
                    attn_head_group g[8];
                    int ng = attn_head_groups(a->be, &a->p, g, 8);
                    good &= a->p.lsh_heads == cs[k].lsh_heads && ng == 3 && !strcmp(g[1].be->name, "lsh") &&
                            g[1].heads == cs[k].lsh_heads && g[1].p.hashes == cs[k].hashes;
                }
            }
            fl[v] = a->be->flops(&a->p, ATTN_PASS_FWD);
            model_free(m);
        }
        ok(good && fl[0] > 0 && fl[1] > 0 && fl[0] != fl[1],
           "%s: reaches the layer and changes its forward flops (%.0f, at the defaults %.0f)", cs[k].what, fl[0], fl[1]);
    }
}

/* ---- step FLOPs, evaluation, splits --------------------------------------- */

/* train.h: 6 x (matmul weights incl. the tied output) x tokens + every
 * layer's attention flops (forward + backward), per micro-batch. */
static void test_flops_per_step(void) {
    const int cfg[4][4] = {{2, 16, 1, 1}, {4, 16, 1, 1}, {2, 24, 1, 1}, {2, 16, 3, 2}}; /* batch, seq, accum, layers */
    for (int k = 0; k < 4; k++) {
        train_config c;
        base(&c);
        snprintf(c.backend, sizeof c.backend, "local");
        c.attn.window = 8;
        c.batch = cfg[k][0], c.seq = cfg[k][1], c.accum = cfg[k][2], c.layers = cfg[k][3];
        char err[256];
        train_config_check(&c, err, sizeof err);
        double C = c.d_model, F = c.mlp_mult * C, V = c.vocab, tokens = (double)c.batch * c.seq * c.accum;
        double want = 6 * (c.layers * (4 * C * C + 2 * C * F) + V * C) * tokens;
        attn_params p;
        attn_params_default(&p);
        p.batch = c.batch, p.heads = c.heads, p.seq = c.seq, p.head_dim = c.d_model / c.heads, p.window = 8;
        const attn_backend *lb = attn_find("local");
        want += c.layers * c.accum * (lb->flops(&p, ATTN_PASS_FWD) + lb->flops(&p, ATTN_PASS_BWD));
        double got = train_flops_per_step(&c);
        ok(fabs(got - want) <= 1e-9 * want, "batch %d, seq %d, accum %d, layers %d: %.6g flops per step (%.6g)",
           c.batch, c.seq, c.accum, c.layers, got, want);
    }
}

typedef struct {
    int n, steps[64];
} evals_seen;

static void on_eval(void *ctx, const train_eval_info *e) {
    evals_seen *x = ctx;
    if (x->n < 64) x->steps[x->n++] = e->step;
}

/* eval_batches: the final validation loss is the mean cross-entropy over the
 * first eval_batches batches of the validation stream, recomputed here from
 * the saved model; eval_every: evaluations at its multiples and the end. */
static void test_eval_options(void) {
    for (int eb = 1; eb <= 3; eb += 2) {
        train_config c;
        base(&c);
        c.eval_batches = eb, c.eval_every = 4, c.steps = 10;
        char path[512], err[256];
        snprintf(path, sizeof path, "%s/eval.ckpt", dir);
        snprintf(c.save, sizeof c.save, "%s", path);
        evals_seen ev;
        memset(&ev, 0, sizeof ev);
        train_hooks h = {&ev, NULL, on_eval, NULL, NULL};
        train_result r;
        int rc = train_run(&c, &h, &r, err, sizeof err);
        c.save[0] = 0;
        train_config cc = c;
        train_config_check(&cc, err, sizeof err);
        model *m = model_create(&cc, err, sizeof err);
        task *t = task_open(&cc, err, sizeof err);
        int step;
        rb_rng rng;
        checkpoint_load(path, m, &step, &rng, train_config_hash(&cc), err, sizeof err);
        double sum[2] = {0, 0}, cnt[2] = {0, 0};
        int tok[64], tgt[64];
        float mask[64];
        for (int split = 0; split < 2; split++) {
            rb_rng_seed(&rng, task_stream_seed(c.seed, split ? TASK_TEST : TASK_VAL, 1));
            for (int i = 0; i < eb; i++) {
                task_batch(t, split ? TASK_TEST : TASK_VAL, &rng, c.batch, c.seq, tok, tgt, mask, err, sizeof err);
                model_forward(m, tok, tgt, mask, ATTN_EVAL);
                sum[split] += m->ce_loss * m->mask_sum, cnt[split] += m->mask_sum;
            }
        }
        ok(rc == 0 && fabs(r.final_eval_loss - sum[0] / cnt[0]) < 1e-9 && fabs(r.test_loss - sum[1] / cnt[1]) < 1e-9,
           "eval_batches %d: validation loss %.6f and test loss %.6f are the means over %d batch%s of each split (%.6f, "
           "%.6f)",
           eb, r.final_eval_loss, r.test_loss, eb, eb > 1 ? "es" : "", sum[0] / cnt[0], sum[1] / cnt[1]);
        ok(ev.n == 3 && ev.steps[0] == 4 && ev.steps[1] == 8 && ev.steps[2] == 10,
           "eval_every 4 of 10 steps: evaluations after steps 4, 8 and 10 (%d)", ev.n);
        model_free(m);
        task_free(t);
    }
}

/* train_frac, val_frac: the text task's splits are byte regions of those
 * shares, in that order. */
static void test_split_options(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/corpus.txt", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 4000; i++) fputc(i < 2400 ? 'a' : i < 3600 ? 'b' : 'c', f); /* 60% 30% 10% */
    fclose(f);
    train_config c;
    base(&c);
    snprintf(c.task, sizeof c.task, "text");
    snprintf(c.data, sizeof c.data, "%s", path);
    c.train_frac = 0.6, c.val_frac = 0.3;
    char err[256];
    train_config_check(&c, err, sizeof err);
    task *t = task_open(&c, err, sizeof err);
    int good = t != NULL, tok[64], tgt[64];
    float mask[64];
    for (int s = 0; s < 3 && t; s++) {
        rb_rng r;
        rb_rng_seed(&r, 3);
        for (int k = 0; k < 200; k++) {
            good &= task_batch(t, s, &r, 2, c.seq, tok, tgt, mask, err, sizeof err) == 0;
            for (int i = 0; i < 2 * c.seq; i++) good &= tok[i] == "abc"[s];
        }
    }
    ok(good, "train_frac 0.6, val_frac 0.3: training draws from the first 60%% of the file, validation the next 30%%, "
             "test the rest");
    task_free(t);
}

/* ---- every option is covered ---------------------------------------------- */

/* Where each key of train_config_keys() is checked: this file, or the test
 * named. A key missing here fails the last test. */
static const char *const coverage[][2] = {
    {"vocab", "test_shape_options"},      {"d_model", "test_shape_options"},
    {"layers", "test_shape_options"},     {"heads", "test_shape_options"},
    {"mlp_mult", "test_shape_options"},   {"seq", "test_shape_options, test_flops_per_step"},
    {"pos", "test_shape_options"},        {"backend", "test_attention_options"},
    {"layer_backends", "test_attention_options"}, {"local_layers", "test_attention_options"},
    {"window", "test_attention_options"}, {"clusters", "test_attention_options"},
    {"local_heads", "test_attention_options"}, {"local_window", "test_group_options"},
    {"stride", "test_group_options"},     {"strided_heads", "test_group_options"},
    {"hashes", "test_group_options"},     {"buckets", "test_group_options"}, {"lsh_heads", "test_group_options"},
    {"share_qk", "test_attention_options"},
    {"assign", "test_attention_options"}, {"norm", "test_attention_options"},
    {"decay", "test_decay"},              {"kmeans_iters", "test_kmeans_iters"},
    {"commit_weight", "test_commit_beta"},  {"batch", "test_flops_per_step, test_gradient_options (accum)"},
    {"accum", "test_gradient_options, test_commit_beta, test_flops_per_step"},
    {"steps", "test_schedule"},           {"warmup", "test_schedule"},
    {"lr", "test_schedule"},              {"min_lr", "test_schedule"},
    {"weight_decay", "test_adamw_options"}, {"clip", "test_gradient_options"},
    {"beta1", "test_adamw_options"},      {"beta2", "test_adamw_options"},
    {"eps", "test_adamw_options"},        {"eval_every", "test_eval_options"},
    {"eval_batches", "test_eval_options"}, {"task", "test_tasks.c (every task's batches), vocab here"},
    {"data", "test_split_options, test_tasks.c (missing/empty file)"},
    {"train_frac", "test_split_options"}, {"val_frac", "test_split_options"},
    {"copy_vocab", "test_tasks.c"},       {"recall_keys", "test_tasks.c"},
    {"recall_values", "test_tasks.c"},    {"random_vocab", "test_tasks.c, base() here"},
    {"seed", "test_train.c (another seed, another curve)"},
    {"load", "test_checkpoint.c, every run_to here"}, {"save", "test_checkpoint.c, every run_to here"},
    {"save_every", "test_checkpoint.c"},  {"stop_after", "test_schedule"},
};

static void test_coverage(void) {
    int n = 0, missing = 0;
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *k = rb_param_at(i);
        if (!rb_param_in_model(k)) continue;
        n++;
        int found = 0;
        for (size_t j = 0; j < sizeof coverage / sizeof coverage[0]; j++) found |= !strcmp(coverage[j][0], k->name);
        if (!found) diag("option %s has no behaviour test listed in test_options.c", k->name), missing++;
    }
    ok(missing == 0, "every one of the %d training options is covered by a behaviour test (%d missing)", n, missing);
}

/* ---- cleanup -------------------------------------------------------------- */

int main(void) {
    if (tu_tmpdir(dir, sizeof dir, "test_options")) return 1;
    rb_set_threads(1);
    test_schedule();
    test_adamw_options();
    test_gradient_options();
    test_commit_beta();
    test_decay();
    test_kmeans_iters();
    test_shape_options();
    test_attention_options();
    test_group_options();
    test_flops_per_step();
    test_eval_options();
    test_split_options();
    test_coverage();
    tu_rmtree(dir);
    return tap_done();
}
