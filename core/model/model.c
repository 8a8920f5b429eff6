/* model.c: the transformer of model.h: parameter layout and initialisation,
 * the forward pass that saves what backward needs in the activation arena,
 * and the backward pass walking the layers in reverse (llm.c's structure).
 * The big matmuls are single sgemm calls over all B*T rows (kernels.c); our
 * own elementwise loops (positions, head split/merge, residual adds) are
 * OpenMP loops with static schedules, so results do not depend on timing. */
#include "model/model.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/kernels.h"

/* Standard deviation of the token embedding at initialisation. */
#define MODEL_EMBED_STD 0.02f

/* Below this many floats a loop is not worth waking the thread team for. */
#define RB_PAR_MIN ((size_t)1 << 15)

/* ---- arena ---- */

static float *arena_take(model_arena *a, size_t nfloats) {
    size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
    char *p = a->base ? a->base + a->used : NULL;
    a->used += bytes;
    if (a->base) assert(a->used <= a->size);
    if (a->used > a->peak) a->peak = a->used;
    return (float *)p;
}

/* Floats of the work region that forward's temporaries and backward's
 * scratch share (they are never live at once): three (B,T,C) rows (ln,
 * dres, dln) plus the union of the MLP's buffers (forward: one (B,T,F);
 * backward: two of (R,F) for a chunk of R rows, at least one row) and the
 * attention's six (B,T,C) (forward: qkv and the merged heads; backward: the
 * merged heads, their gradient, the backend's dq, dk, dv and their merge). */
static size_t work_floats(const model *m) {
    size_t BT = (size_t)m->B * m->T, C = m->C, F = m->F;
    return 3 * BT * C + RB_MAX(RB_MAX(BT * F, 6 * BT * C), 2 * F);
}

/* Rows of a chunk of the MLP's backward: as many as two (rows, F) buffers
 * the work region's union holds (at d_model 128, F = 4 C: three quarters of
 * the rows), a multiple of 256 from 256 up (the GEMM's k blocks: the weight
 * gradients then sum in the order one product over all rows would). */
static int mlp_chunk_rows(const model *m) {
    size_t BT = (size_t)m->B * m->T, u = work_floats(m) - 3 * BT * m->C;
    size_t R = RB_MIN(BT, u / (2 * (size_t)m->F));
    if (R >= 256) R -= R % 256;
    return (int)RB_MAX(R, (size_t)1);
}

/* Carve the saved activations from the start of the arena, then the work
 * region (also used with base == NULL to size it). What backward can
 * recompute is not kept: the layer norms' outputs (from their input, mean
 * and rstd), the MLP's pre-activation (one more product, with the layer
 * norm's output, about 9% of a step's FLOPs at d_model 128; it was 40% of
 * the saved activations) and GELU's output (from it), and the merged heads
 * (a copy of the backend's output). */
static void carve_acts(model *m) {
    model_arena *a = &m->arena;
    size_t L = m->L, BT = (size_t)m->B * m->T, C = m->C, V = m->V;
    a->used = 0;
    m->encoded = arena_take(a, BT * C);
    m->ln1_mean = arena_take(a, L * BT);
    m->ln1_rstd = arena_take(a, L * BT);
    m->qkvh = arena_take(a, L * 3 * BT * C);
    m->atty = arena_take(a, L * BT * C);
    m->res2 = arena_take(a, L * BT * C);
    m->ln2_mean = arena_take(a, L * BT);
    m->ln2_rstd = arena_take(a, L * BT);
    m->res3 = arena_take(a, L * BT * C);
    m->lnf = arena_take(a, BT * C);
    m->lnf_mean = arena_take(a, BT);
    m->lnf_rstd = arena_take(a, BT);
    m->logits = arena_take(a, BT * V);
    m->losses = arena_take(a, BT);
    m->act_bytes = a->used;
    m->work = arena_take(a, work_floats(m));
}

/* The work region's buffers. ln, dres, dln are (B,T,C); the rest overlay
 * the union u, laid out so that each buffer is written only once what it
 * overwrites is dead: forward's qkv (B,T,3C) and merged heads, then the
 * GELU output; backward's recomputed GELU output and the hidden gradient
 * (MLP), or the recomputed merged heads, their gradient, the backend's
 * dq, dk, dv and their merge (attention). */
typedef struct {
    float *ln;            /* (B,T,C) a layer norm's output */
    float *dres;          /* (B,T,C) gradient of the residual stream */
    float *dln;           /* (B,T,C) gradient of a layer norm's output */
    float *qkv, *attm;    /* (B,T,3C), (B,T,C) */
    float *hid;           /* (B,T,F) the MLP hidden: GELU output, then its gradient */
    float *dattm, *datty; /* (B,T,C), (B,H,T,D) */
    float *dqkvh, *dqkv;  /* (3,B,H,T,D), (B,T,3C) */
} model_work;

static void carve_work(const model *m, model_work *w) {
    size_t BTC = (size_t)m->B * m->T * m->C;
    float *u = m->work + 3 * BTC;
    w->ln = m->work;
    w->dres = m->work + BTC;
    w->dln = m->work + 2 * BTC;
    w->qkv = u;
    w->attm = u + 3 * BTC;
    w->hid = u;
    w->dattm = u + 4 * BTC;
    w->datty = u;
    w->dqkvh = u + 3 * BTC; /* over attm and dattm, once both are used */
    w->dqkv = u;            /* over datty, once the backend has used it */
}

/* ---- parameters ---- */

static void point_tensors(model_tensors *t, float *mem, const size_t *sizes) {
    float **ptrs[MODEL_NTENSORS] = {&t->wte,  &t->wpe,      &t->ln1w,     &t->ln1b, &t->qkvw, &t->qkvb,
                                    &t->attprojw, &t->attprojb, &t->ln2w, &t->ln2b, &t->fcw,  &t->fcb,
                                    &t->fcprojw,  &t->fcprojb,  &t->lnfw, &t->lnfb};
    for (int i = 0; i < MODEL_NTENSORS; i++) {
        *ptrs[i] = mem;
        mem += sizes[i];
    }
}

/* Which tensors get weight decay: matrices and the embeddings, not norms or
 * biases (the usual GPT-2 recipe). */
static const unsigned char tensor_decays[MODEL_NTENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};

static void init_params(model *m) {
    rb_rng rng;
    rb_rng_seed(&rng, m->c.seed * 0x9E3779B97F4A7C15ull + 0x1234);
    model_tensors *p = &m->params;
    size_t L = m->L, C = m->C, F = m->F;
    float resid_std = 0.02f / sqrtf(2.0f * (float)m->L);
    for (size_t i = 0; i < m->sizes[0]; i++) p->wte[i] = MODEL_EMBED_STD * rb_rng_normal(&rng);
    for (size_t i = 0; i < m->sizes[1]; i++) p->wpe[i] = 0.01f * rb_rng_normal(&rng);
    for (size_t i = 0; i < L * C; i++) p->ln1w[i] = p->ln2w[i] = 1.0f;
    memset(p->ln1b, 0, L * C * sizeof(float));
    memset(p->ln2b, 0, L * C * sizeof(float));
    for (size_t i = 0; i < L * 3 * C * C; i++) p->qkvw[i] = 0.02f * rb_rng_normal(&rng);
    memset(p->qkvb, 0, L * 3 * C * sizeof(float));
    for (size_t i = 0; i < L * C * C; i++) p->attprojw[i] = resid_std * rb_rng_normal(&rng);
    memset(p->attprojb, 0, L * C * sizeof(float));
    for (size_t i = 0; i < L * F * C; i++) p->fcw[i] = 0.02f * rb_rng_normal(&rng);
    memset(p->fcb, 0, L * F * sizeof(float));
    for (size_t i = 0; i < L * C * F; i++) p->fcprojw[i] = resid_std * rb_rng_normal(&rng);
    memset(p->fcprojb, 0, L * C * sizeof(float));
    for (size_t i = 0; i < C; i++) p->lnfw[i] = 1.0f;
    memset(p->lnfb, 0, C * sizeof(float));
}

size_t model_param_sizes(const train_config *c, size_t sizes[MODEL_NTENSORS]) {
    size_t L = c->layers, C = c->d_model, F = (size_t)c->mlp_mult * C, V = c->vocab, T = c->seq;
    size_t s[MODEL_NTENSORS] = {V * C,         c->pos == TRAIN_POS_LEARNED ? T * C : 0,
                                L * C,         L * C,
                                L * 3 * C * C, L * 3 * C,
                                L * C * C,     L * C,
                                L * C,         L * C,
                                L * F * C,     L * F,
                                L * C * F,     L * C,
                                C,             C};
    size_t n = 0;
    for (int i = 0; i < MODEL_NTENSORS; i++) n += s[i];
    if (sizes) memcpy(sizes, s, sizeof s);
    return n;
}

/* The fixed position tables of c->pos: sinusoidal (Vaswani et al.: sin on
 * even, cos on odd channels, wavelengths 2pi..10000*2pi) scaled so that a
 * position vector has the root-mean-square entry of a token embedding at
 * initialisation (sin and cos have rms 1/sqrt(2); unscaled they would swamp
 * embeddings of 0.02), or rotary's angles. 0, or -1 with a message. */
static int make_positions(model *m, char *err, size_t errlen) {
    size_t T = m->T, C = m->C;
    if (m->c.pos == TRAIN_POS_ROTARY && rotary_init(&m->rope, m->T, m->D) != 0)
        return rb_fail(err, errlen, "out of memory for the rotary tables");
    if (m->c.pos != TRAIN_POS_SINUSOIDAL) return 0;
    m->pos_table = rb_aligned_alloc(T * C * sizeof(float));
    if (!m->pos_table) return rb_fail(err, errlen, "out of memory for the position table");
    double scale = MODEL_EMBED_STD * sqrt(2.0);
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < C; i++) {
            double freq = pow(10000.0, -(double)(i & ~(size_t)1) / (double)C);
            m->pos_table[t * C + i] = (float)(scale * ((i & 1) ? cos(t * freq) : sin(t * freq)));
        }
    return 0;
}

/* The parameters, their gradients and AdamW moments (one block each, the
 * tensors pointed into it), the weight-decay mask and the layer table;
 * the parameters initialised, the rest zeroed. */
static int alloc_params(model *m, char *err, size_t errlen) {
    size_t *sizes = m->sizes;
    m->nparams = model_param_sizes(&m->c, sizes);
    size_t pbytes = m->nparams * sizeof(float);
    m->params_mem = rb_aligned_alloc(pbytes);
    m->grads_mem = rb_aligned_alloc(pbytes);
    m->m_mem = rb_aligned_alloc(pbytes);
    m->v_mem = rb_aligned_alloc(pbytes);
    m->decay_mask = malloc(m->nparams);
    m->att = calloc((size_t)m->L, sizeof(attn *));
    if (!m->params_mem || !m->grads_mem || !m->m_mem || !m->v_mem || !m->decay_mask || !m->att)
        return rb_fail(err, errlen, "out of memory for %zu parameters", m->nparams);
    point_tensors(&m->params, m->params_mem, sizes);
    point_tensors(&m->grads, m->grads_mem, sizes);
    memset(m->grads_mem, 0, pbytes);
    memset(m->m_mem, 0, pbytes);
    memset(m->v_mem, 0, pbytes);
    size_t off = 0;
    for (int i = 0; i < MODEL_NTENSORS; i++) {
        memset(m->decay_mask + off, tensor_decays[i], sizes[i]);
        off += sizes[i];
    }
    init_params(m);
    return 0;
}

/* Each layer's attention instance, with the layer's parameters and seed. */
static int make_layers(model *m, char *err, size_t errlen) {
    const train_config *c = &m->c;
    for (int l = 0; l < m->L; l++) {
        attn_params p;
        char e2[256];
        const char *name = train_layer_backend(c, l);
        if (train_layer_params(c, l, &p) != 0)
            return rb_fail(err, errlen, "layer %d (%s): parameters refused (train_config_check says why)", l, name);
        p.seed = c->seed * 1000003ull + (uint64_t)l * 7919ull + 17;
        m->att[l] = attn_make(name, &p, e2, sizeof e2);
        if (!m->att[l]) return rb_fail(err, errlen, "layer %d (%s): %s", l, name, e2);
        if (m->att[l]->be != attn_find(name)) {
            /* a backend bug, but say so instead of crashing on the first forward */
            m->att[l]->be = attn_find(name); /* so model_free can destroy it */
            return rb_fail(err, errlen, "layer %d: backend %s's create() did not set the instance's be pointer", l,
                           name);
        }
    }
    return 0;
}

/* The activation arena: sized with a dry carve, then allocated once. */
static int alloc_arena(model *m, char *err, size_t errlen) {
    m->arena.base = NULL;
    m->arena.peak = 0;
    carve_acts(m);
    m->arena.size = m->arena.used;
    m->arena.base = rb_aligned_alloc(m->arena.size);
    if (!m->arena.base) return rb_fail(err, errlen, "out of memory for %.1f MB of activations", m->arena.size / 1e6);
    m->arena.peak = 0;
    carve_acts(m);
    return 0;
}

model *model_create(const train_config *c, char *err, size_t errlen) {
    model *m = callocCheck(1, sizeof(model));
    m->c = *c;
    m->V = c->vocab;
    m->C = c->d_model;
    m->L = c->layers;
    m->H = c->heads;
    m->D = c->d_model / c->heads;
    m->T = c->seq;
    m->B = c->batch;
    m->F = c->mlp_mult * c->d_model;
    m->accum = c->accum > 0 ? c->accum : 1;
    assert(m->V > 0 && m->C > 0 && m->L > 0 && m->H > 0 && m->C % m->H == 0 && m->T > 0 && m->B > 0);
    if (alloc_params(m, err, errlen) || make_positions(m, err, errlen) || make_layers(m, err, errlen) ||
        alloc_arena(m, err, errlen)) {
        model_free(m);
        return NULL;
    }
    return m;
}

void model_free(model *m) {
    if (!m) return;
    if (m->att)
        for (int l = 0; l < m->L; l++) attn_free(m->att[l]);
    free(m->att);
    free(m->params_mem);
    free(m->grads_mem);
    free(m->m_mem);
    free(m->v_mem);
    free(m->decay_mask);
    free(m->pos_table);
    rotary_free(&m->rope);
    free(m->arena.base);
    free(m);
}

size_t model_attn_bytes(const model *m) {
    size_t s = 0;
    for (int l = 0; l < m->L; l++) s += m->att[l]->bytes;
    return s;
}

/* ---- layout helpers ---- */

/* qkv (B,T,3C) -> qkvh (3,B,H,T,D) */
static void split_heads(float *qkvh, const float *qkv, int B, int T, int H, int D) {
    int C = H * D;
    size_t plane = (size_t)B * T * C;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C > RB_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = qkv + ((size_t)b * T + t) * 3 * C;
            for (int w = 0; w < 3; w++)
                for (int h = 0; h < H; h++)
                    memcpy(qkvh + w * plane + (((size_t)b * H + h) * T + t) * D, src + w * C + h * D,
                           D * sizeof(float));
        }
}

/* qkvh (3,B,H,T,D) -> qkv (B,T,3C) */
static void merge_qkv(float *qkv, const float *qkvh, int B, int T, int H, int D) {
    int C = H * D;
    size_t plane = (size_t)B * T * C;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C > RB_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *dst = qkv + ((size_t)b * T + t) * 3 * C;
            for (int w = 0; w < 3; w++)
                for (int h = 0; h < H; h++)
                    memcpy(dst + w * C + h * D, qkvh + w * plane + (((size_t)b * H + h) * T + t) * D,
                           D * sizeof(float));
        }
}

/* y (B,H,T,D) <-> ym (B,T,C); dir 0: heads -> merged, 1: merged -> heads */
static void heads_merge(float *merged, float *heads, int B, int T, int H, int D, int dir) {
    int C = H * D;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C > RB_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                float *mp = merged + ((size_t)b * T + t) * C + h * D;
                float *hp = heads + (((size_t)b * H + h) * T + t) * D;
                if (dir == 0) memcpy(mp, hp, D * sizeof(float));
                else memcpy(hp, mp, D * sizeof(float));
            }
}

/* ---- forward ---- */

/* Layer l's pointers into the saved activations. */
typedef struct {
    float *ln1m, *ln1r, *qkvh, *atty, *res2, *ln2m, *ln2r, *res3;
} layer_acts;

static layer_acts layer_at(const model *m, int l) {
    size_t BT = (size_t)m->B * m->T, BTC = BT * m->C;
    layer_acts a = {m->ln1_mean + l * BT, m->ln1_rstd + l * BT, m->qkvh + l * 3 * BTC, m->atty + l * BTC,
                    m->res2 + l * BTC,    m->ln2_mean + l * BT, m->ln2_rstd + l * BT,  m->res3 + l * BTC};
    return a;
}

/* One block: res2 = res + proj(merge(attn(split(qkv(ln1(res)))))), res3 =
 * res2 + fcproj(gelu(fc(ln2(res2)))); biases and residuals go into the
 * products' outputs before the products add to them. */
static void layer_forward(model *m, int l, const float *res, int flags) {
    int B = m->B, T = m->T, C = m->C, F = m->F, H = m->H, D = m->D, BT = m->B * m->T;
    size_t BTC = (size_t)BT * C;
    const model_tensors *p = &m->params;
    layer_acts s = layer_at(m, l);
    model_work w;
    carve_work(m, &w);

    layernorm_forward(w.ln, s.ln1m, s.ln1r, res, p->ln1w + l * C, p->ln1b + l * C, BT, C);
    matmul_forward(w.qkv, w.ln, p->qkvw + (size_t)l * 3 * C * C, p->qkvb + l * 3 * C, BT, C, 3 * C);
    split_heads(s.qkvh, w.qkv, B, T, H, D);
    if (m->rope.cos) rotary_apply(&m->rope, s.qkvh, 2 * (size_t)B * H, T, 0, +1); /* q and k */
    attn *a = m->att[l];
    a->be->forward(a, s.atty, s.qkvh, s.qkvh + BTC, s.qkvh + 2 * BTC, flags);
    heads_merge(w.attm, s.atty, B, T, H, D, 0);
    matmul_forward_add(s.res2, w.attm, p->attprojw + (size_t)l * C * C, p->attprojb + l * C, res, BT, C, C);

    layernorm_forward(w.ln, s.ln2m, s.ln2r, s.res2, p->ln2w + l * C, p->ln2b + l * C, BT, C);
    matmul_forward(w.hid, w.ln, p->fcw + (size_t)l * F * C, p->fcb + l * F, BT, C, F);
    gelu_forward(w.hid, w.hid, (size_t)BT * F); /* in place: backward makes the pre-activation again */
    matmul_forward_add(s.res3, w.hid, p->fcprojw + (size_t)l * C * F, p->fcprojb + l * C, s.res2, BT, F, C);

    if (a->be->stats && a->p.commit_weight > 0) {
        attn_stat st[64];
        int n = a->be->stats(a, st, 64);
        for (int i = 0; i < n; i++)
            if (strcmp(st[i].name, "commit_loss") == 0) m->commit_loss += (double)a->p.commit_weight * st[i].value;
    }
}

double model_forward(model *m, const int *tokens, const int *targets, const float *mask, int flags) {
    int B = m->B, T = m->T, C = m->C, V = m->V;
    size_t BT = (size_t)B * T, BTC = BT * C;
    const model_tensors *p = &m->params;
    m->arena.used = 0;
    carve_acts(m);
    m->tokens = tokens;
    m->targets = targets;
    m->mask = mask;

    /* token embedding plus positions */
    embedding_forward(m->encoded, tokens, p->wte, (int)BT, C);
    const float *pos = m->pos_table ? m->pos_table : m->c.pos == TRAIN_POS_LEARNED ? p->wpe : NULL;
    int PB = pos ? B : 0; /* rotary or none: nothing to add */
#pragma omp parallel for collapse(2) schedule(static) if (BTC > RB_PAR_MIN)
    for (int b = 0; b < PB; b++)
        for (int t = 0; t < T; t++) {
            float *e = m->encoded + ((size_t)b * T + t) * C;
            const float *q = pos + (size_t)t * C;
            for (int i = 0; i < C; i++) e[i] += q[i];
        }

    m->commit_loss = 0;
    const float *res = m->encoded;
    for (int l = 0; l < m->L; l++) {
        layer_forward(m, l, res, flags);
        res = m->res3 + (size_t)l * BTC;
    }
    /* the backends were given commit_beta / accum; report commit_beta's share */
    m->commit_loss *= m->accum;

    layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, res, p->lnfw, p->lnfb, (int)BT, C);
    matmul_forward(m->logits, m->lnf, p->wte, NULL, (int)BT, C, V);
    m->logits_valid = 1;
    if (!targets) {
        m->ce_loss = 0;
        return 0;
    }
    m->ce_loss = crossentropy_forward(m->losses, m->logits, targets, mask, (int)BT, V);
    double s = 0;
    if (mask)
        for (size_t i = 0; i < BT; i++) s += mask[i];
    else s = (double)BT;
    m->mask_sum = s;
    return m->ce_loss + m->commit_loss;
}

void model_zero_grad(model *m) { memset(m->grads_mem, 0, m->nparams * sizeof(float)); }

/* ---- backward ---- */

/* MLP of layer l: w->dres holds d res3 on entry and d res2 on return. The
 * layer norm's output is recomputed from what forward kept, and, chunk by
 * chunk of rows, the pre-activation (the same product forward made, so the
 * same bits) and GELU's output; the GELU output and the hidden gradient take
 * turns in one chunk buffer (the weight gradient, which reads the former,
 * comes before the product writing the latter). */
static void mlp_backward(model *m, int l, model_work *w) {
    int C = m->C, F = m->F, BT = m->B * m->T, R = mlp_chunk_rows(m);
    const model_tensors *p = &m->params;
    model_tensors *g = &m->grads;
    layer_acts s = layer_at(m, l);
    const float *fcw = p->fcw + (size_t)l * F * C, *fcb = p->fcb + l * F, *fcprojw = p->fcprojw + (size_t)l * C * F;
    float *pre = w->hid, *hid = w->hid + (size_t)R * F;

    layernorm_forward(w->ln, NULL, NULL, s.res2, p->ln2w + l * C, p->ln2b + l * C, BT, C);
    for (int r0 = 0; r0 < BT; r0 += R) {
        int nr = RB_MIN(R, BT - r0);
        const float *ln = w->ln + (size_t)r0 * C, *dres = w->dres + (size_t)r0 * C;
        matmul_forward(pre, ln, fcw, fcb, nr, C, F);
        gelu_forward(hid, pre, (size_t)nr * F);
        matmul_backward(NULL, g->fcprojw + (size_t)l * C * F, g->fcprojb + l * C, dres, hid, NULL, nr, F, C);
        matmul_backward_set(hid, NULL, NULL, dres, NULL, fcprojw, nr, F, C);
        gelu_backward_set(hid, pre, hid, (size_t)nr * F);
        matmul_backward_set(w->dln + (size_t)r0 * C, g->fcw + (size_t)l * F * C, g->fcb + l * F, hid, ln, fcw, nr,
                            C, F);
    }
    layernorm_backward(w->dres, g->ln2w + l * C, g->ln2b + l * C, w->dln, s.res2, p->ln2w + l * C, s.ln2m, s.ln2r,
                       BT, C);
}

/* Attention of layer l (input res): w->dres holds d res2 on entry and
 * d res on return. */
static void attn_backward(model *m, int l, const float *res, model_work *w) {
    int B = m->B, T = m->T, C = m->C, H = m->H, D = m->D, BT = m->B * m->T;
    size_t BTC = (size_t)BT * C;
    const model_tensors *p = &m->params;
    model_tensors *g = &m->grads;
    layer_acts s = layer_at(m, l);

    heads_merge(w->attm, s.atty, B, T, H, D, 0);
    matmul_backward_set(w->dattm, g->attprojw + (size_t)l * C * C, g->attprojb + l * C, w->dres, w->attm,
                        p->attprojw + (size_t)l * C * C, BT, C, C);
    heads_merge(w->dattm, w->datty, B, T, H, D, 1);
    attn *a = m->att[l];
    a->be->backward(a, w->dqkvh, w->dqkvh + BTC, w->dqkvh + 2 * BTC, w->datty, s.qkvh, s.qkvh + BTC,
                    s.qkvh + 2 * BTC, s.atty);
    if (m->rope.cos) rotary_apply(&m->rope, w->dqkvh, 2 * (size_t)B * H, T, 0, -1); /* rotation's transpose */
    merge_qkv(w->dqkv, w->dqkvh, B, T, H, D);
    layernorm_forward(w->ln, NULL, NULL, res, p->ln1w + l * C, p->ln1b + l * C, BT, C);
    matmul_backward_set(w->dln, g->qkvw + (size_t)l * 3 * C * C, g->qkvb + l * 3 * C, w->dqkv, w->ln,
                        p->qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
    layernorm_backward(w->dres, g->ln1w + l * C, g->ln1b + l * C, w->dln, res, p->ln1w + l * C, s.ln1m, s.ln1r,
                       BT, C);
}

void model_backward(model *m, float scale) {
    assert(m->targets);
    int T = m->T, C = m->C, V = m->V, B = m->B;
    size_t BT = (size_t)B * T, BTC = BT * C;
    model_tensors *g = &m->grads;
    const model_tensors *p = &m->params;
    model_work w;
    carve_work(m, &w);

    /* the logits' memory takes their gradient: backward may run once per forward */
    assert(m->logits_valid);
    float *dlogits = m->logits;
    m->logits_valid = 0;
    if (m->mask_sum > 0)
        crossentropy_backward_set(dlogits, m->logits, m->targets, m->mask, (float)(scale / m->mask_sum), (int)BT, V);
    else
        memset(dlogits, 0, BT * V * sizeof(float));
    matmul_backward_set(w.dln, g->wte, NULL, dlogits, m->lnf, p->wte, (int)BT, C, V);
    memset(w.dres, 0, BTC * sizeof(float));
    const float *last = m->L > 0 ? m->res3 + (size_t)(m->L - 1) * BTC : m->encoded;
    layernorm_backward(w.dres, g->lnfw, g->lnfb, w.dln, last, p->lnfw, m->lnf_mean, m->lnf_rstd, (int)BT, C);

    for (int l = m->L - 1; l >= 0; l--) {
        const float *res = l == 0 ? m->encoded : m->res3 + (size_t)(l - 1) * BTC;
        mlp_backward(m, l, &w);
        attn_backward(m, l, res, &w);
    }

    /* embeddings: dres is now d encoded */
    embedding_backward(g->wte, w.dres, m->tokens, (int)BT, C);
    if (m->c.pos == TRAIN_POS_LEARNED) {
        /* sum over the batch in a fixed order, parallel over positions */
#pragma omp parallel for schedule(static) if (BTC > RB_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++) {
                const float *d = w.dres + ((size_t)b * T + t) * C;
                float *wp = g->wpe + (size_t)t * C;
                for (int i = 0; i < C; i++) wp[i] += d[i];
            }
    }
}

void model_accuracy(const model *m, long *correct, long *counted) {
    size_t BT = (size_t)m->B * m->T;
    long c = 0, n = 0;
    for (size_t i = 0; i < BT && m->targets; i++) {
        if (m->mask && !(m->mask[i] > 0)) continue;
        const float *lg = m->logits + i * m->V;
        int best = 0;
        for (int v = 1; v < m->V; v++)
            if (lg[v] > lg[best]) best = v;
        c += best == m->targets[i];
        n++;
    }
    *correct = c;
    *counted = n;
}

/* Statistics reported per layer as well as averaged: routing's share of
 * tokens in no cluster (a third with balanced top-k and clusters x window =
 * seq), what the local heads of a hybrid layer make up for. */
static const char *const per_layer_stats[] = {"unrouted_share"};

/* Append NAME.L<l> = value for layer l's statistics in per_layer_stats. */
static int layer_stats(const model *m, char names[][48], double *values, int n, int max) {
    for (int l = 0; l < m->L; l++) {
        attn *a = m->att[l];
        attn_stat st[64];
        int k = a->be->stats ? a->be->stats(a, st, 64) : 0;
        for (int i = 0; i < k; i++)
            for (size_t j = 0; j < sizeof per_layer_stats / sizeof *per_layer_stats; j++) {
                if (strcmp(st[i].name, per_layer_stats[j]) != 0 || n == max) continue;
                snprintf(names[n], 48, "%.30s.L%d", st[i].name, l);
                values[n++] = st[i].value;
            }
    }
    return n;
}

int model_stats(const model *m, char names[][48], double *values, int max) {
    int n = 0, counts[TRAIN_MAX_STATS] = {0};
    if (max > TRAIN_MAX_STATS) max = TRAIN_MAX_STATS;
    for (int l = 0; l < m->L; l++) {
        attn *a = m->att[l];
        if (!a->be->stats) continue;
        attn_stat st[64];
        int k = a->be->stats(a, st, 64);
        for (int i = 0; i < k; i++) {
            int j = 0;
            while (j < n && strcmp(names[j], st[i].name) != 0) j++;
            if (j == n) {
                if (n == max) continue;
                snprintf(names[n], 48, "%s", st[i].name);
                values[n] = 0;
                n++;
            }
            values[j] += st[i].value;
            counts[j]++;
        }
    }
    for (int j = 0; j < n; j++) values[j] /= counts[j];
    return layer_stats(m, names, values, n, max);
}

attn *model_layer_attn(model *m, int l) {
    assert(l >= 0 && l < m->L);
    return m->att[l];
}

void model_layer_qkv(const model *m, int l, const float **q, const float **k, const float **v) {
    assert(l >= 0 && l < m->L);
    size_t BTC = (size_t)m->B * m->T * m->C;
    const float *base = m->qkvh + (size_t)l * 3 * BTC;
    if (q) *q = base;
    if (k) *k = base + BTC;
    if (v) *v = base + 2 * BTC;
}
