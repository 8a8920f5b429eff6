/* test_model.c: the whole transformer's gradients against central finite
 * differences (loss in double, the routing cluster choice held fixed with
 * ATTN_KEEP_ROUTES) for every model-level backend the registry knows, and a
 * tiny model driving the loss on one fixed batch close to zero. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"
#include "util/kernels.h"
#include "model/model.h"
#include "tap.h"
#include "util/threads.h"
#include "model/train.h"
#include "testutil.h"

static void tiny_config(train_config *c, const char *backend) {
    tu_small_model(c, "random", 11, 16, 16, 2, 10, backend);
    c->attn.window = 4;
    c->attn.clusters = 4;
    c->commit_beta = 0.05f; /* large enough that its gradient shows in the check */
}

static void fill_batch(int *tok, int *tgt, float *mask, int n, int V, uint64_t seed) {
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        tok[i] = (int)rb_rng_below(&r, V);
        tgt[i] = (int)rb_rng_below(&r, V);
        mask[i] = (i % 3 == 0) ? 0.0f : 1.0f; /* a mask that is not all ones */
    }
}

static const char *const pos_names[] = {"learned", "sinusoidal", "rotary", "none"};

static void grad_check_config(train_config *cfg);

/* Worst relative error over sampled parameters of every tensor. */
static void grad_check(const char *backend, int pos) {
    train_config c;
    tiny_config(&c, backend);
    c.pos = pos;
    grad_check_config(&c);
}

static void grad_check_config(train_config *cfg) {
    train_config c = *cfg;
    const char *backend = c.backend;
    int pos = c.pos;
    char err[512];
    if (train_config_check(&c, err, sizeof err)) {
        ok(0, "%s: config: %s", backend, err);
        return;
    }
    model *m = model_create(&c, err, sizeof err);
    if (!m) {
        ok(0, "%s: create: %s", backend, err);
        return;
    }
    int n = c.batch * c.seq;
    int *tok = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
    float *mask = malloc(n * sizeof(float));
    fill_batch(tok, tgt, mask, n, c.vocab, 42);
    /* biases and layer-norm gains away from their initial 0 and 1 (the
     * parameters without weight decay), so that a product that leaves one
     * out (backward's recompute of the MLP pre-activation could) shows */
    rb_rng br;
    rb_rng_seed(&br, 11);
    for (size_t i = 0; i < m->nparams; i++)
        if (!m->decay_mask[i]) m->params_mem[i] += 0.1f * rb_rng_normal(&br);
    /* a training forward first: routing initialises and moves its centroids */
    model_forward(m, tok, tgt, mask, ATTN_TRAIN);
    model_forward(m, tok, tgt, mask, ATTN_EVAL);
    model_zero_grad(m);
    model_backward(m, 1.0f);
    float *g = malloc(m->nparams * sizeof(float));
    memcpy(g, m->grads_mem, m->nparams * sizeof(float));

    rb_rng r;
    rb_rng_seed(&r, 7);
    const double h = 1e-3; /* 1e-2 already shows truncation error on the last biases */
    double worst = 0, worst_abs = 0;
    size_t worst_i = 0;
    int checked = 0;
    size_t off = 0;
    for (int t = 0; t < MODEL_NTENSORS; t++) {
        for (int s = 0; s < 12 && m->sizes[t] > 0; s++) {
            size_t i = off + rb_rng_below(&r, (uint32_t)m->sizes[t]);
            float *p = m->params_mem + i, save = *p;
            *p = save + (float)h;
            double lp = model_forward(m, tok, tgt, mask, ATTN_EVAL | ATTN_KEEP_ROUTES);
            *p = save - (float)h;
            double lm = model_forward(m, tok, tgt, mask, ATTN_EVAL | ATTN_KEEP_ROUTES);
            *p = save;
            double num = (lp - lm) / (2 * h), an = g[i];
            double ae = fabs(num - an);
            /* relative to the gradient's size, with a floor for tiny ones
             * where float32 rounding in the loss dominates */
            double re = ae / fmax(fmax(fabs(num), fabs(an)), 1e-2);
            if (re > worst) worst = re, worst_i = i;
            if (ae > worst_abs) worst_abs = ae;
            checked++;
        }
        off += m->sizes[t];
    }
    diag("%s (%s positions, local_window %d): %d parameters checked, worst relative error %.3g (param %zu: analytic "
         "%.6g), worst abs %.3g", backend, pos_names[pos], c.attn.local_window, checked, worst, worst_i, g[worst_i],
         worst_abs);
    ok(worst < 2e-2, "%s (%s positions, local_window %d): model gradients match central differences", backend,
       pos_names[pos], c.attn.local_window);
    free(g);
    free(tok);
    free(tgt);
    free(mask);
    model_free(m);
}

/* Root mean square of n floats. */
static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)n);
}

/* The sinusoidal table is at the token embeddings' scale (it used to add
 * amplitude 1 to embeddings of 0.02); rotary and none add nothing. */
static void positions_scale(void) {
    train_config c;
    tiny_config(&c, "dense");
    c.d_model = 64;
    c.seq = 64;
    c.random_vocab = 200;
    c.pos = TRAIN_POS_SINUSOIDAL;
    char err[512];
    model *m = train_config_check(&c, err, sizeof err) == 0 ? model_create(&c, err, sizeof err) : NULL;
    if (!m) {
        ok(0, "sinusoidal model: %s", err);
        return;
    }
    double pe = rms(m->pos_table, (size_t)c.seq * c.d_model), te = rms(m->params.wte, m->sizes[0]);
    diag("sinusoidal table rms %.4f, token embedding rms %.4f", pe, te);
    ok(pe > 0.7 * te && pe < 1.4 * te, "sinusoidal positions have the token embeddings' scale (rms %.4f vs %.4f)", pe,
       te);
    model_free(m);
    /* rotary and none have the same parameters (same seed: the same values),
     * so layer 0's backend must see none's q and k rotated, and the same v */
    int n = c.batch * c.seq;
    int *tok = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
    float *mask = malloc(n * sizeof(float));
    fill_batch(tok, tgt, mask, n, 200, 9);
    model *mm[2] = {NULL, NULL};
    for (int pos = TRAIN_POS_ROTARY; pos <= TRAIN_POS_NONE; pos++) {
        c.pos = pos;
        m = train_config_check(&c, err, sizeof err) == 0 ? model_create(&c, err, sizeof err) : NULL;
        ok(m && m->sizes[1] == 0 && !m->pos_table, "pos %s: no position table, no learned positions",
           pos_names[pos]);
        if (m) model_forward(m, tok, tgt, NULL, ATTN_EVAL);
        mm[pos - TRAIN_POS_ROTARY] = m;
    }
    if (mm[0] && mm[1]) {
        size_t plane = (size_t)n * c.d_model;
        const float *qr, *qn;
        model_layer_qkv(mm[0], 0, &qr, NULL, NULL);
        model_layer_qkv(mm[1], 0, &qn, NULL, NULL);
        float *want = malloc(3 * plane * sizeof(float));
        memcpy(want, qn, 3 * plane * sizeof(float));
        rotary rt;
        rotary_init(&rt, c.seq, c.d_model / c.heads);
        rotary_apply(&rt, want, 2 * (size_t)c.batch * c.heads, c.seq, 0, +1);
        double e = 0, moved = 0;
        for (size_t i = 0; i < 3 * plane; i++) e = fmax(e, fabs(qr[i] - want[i])), moved = fmax(moved, fabs(qr[i] - qn[i]));
        ok(e < 1e-6 && moved > 1e-3, "pos rotary: layer 0's backend sees q and k rotated by position, v as it is "
           "(max err %.2e; %.2e from the unrotated)", e, moved);
        rotary_free(&rt);
        free(want);
    }
    model_free(mm[0]), model_free(mm[1]);
    free(tok), free(tgt), free(mask);
}

/* a tiny model memorises one fixed batch */
static void overfit(void) {
    train_config c;
    tiny_config(&c, "dense");
    c.d_model = 32;
    c.weight_decay = 0;
    char err[512];
    if (train_config_check(&c, err, sizeof err)) {
        ok(0, "overfit config: %s", err);
        return;
    }
    model *m = model_create(&c, err, sizeof err);
    int n = c.batch * c.seq;
    int *tok = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
    float *mask = malloc(n * sizeof(float));
    fill_batch(tok, tgt, mask, n, c.vocab, 3);
    double first = 0, loss = 0;
    for (int step = 1; step <= 300; step++) {
        model_zero_grad(m);
        loss = model_forward(m, tok, tgt, NULL, ATTN_TRAIN);
        if (step == 1) first = loss;
        model_backward(m, 1.0f);
        clip_grad_norm(m->grads_mem, m->nparams, 1.0);
        adamw_update(m->params_mem, m->grads_mem, m->m_mem, m->v_mem, m->decay_mask, m->nparams, 1e-2f, 0.9f,
                     0.95f, 1e-8f, 0.0f, step);
    }
    diag("fixed batch: loss %.4f -> %.4f after 300 steps (ln 11 = %.4f)", first, loss, log(11.0));
    ok(first > 2.0 && loss < 0.05, "a tiny model drives the loss on one batch close to zero");
    free(tok);
    free(tgt);
    free(mask);
    model_free(m);
}

int main(void) {
    rb_set_threads(1);
    const char *backends[] = {"dense", "local", "routing", "hybrid"};
    for (int i = 0; i < 4; i++) {
        if (!attn_find(backends[i])) {
            skip("backend %s is not registered yet", backends[i]);
            continue;
        }
        grad_check(backends[i], TRAIN_POS_LEARNED);
    }
    grad_check("dense", TRAIN_POS_SINUSOIDAL);
    positions_scale();
    /* rotary on q and k before the backend (routing clusters the rotated
     * vectors), and no positions at all */
    grad_check("dense", TRAIN_POS_ROTARY);
    grad_check("routing", TRAIN_POS_ROTARY);
    grad_check("dense", TRAIN_POS_NONE);
    {
        /* hybrid with its own local block beside the routing window, rotary,
         * and a first local layer taking local_window (sparsity_skip_first) */
        train_config c;
        tiny_config(&c, "hybrid");
        c.pos = TRAIN_POS_ROTARY;
        c.attn.local_window = 8;
        c.local_layers = 1;
        grad_check_config(&c);
    }
    {
        /* local_window: the block of hybrid's local heads and of the local layers local_layers makes */
        train_config c;
        tiny_config(&c, "hybrid");
        c.layers = 3;
        c.local_layers = 1;
        c.attn.local_window = 8;
        char err[512];
        attn_params p0, p1;
        int rc = train_config_check(&c, err, sizeof err);
        rc = rc || train_layer_params(&c, 0, &p0) || train_layer_params(&c, 1, &p1);
        ok(rc == 0 && p0.window == 8 && p1.window == 4 && p1.local_window == 8 &&
           (train_layer_uses(&c, 0) & ATTN_USES_LOCAL_WINDOW),
           "local layer 0 takes local_window 8 as its window; hybrid layer 1 keeps window 4 and local_window 8");
    }
    {
        /* the unrouted share of each routing layer, beside the average */
        train_config c;
        tiny_config(&c, "hybrid");
        c.layers = 3;
        c.local_layers = 1;
        char err[512], names[TRAIN_MAX_STATS][48];
        double values[TRAIN_MAX_STATS];
        model *m = train_config_check(&c, err, sizeof err) == 0 ? model_create(&c, err, sizeof err) : NULL;
        int n = c.batch * c.seq, good = m != NULL, found = 0;
        int *tok = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
        float *mask = malloc(n * sizeof(float));
        fill_batch(tok, tgt, mask, n, c.vocab, 5);
        if (m) model_forward(m, tok, tgt, NULL, ATTN_TRAIN);
        int ns = m ? model_stats(m, names, values, TRAIN_MAX_STATS) : 0;
        for (int l = 0; good && l < c.layers; l++) {
            attn *a = model_layer_attn(m, l);
            attn_stat st[32];
            int k = a->be->stats ? a->be->stats(a, st, 32) : 0;
            char want[48];
            snprintf(want, sizeof want, "unrouted_share.L%d", l);
            int at = -1;
            for (int i = 0; i < ns; i++)
                if (!strcmp(names[i], want)) at = i;
            for (int i = 0; i < k; i++)
                if (!strcmp(st[i].name, "unrouted_share")) good = good && at >= 0 && values[at] == st[i].value, found++;
            if (k == 0) good = good && at < 0;
        }
        ok(good && found == 2, "model_stats: unrouted_share.L1 and .L2 are the routing layers' own, none for local layer 0");
        free(tok), free(tgt), free(mask);
        model_free(m);
    }
    {
        /* first layers local, the rest the main backend: per-layer backends are configuration */
        train_config c;
        tiny_config(&c, "dense");
        c.layers = 3;
        snprintf(c.layer_backends, sizeof c.layer_backends, "dense,dense-naive,dense");
        char err[512];
        int rc = train_config_check(&c, err, sizeof err);
        ok(rc == 0 && strcmp(train_layer_backend(&c, 1), "dense-naive") == 0, "per-layer backends resolve");
        snprintf(c.layer_backends, sizeof c.layer_backends, "dense,dense");
        rc = train_config_check(&c, err, sizeof err);
        ok(rc != 0 && strstr(err, "3 layers"), "a per-layer list of the wrong length is refused: %s", err);
    }
    overfit();
    return tap_done();
}
