/* train.c: the configuration table behind train_config_set, validation and
 * hashing of a configuration, the analytic FLOP count, the training loop
 * (gradient accumulation, global clipping, AdamW with warm-up and cosine
 * decay, periodic evaluation, checkpoints) and the whole-step benchmark. */
#include "model/train.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "util/common.h"
#include "util/hash.h"
#include "util/params.h"
#include "util/kernels.h"
#include "util/measure.h"
#include "util/threads.h"
#include "model/model.h"
#include "model/tasks.h"

/* ---- the parameter table (core/util/params.def) in a train_config ---- */

/* Where each params.def row lives in train_config (NO_FIELD: not in a
 * model, e.g. head_dim, which the model derives) and its size (text fields). */
#define NO_FIELD ((size_t)-1)
#define MEMBER_SIZE(f) sizeof(((train_config *)0)->f)
#define OFF_W_A(name, tf) NO_FIELD
#define OFF_W_AA(name, tf) offsetof(train_config, attn) + offsetof(attn_params, name)
#define OFF_W_AT(name, tf) offsetof(train_config, tf)
#define OFF_W_T(name, tf) offsetof(train_config, tf)
#define OFF_W_SEL(name, tf) offsetof(train_config, tf)
#define SIZE_W_A(tf) 0
#define SIZE_W_AA(tf) 0
#define SIZE_W_AT(tf) MEMBER_SIZE(tf)
#define SIZE_W_T(tf) MEMBER_SIZE(tf)
#define SIZE_W_SEL(tf) MEMBER_SIZE(tf)
static const struct {
    size_t off, size;
} fields[] = {
#define PARAM(name, type, where, tfield, ...) {OFF_##where(name, tfield), SIZE_##where(tfield)},
#define ALIAS(old, name)
#include "util/params.def"
#undef PARAM
#undef ALIAS
};

void *train_config_field(train_config *c, const rb_param *d, size_t *size) {
    int i = rb_param_index(d);
    if (i < 0 || fields[i].off == NO_FIELD) return NULL;
    if (size) *size = fields[i].size;
    return (char *)c + fields[i].off;
}

void train_config_default(train_config *c) {
    memset(c, 0, sizeof *c);
    attn_params_default(&c->attn); /* the fields a model derives keep the layer defaults */
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        size_t size = 0;
        void *f = train_config_field(c, d, &size);
        rb_pval v;
        if (f && rb_param_parse_default(d, d->tdef, &v) == 0) rb_param_put(d, f, size, &v);
    }
}

/* Each item of a comma-separated list of backends is a registered name. */
static int check_backends(const char *list, char *err, size_t errlen) {
    char item[TRAIN_NAME_LEN + 1];
    for (const char *p = list;;) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ') n--;
        if (n == 0 || n >= sizeof item) return rb_fail(err, errlen, "expected backend names separated by commas, got '%s'", list);
        memcpy(item, p, n);
        item[n] = 0;
        if (!attn_find(item)) return attn_fail_unknown(item, err, errlen);
        p = strchr(p, ',');
        if (!p) return 0;
        p++;
    }
}

int train_config_set(train_config *c, const char *key, const char *value, char *err, size_t errlen) {
    const rb_param *d = rb_param_find(key);
    size_t size = 0;
    void *f = d ? train_config_field(c, d, &size) : NULL;
    if (!f) return rb_fail(err, errlen, "unknown training option '%s'", key);
    rb_pval v;
    char msg[300];
    if (rb_param_parse(d, value, &v, msg, sizeof msg) != 0) return rb_fail(err, errlen, "%s: %s", d->name, msg);
    if (d->type == PT_BACKEND && !attn_find(value)) {
        attn_fail_unknown(value, msg, sizeof msg);
        return rb_fail(err, errlen, "%s: %s", d->name, msg);
    }
    if (d->type == PT_BACKENDS && *value && check_backends(value, msg, sizeof msg) != 0)
        return rb_fail(err, errlen, "%s: %s", d->name, msg);
    if (rb_param_put(d, f, size, &v) != 0)
        return rb_fail(err, errlen, "%s: '%s' is too long (at most %zu characters)", d->name, value, size - 1);
    return 0;
}

/* Every key as it would be given to train_config_set, numbers with the
 * shortest text that reads back as the same value, so the configuration
 * hash survives the round trip exactly. */
int train_config_to_text(const train_config *c, char *out, size_t len) {
    size_t off = 0;
    if (len) out[0] = 0;
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const void *f = train_config_field((train_config *)c, d, NULL);
        if (!f) continue;
        char v[TRAIN_PATH_LEN + 32];
        if (d->type == PT_STR && strchr((const char *)f, '\n')) return -1; /* one line per key */
        if (d->type == PT_ENUM) {
            int x = *(const int *)f, n = 1;
            for (const char *p = d->choices; *p; p++) n += *p == '|';
            if (x < 0 || x >= n) return -1;
        }
        rb_param_format(d, f, RB_FMT_TEXT, v, sizeof v);
        int n = snprintf(off < len ? out + off : NULL, off < len ? len - off : 0, "%s=%s\n", d->name, v);
        if (n < 0) return -1;
        off += (size_t)n;
    }
    return off < len ? (int)off : -1;
}

int train_config_from_text(train_config *c, const char *text, char *err, size_t errlen) {
    const char *p = text;
    int line = 0;
    while (*p) {
        line++;
        size_t n = strcspn(p, "\n");
        char buf[TRAIN_PATH_LEN + 64];
        if (n >= sizeof buf) return rb_fail(err, errlen, "configuration line %d is too long", line);
        memcpy(buf, p, n);
        buf[n] = 0;
        p += n + (p[n] == '\n');
        if (n == 0) continue;
        char *eq = strchr(buf, '=');
        if (!eq) return rb_fail(err, errlen, "configuration line %d has no '=': '%s'", line, buf);
        *eq = 0;
        char msg[512];
        if (train_config_set(c, buf, eq + 1, msg, sizeof msg) != 0)
            return rb_fail(err, errlen, "configuration line %d: %s", line, msg);
    }
    return 0;
}

/* ---- per-layer backends ---- */

/* Copy the l-th comma-separated item of list into out; 0, or -1 if absent. */
static int list_item(const char *list, int l, char *out, size_t outlen) {
    const char *p = list;
    for (int i = 0; i < l; i++) {
        p = strchr(p, ',');
        if (!p) return -1;
        p++;
    }
    while (*p == ' ') p++;
    size_t n = strcspn(p, ",");
    while (n > 0 && p[n - 1] == ' ') n--;
    if (n == 0 || n >= outlen) return -1;
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

/* Layer l's backend name as written (the list item, "local" for the first
 * local_layers, else backend) into buf; "" when the list is too short. */
static const char *layer_backend_text(const train_config *c, int l, char *buf, size_t len) {
    if (c->layer_backends[0]) {
        if (list_item(c->layer_backends, l, buf, len)) buf[0] = 0;
        return buf;
    }
    return l < c->local_layers ? "local" : c->backend;
}

const char *train_layer_backend(const train_config *c, int l) {
    char item[TRAIN_NAME_LEN * 2];
    const attn_backend *be = attn_find(layer_backend_text(c, l, item, sizeof item));
    return be ? be->name : ""; /* the registry's string, valid as long as the program runs */
}

/* Whether layer l is `local` (the one backend name core knows, for
 * local_layers): it takes local_window as its window, like hybrid's local
 * heads. */
static int layer_is_local(const train_config *c, int l) { return strcmp(train_layer_backend(c, l), "local") == 0; }

unsigned train_layer_uses(const train_config *c, int l) {
    const attn_backend *be = attn_find(train_layer_backend(c, l));
    if (!be) return 0;
    return be->uses | (layer_is_local(c, l) ? ATTN_USES_LOCAL_WINDOW : 0);
}

/* The attention parameters layer l's backend sees. */
static attn_params layer_params(const train_config *c, int l) {
    attn_params p = c->attn;
    if (p.local_window > 0 && layer_is_local(c, l)) p.window = p.local_window;
    p.batch = c->batch;
    p.heads = c->heads;
    p.seq = c->seq;
    p.head_dim = c->heads > 0 ? c->d_model / c->heads : 0;
    p.causal = 1;
    p.seed = c->seed;
    p.commit_weight = c->commit_beta / (float)(c->accum > 0 ? c->accum : 1);
    return p;
}

/* The checks that involve several fields (single fields' ranges are the
 * table's, checked when set). */
static int check_model(train_config *c, rb_err *e) {
    if (c->d_model < 1 || c->layers < 1 || c->layers > TRAIN_MAX_LAYERS || c->heads < 1 || c->mlp_mult < 1 ||
        c->seq < 1 || c->batch < 1 || c->accum < 1 || c->steps < 0)
        return rb_err_set(e, RB_EINVAL, "", "sizes must be positive (d_model %d, layers %d (max %d), heads %d, seq %d, "
                          "batch %d, accum %d)", c->d_model, c->layers, TRAIN_MAX_LAYERS, c->heads, c->seq, c->batch,
                          c->accum);
    if (c->d_model % c->heads)
        return rb_err_set(e, RB_EINVAL, "heads", "heads (%d) must divide d_model (%d)", c->heads, c->d_model);
    if (c->pos < TRAIN_POS_LEARNED || c->pos > TRAIN_POS_NONE) return rb_err_set(e, RB_EINVAL, "pos", "bad pos");
    if (c->local_layers < 0 || c->local_layers > c->layers)
        return rb_err_set(e, RB_EINVAL, "local_layers", "local_layers %d must be in [0, layers = %d]", c->local_layers,
                          c->layers);
    if (c->layer_backends[0]) {
        int items = 1;
        for (const char *p = c->layer_backends; *p; p++) items += *p == ',';
        if (items != c->layers)
            return rb_err_set(e, RB_EINVAL, "layer_backends", "layer_backends lists %d backends for %d layers", items,
                              c->layers);
    }
    return 0;
}

static int check_optimiser(train_config *c, rb_err *e) {
    if (!(c->lr > 0)) return rb_err_set(e, RB_EINVAL, "lr", "lr must be positive (got %g)", c->lr);
    if (c->warmup < 0) c->warmup = RB_MIN(100, c->steps / 10);
    if (c->min_lr < 0) c->min_lr = c->lr / 10;
    if (c->min_lr > c->lr) return rb_err_set(e, RB_EINVAL, "min_lr", "min_lr %g exceeds lr %g", c->min_lr, c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 && c->eps > 0))
        return rb_err_set(e, RB_EINVAL, "eps", "AdamW needs 0 <= beta1, beta2 < 1 and eps > 0");
    if (c->weight_decay < 0 || c->clip < 0 || c->commit_beta < 0)
        return rb_err_set(e, RB_EINVAL, "", "weight_decay, clip and commit_weight must not be negative");
    if (c->eval_batches < 1) return rb_err_set(e, RB_EINVAL, "eval_batches", "eval_batches must be at least 1");
    if (!(c->train_frac > 0 && c->val_frac > 0 && c->train_frac + c->val_frac < 1))
        return rb_err_set(e, RB_EINVAL, "val_frac",
                          "split fractions must be positive and leave a test split (train %g, val %g)", c->train_frac,
                          c->val_frac);
    return 0;
}

int train_layer_params(const train_config *c, int l, attn_params *p) {
    const attn_backend *be = attn_find(train_layer_backend(c, l));
    if (!be) return -1;
    *p = layer_params(c, l);
    rb_err e;
    return attn_validate(be, p, &e);
}

int train_config_check_e(train_config *c, rb_err *e) {
    char msg[sizeof e->msg];
    rb_err_clear(e);
    int tv = task_vocab(c, msg, sizeof msg);
    if (tv < 0) return rb_err_set(e, RB_EINVAL, "task", "%s", msg);
    if (c->vocab == 0) c->vocab = tv;
    else if (c->vocab < tv)
        return rb_err_set(e, RB_EINVAL, "vocab", "vocab %d is smaller than the %s task needs (%d)", c->vocab, c->task, tv);
    if (check_model(c, e) != 0 || check_optimiser(c, e) != 0) return -1;
    for (int l = 0; l < c->layers; l++) {
        char item[TRAIN_NAME_LEN * 2];
        const char *name = layer_backend_text(c, l, item, sizeof item);
        const attn_backend *be = attn_find(name);
        if (!be) {
            char names[1024];
            return rb_err_set(e, RB_EINVAL, c->layer_backends[0] ? "layer_backends" : "backend",
                              "layer %d: unknown backend '%s' (known: %s)", l, name, attn_names(names, sizeof names));
        }
        attn_params p = layer_params(c, l);
        rb_err sub;
        if (attn_validate(be, &p, &sub) != 0)
            return rb_err_set(e, sub.code, sub.key, "layer %d (%s): %s", l, name, sub.msg);
    }
    return 0;
}

int train_config_check(train_config *c, char *err, size_t errlen) {
    rb_err e;
    if (train_config_check_e(c, &e) == 0) return 0;
    return rb_fail(err, errlen, "%s", e.msg);
}

uint64_t train_config_hash(const train_config *c) {
    uint64_t h = RB_FNV_BASIS;
    int ints[] = {c->vocab,          c->d_model,        c->layers,        c->heads,          c->mlp_mult,
                  c->seq,            c->pos,            c->attn.window,   c->attn.clusters,  c->attn.local_heads,
                  c->attn.share_qk,  c->attn.assign,    c->attn.norm,     c->attn.kmeans_iters};
    h = rb_fnv1a(h, ints, sizeof ints);
    h = rb_fnv1a(h, &c->attn.decay, sizeof(float));
    /* added later: hashed only when set, so earlier checkpoints keep their hash */
    if (c->attn.local_window > 0) h = rb_fnv1a(h, &c->attn.local_window, sizeof(int));
    for (int l = 0; l < c->layers; l++) {
        const char *n = train_layer_backend(c, l);
        h = rb_fnv1a(h, n, strlen(n) + 1);
    }
    h = rb_fnv1a(h, c->task, strlen(c->task) + 1);
    return h;
}

double train_flops_per_step(const train_config *c) {
    double C = c->d_model, F = (double)c->mlp_mult * C, V = c->vocab;
    double mat = c->layers * (3 * C * C + C * C + 2 * C * F) + V * C; /* weights used in matmuls, per token */
    double tokens = (double)c->batch * c->seq * c->accum;
    double f = 6.0 * mat * tokens;
    for (int l = 0; l < c->layers; l++) {
        const attn_backend *be = attn_find(train_layer_backend(c, l));
        if (!be) continue;
        attn_params p = layer_params(c, l);
        char e2[256];
        if (attn_validate_msg(be, &p, e2, sizeof e2)) continue;
        f += c->accum * (be->flops(&p, ATTN_PASS_FWD) + be->flops(&p, ATTN_PASS_BWD));
    }
    return f;
}

/* ---- the training loop ---- */

static double lr_at(const train_config *c, int step) {
    if (c->warmup > 0 && step <= c->warmup) return c->lr * (double)step / c->warmup;
    int span = c->steps - c->warmup;
    if (span <= 0) return c->lr;
    double x = (double)(step - c->warmup) / span;
    if (x > 1) x = 1;
    return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1 + cos(M_PI * x));
}

typedef struct {
    int *tokens, *targets;
    float *mask;
} batch_bufs;

/* Mean loss (nats), bits per token and accuracy on eval_batches batches of
 * `split`, always the same batches (the stream restarts). */
static int evaluate(model *m, task *t, const train_config *c, int split, batch_bufs *bb, double *loss, double *acc,
                    char *err, size_t errlen) {
    rb_rng rng;
    rb_rng_seed(&rng, task_stream_seed(c->seed, split, 1));
    double sum = 0, cnt = 0;
    long correct = 0, counted = 0;
    for (int i = 0; i < c->eval_batches; i++) {
        if (task_batch(t, split, &rng, c->batch, c->seq, bb->tokens, bb->targets, bb->mask, err, errlen)) return -1;
        model_forward(m, bb->tokens, bb->targets, bb->mask, ATTN_EVAL);
        sum += m->ce_loss * m->mask_sum;
        cnt += m->mask_sum;
        long a, b;
        model_accuracy(m, &a, &b);
        correct += a;
        counted += b;
    }
    *loss = cnt > 0 ? sum / cnt : NAN;
    *acc = task_has_accuracy(t) && counted > 0 ? (double)correct / counted : NAN;
    return 0;
}

static void fill_common(train_result *r, const train_config *c, model *m) {
    r->params = m->nparams;
    r->flops_per_step = train_flops_per_step(c);
    r->arena_bytes = m->arena.size;
    r->arena_peak = m->arena.peak;
    r->saved_act_bytes = m->act_bytes;
    r->arena_per_token_layer = (double)m->arena.size / ((double)c->batch * c->seq) / c->layers;
    r->attn_bytes = model_attn_bytes(m);
    r->peak_rss = rb_peak_rss();
    r->nstats = model_stats(m, r->stat_names, r->stat_values, TRAIN_MAX_STATS);
}

static void fill_medians(train_result *r, double *st, double *fw, double *bw, double *op, int n,
                         const train_config *c) {
    if (n <= 0) return;
    rb_summary sum;
    rb_summarize(st, n, &sum);
    r->steps_timed = n;
    r->median_step_ms = sum.median;
    r->step_ms_iqr = sum.iqr, r->step_ms_min = sum.min, r->step_ms_max = sum.max;
    r->fwd_ms = rb_median(fw, n);
    r->bwd_ms = rb_median(bw, n);
    r->opt_ms = rb_median(op, n);
    double s = r->median_step_ms / 1e3;
    r->tokens_per_s = s > 0 ? (double)c->batch * c->seq * c->accum / s : 0;
    r->gflops = s > 0 ? r->flops_per_step / s / 1e9 : 0;
}

/* One optimiser step; times into fw/bw/op (ms). Returns the loss. */
static double one_step(model *m, const train_config *c, int step, task *t, rb_rng *rng, batch_bufs *bb,
                       double *fw, double *bw, double *op, double *gnorm, char *err, size_t errlen, int *fail) {
    double loss = 0;
    *fw = *bw = 0;
    *fail = 0;
    model_zero_grad(m);
    for (int a = 0; a < c->accum; a++) {
        if (t) {
            if (task_batch(t, TASK_TRAIN, rng, c->batch, c->seq, bb->tokens, bb->targets, bb->mask, err, errlen)) {
                *fail = 1;
                return NAN;
            }
        }
        double t0 = rb_now();
        loss += model_forward(m, bb->tokens, bb->targets, bb->mask, ATTN_TRAIN) / c->accum;
        double t1 = rb_now();
        model_backward(m, 1.0f / (float)c->accum);
        double t2 = rb_now();
        *fw += (t1 - t0) * 1e3;
        *bw += (t2 - t1) * 1e3;
    }
    double t0 = rb_now();
    /* the clipping scale goes into the update instead of a pass over the gradients */
    *gnorm = clip_grad_norm(m->grads_mem, m->nparams, 0.0);
    float gscale = c->clip > 0 && *gnorm > c->clip ? (float)(c->clip / *gnorm) : 1.0f;
    if (isfinite(loss) && isfinite(*gnorm))
        adamw_update_scaled(m->params_mem, m->grads_mem, m->m_mem, m->v_mem, m->decay_mask, m->nparams, gscale,
                            (float)lr_at(c, step), c->beta1, c->beta2, c->eps, c->weight_decay, step);
    *op = (rb_now() - t0) * 1e3;
    return loss;
}

/* What a training run holds while it runs: the configuration and hooks,
 * the model, the task and its batch buffers, the random stream, the step
 * reached, the clock at the first step, and each step's times (ms: whole
 * step, forward, backward, optimiser), ntimed of them so far. */
typedef struct {
    const train_config *c;
    const train_hooks *h;
    model *m;
    task *t;
    batch_bufs bb;
    rb_rng rng;
    int step, ntimed;
    double start;
    double *st, *fws, *bws, *ops;
} train_state;

/* Evaluation on split (TASK_VAL or TASK_TEST) into *el, *ea; a validation
 * also goes to the on_eval hook. */
static int eval_split(train_state *s, int split, double *el, double *ea, char *err, size_t errlen) {
    if (evaluate(s->m, s->t, s->c, split, &s->bb, el, ea, err, errlen)) return -1;
    if (split == TASK_VAL && s->h && s->h->on_eval) {
        train_eval_info ei = {s->step, *el, *el / M_LN2, *ea, rb_now() - s->start};
        s->h->on_eval(s->h->ctx, &ei);
    }
    return 0;
}

/* After a step that is not the last: the periodic evaluation and the
 * checkpoint (every save_every steps, or when the should_save hook asks). */
static int between_steps(train_state *s, char *err, size_t errlen) {
    const train_config *c = s->c;
    const train_hooks *h = s->h;
    if (c->eval_every > 0 && s->step % c->eval_every == 0) {
        double el, ea;
        if (eval_split(s, TASK_VAL, &el, &ea, err, errlen)) return -1;
    }
    int save = c->save_every > 0 && s->step % c->save_every == 0;
    if (h && h->should_save && c->save[0]) save |= h->should_save(h->ctx, s->step) != 0;
    if (c->save[0] && save && checkpoint_save(c->save, s->m, s->step, &s->rng, c, err, errlen)) return -1;
    return 0;
}

/* The steps from s->step to the configured count (or until stop_after or
 * the should_stop hook), each timed and reported to the on_step hook. */
static int run_steps(train_state *s, train_result *r, char *err, size_t errlen) {
    const train_config *c = s->c;
    const train_hooks *h = s->h;
    r->steps_done = s->step;
    s->start = rb_now();
    while (s->step < c->steps) {
        int step = ++s->step, fail;
        double fw, bw, op, gnorm;
        double t0 = rb_now();
        double loss = one_step(s->m, c, step, s->t, &s->rng, &s->bb, &fw, &bw, &op, &gnorm, err, errlen, &fail);
        double ms = (rb_now() - t0) * 1e3;
        if (fail) return -1;
        if (!isfinite(loss) || !isfinite(gnorm))
            return rb_fail(err, errlen, "%s became %s at step %d", isfinite(loss) ? "gradient norm" : "loss",
                           isnan(isfinite(loss) ? gnorm : loss) ? "NaN" : "infinite", step);
        r->steps_done = step;
        r->final_train_loss = loss;
        s->st[s->ntimed] = ms, s->fws[s->ntimed] = fw, s->bws[s->ntimed] = bw, s->ops[s->ntimed] = op;
        s->ntimed++;
        if (h && h->on_step) {
            train_step_info si = {step, loss, lr_at(c, step), gnorm, (double)c->batch * c->seq * c->accum / (ms / 1e3),
                                  fw, bw, op, ms, rb_now() - s->start};
            h->on_step(h->ctx, &si);
        }
        int last = step == c->steps || (c->stop_after > 0 && step >= c->stop_after) || (h && h->should_stop &&
                                                                                         h->should_stop(h->ctx));
        if (last) break;
        if (between_steps(s, err, errlen)) return -1;
    }
    return 0;
}

/* After the last step: the timing medians, the final validation and test
 * evaluations, and the peak RSS (recorded even when the evaluation loss
 * is not finite, which fails the run). */
static int finish_run(train_state *s, train_result *r, char *err, size_t errlen) {
    const train_config *c = s->c;
    int n = s->ntimed;
    fill_common(r, c, s->m);
    /* the first step warms caches and the backends' lazy state: not timed when there are others */
    if (n > 1) fill_medians(r, s->st + 1, s->fws + 1, s->bws + 1, s->ops + 1, n - 1, c);
    else fill_medians(r, s->st, s->fws, s->bws, s->ops, n, c);
    double el, ea;
    if (eval_split(s, TASK_VAL, &el, &ea, err, errlen)) return -1;
    r->final_eval_loss = el, r->bits_per_token = el / M_LN2, r->accuracy = ea;
    if (eval_split(s, TASK_TEST, &el, &ea, err, errlen)) return -1;
    r->test_loss = el, r->test_bits_per_token = el / M_LN2, r->test_accuracy = ea;
    int rc = 0;
    if (!isfinite(r->final_eval_loss))
        rc = rb_fail(err, errlen, "evaluation loss became %s after step %d",
                     isnan(r->final_eval_loss) ? "NaN" : "infinite", s->step);
    r->peak_rss = rb_peak_rss();
    return rc;
}

int train_run(const train_config *cin, const train_hooks *h, train_result *r, char *err, size_t errlen) {
    train_config cc = *cin, *c = &cc;
    train_state s = {.c = c, .h = h};
    rb_reset_peak_rss(); /* peak RSS of this run, not of an earlier one in the same process */
    memset(r, 0, sizeof *r);
    r->final_eval_loss = r->bits_per_token = r->accuracy = NAN;
    r->test_loss = r->test_bits_per_token = r->test_accuracy = r->final_train_loss = NAN;
    if (train_config_check(c, err, errlen)) return -1;
    if (!(s.t = task_open(c, err, errlen))) return -1;
    if (!(s.m = model_create(c, err, errlen))) {
        task_free(s.t);
        return -1;
    }
    size_t BT = (size_t)c->batch * c->seq;
    s.bb = (batch_bufs){mallocCheck(BT * sizeof(int)), mallocCheck(BT * sizeof(int)), mallocCheck(BT * sizeof(float))};
    int nmax = c->steps > 0 ? c->steps : 1;
    s.st = mallocCheck(4 * nmax * sizeof(double));
    s.fws = s.st + nmax, s.bws = s.st + 2 * nmax, s.ops = s.st + 3 * nmax;
    rb_rng_seed(&s.rng, task_stream_seed(c->seed, TASK_TRAIN, 0));
    int rc = 0;
    if (c->load[0] && checkpoint_load(c->load, s.m, &s.step, &s.rng, train_config_hash(c), err, errlen)) rc = -1;
    if (rc == 0) rc = run_steps(&s, r, err, errlen);
    if (rc == 0 && c->save[0] && checkpoint_save(c->save, s.m, s.step, &s.rng, c, err, errlen)) rc = -1;
    if (rc == 0) rc = finish_run(&s, r, err, errlen);
    free(s.st);
    free(s.bb.tokens);
    free(s.bb.targets);
    free(s.bb.mask);
    model_free(s.m);
    task_free(s.t);
    return rc;
}

/* The bench's machine load and whether its spread or the load make the
 * timing untrustworthy (measure.h's rule, as `attn` uses). */
static void judge_noise(train_result *r, const rb_load *load) {
    r->load_avg = load->load_avg, r->other_cpu = load->other_cpu;
    rb_noise_rule rule;
    rb_noise_rule_default(&rule, rb_threads());
    rb_summary s = {.n = r->steps_timed, .median = r->median_step_ms, .iqr = r->step_ms_iqr};
    r->noisy = rb_noise_judge(&rule, &s, load, r->noise, sizeof r->noise);
}

int train_bench_step(const train_config *cin, int repeat, int warmup, double min_time, train_result *r, char *err,
                     size_t errlen) {
    train_config cc = *cin, *c = &cc;
    rb_reset_peak_rss(); /* peak RSS of this run, not of an earlier one in the same process */
    memset(r, 0, sizeof *r);
    r->final_eval_loss = r->bits_per_token = r->accuracy = NAN;
    r->test_loss = r->test_bits_per_token = r->test_accuracy = r->final_train_loss = NAN;
    if (repeat < 1) return rb_fail(err, errlen, "repeat must be at least 1");
    if (warmup < 0) warmup = 0;
    if (!(min_time >= 0)) min_time = 0;
    if (c->steps < repeat + warmup) c->steps = repeat + warmup; /* so warm-up/cosine see a sane schedule */
    if (train_config_check(c, err, errlen)) return -1;
    model *m = model_create(c, err, errlen);
    if (!m) return -1;
    size_t BT = (size_t)c->batch * c->seq;
    batch_bufs bb = {mallocCheck(BT * sizeof(int)), mallocCheck(BT * sizeof(int)), NULL};
    rb_rng rng;
    rb_rng_seed(&rng, task_stream_seed(c->seed, TASK_TRAIN, 0));
    for (size_t i = 0; i < BT; i++) bb.tokens[i] = (int)rb_rng_below(&rng, (uint32_t)c->vocab);
    for (size_t i = 0; i < BT; i++) bb.targets[i] = (int)rb_rng_below(&rng, (uint32_t)c->vocab);
    /* at least `repeat` timed steps, and more (up to BENCH_MAX_STEPS) until
     * min_time seconds are sampled: a run shorter than /proc/stat's ticks
     * can tell says nothing about the machine's load (measure.h) */
    enum { BENCH_MAX_STEPS = 10000 };
    int cap = repeat;
    double *v[4]; /* step, forward, backward, optimiser ms */
    for (int a = 0; a < 4; a++) v[a] = mallocCheck((size_t)cap * sizeof(double));
    int rc = 0, timed = 0;
    double sampled = 0;
    rb_load_probe probe;
    for (int i = 0; i < warmup || timed < repeat || (sampled < min_time && timed < BENCH_MAX_STEPS); i++) {
        if (i == warmup) rb_load_begin(&probe);
        double fw, bw, op, gnorm;
        int fail;
        double t0 = rb_now();
        double loss = one_step(m, c, i + 1, NULL, &rng, &bb, &fw, &bw, &op, &gnorm, err, errlen, &fail);
        double ms = (rb_now() - t0) * 1e3;
        if (!isfinite(loss)) {
            rc = rb_fail(err, errlen, "loss became %s at step %d", isnan(loss) ? "NaN" : "infinite", i + 1);
            break;
        }
        r->final_train_loss = loss;
        r->steps_done = i + 1;
        if (i >= warmup) {
            if (timed == cap) {
                cap *= 2;
                for (int a = 0; a < 4; a++) v[a] = reallocCheck(v[a], (size_t)cap * sizeof(double));
            }
            v[0][timed] = ms, v[1][timed] = fw, v[2][timed] = bw, v[3][timed] = op;
            timed++;
            sampled += ms / 1e3;
        }
    }
    if (rc == 0) {
        rb_load load;
        rb_load_end(&probe, &load);
        fill_common(r, c, m);
        fill_medians(r, v[0], v[1], v[2], v[3], timed, c);
        judge_noise(r, &load);
    }
    for (int a = 0; a < 4; a++) free(v[a]);
    free(bb.tokens);
    free(bb.targets);
    model_free(m);
    return rc;
}
