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
#include "util/kernels.h"
#include "model/model.h"
#include "model/tasks.h"

void train_config_default(train_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab = 0;
    c->d_model = 256;
    c->layers = 4;
    c->heads = 4;
    c->mlp_mult = 4;
    c->seq = 256;
    c->pos = TRAIN_POS_LEARNED;
    snprintf(c->backend, sizeof c->backend, "dense");
    c->local_layers = 0;
    attn_params_default(&c->attn);
    c->attn.causal = 1;
    c->commit_beta = 1e-4f;
    c->batch = 8;
    c->accum = 1;
    c->steps = 100;
    c->warmup = -1;
    c->lr = 3e-4f;
    c->min_lr = -1;
    c->weight_decay = 0.1f;
    c->clip = 1.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->eps = 1e-8f;
    c->eval_every = 0;
    c->eval_batches = 8;
    snprintf(c->task, sizeof c->task, "text");
    snprintf(c->data, sizeof c->data, "data/kjv.txt");
    c->train_frac = 0.9;
    c->val_frac = 0.05;
    c->copy_vocab = 16;
    c->recall_keys = 16;
    c->recall_values = 16;
    c->random_vocab = 256;
    c->seed = 1;
}

/* ---- set by name ---- */

enum { K_INT, K_FLOAT, K_DOUBLE, K_STR, K_U64, K_POS, K_CLUSTERS, K_ASSIGN, K_NORM };

typedef struct {
    const char *key;
    int type;
    size_t off, len;
    long lo, hi;
    const char *help;
} key_def;

#define I(k, f, lo, hi, h) {k, K_INT, offsetof(train_config, f), 0, lo, hi, h}
#define FL(k, f, h) {k, K_FLOAT, offsetof(train_config, f), 0, 0, 0, h}
#define DB(k, f, h) {k, K_DOUBLE, offsetof(train_config, f), 0, 0, 0, h}
#define S(k, f, h) {k, K_STR, offsetof(train_config, f), sizeof(((train_config *)0)->f), 0, 0, h}

static const key_def keys[] = {
    I("vocab", vocab, 0, 1 << 24, "vocabulary size (default 0: the task's)"),
    I("d_model", d_model, 1, 1 << 16, "model width (default 256)"),
    I("layers", layers, 1, TRAIN_MAX_LAYERS, "transformer blocks (default 4)"),
    I("heads", heads, 1, 1024, "attention heads; must divide d_model (default 4)"),
    I("mlp_mult", mlp_mult, 1, 64, "MLP hidden width as a multiple of d_model (default 4)"),
    I("seq", seq, 1, 1 << 22, "tokens per sequence (default 256)"),
    {"pos", K_POS, offsetof(train_config, pos), 0, 0, 0, "positions: learned|sinusoidal (default learned)"},
    S("backend", backend, "attention backend of every layer (default dense)"),
    S("layer_backends", layer_backends, "per-layer backends, comma separated, one per layer (default: none)"),
    I("local_layers", local_layers, 0, TRAIN_MAX_LAYERS, "the first N layers use local attention (default 0)"),
    I("window", attn.window, 0, 1 << 22, "local block / routing cluster size (default 0: backend's)"),
    {"clusters", K_CLUSTERS, offsetof(train_config, attn.clusters), 0, 0, 0,
     "routing centroids per head, N|auto (default auto = sqrt(seq))"},
    I("local_heads", attn.local_heads, -1, 1024, "hybrid: local heads, the rest routing (default -1: heads/2)"),
    I("share_qk", attn.share_qk, -1, 1, "routing: keys = queries, -1|0|1 (default -1: shared when causal)"),
    {"assign", K_ASSIGN, offsetof(train_config, attn.assign), 0, 0, 0, "routing: topk|argmax (default topk)"},
    {"norm", K_NORM, offsetof(train_config, attn.norm), 0, 0, 0, "routing vectors: l2|layernorm (default l2)"},
    FL("decay", attn.decay, "routing: k-means EMA decay (default 0.999)"),
    I("kmeans_iters", attn.kmeans_iters, 0, 1000, "routing: Lloyd iterations at init (default 3)"),
    FL("commit_beta", commit_beta, "weight of the routing commitment loss (default 1e-4)"),
    I("batch", batch, 1, 1 << 20, "sequences per micro-batch (default 8)"),
    I("accum", accum, 1, 1 << 20, "micro-batches per optimiser step (default 1)"),
    I("steps", steps, 0, 1 << 30, "optimiser steps (default 100)"),
    I("warmup", warmup, -1, 1 << 30, "linear warm-up steps (default -1: min(100, steps/10))"),
    FL("lr", lr, "peak learning rate (default 3e-4)"),
    FL("min_lr", min_lr, "final learning rate of the cosine decay (default -1: lr/10)"),
    FL("weight_decay", weight_decay, "AdamW weight decay on matrices and embeddings (default 0.1)"),
    FL("clip", clip, "global gradient-norm clip, 0 = off (default 1.0)"),
    FL("beta1", beta1, "AdamW beta1 (default 0.9)"),
    FL("beta2", beta2, "AdamW beta2 (default 0.95)"),
    FL("eps", eps, "AdamW epsilon (default 1e-8)"),
    I("eval_every", eval_every, 0, 1 << 30, "evaluate every N steps, 0 = only at the end (default 0)"),
    I("eval_batches", eval_batches, 1, 1 << 20, "micro-batches per evaluation (default 8)"),
    S("task", task, "text|copy|recall|random (default text)"),
    S("data", data, "corpus of the text task (default data/kjv.txt; `make data` writes it)"),
    DB("train_frac", train_frac, "training share of the data (default 0.9)"),
    DB("val_frac", val_frac, "validation share; test is the rest (default 0.05)"),
    I("copy_vocab", copy_vocab, 2, 1 << 20, "copy: symbols 1..V-1 and the separator 0 (default 16)"),
    I("recall_keys", recall_keys, 1, 1 << 20, "recall: distinct keys (default 16)"),
    I("recall_values", recall_values, 1, 1 << 20, "recall: distinct values (default 16)"),
    I("random_vocab", random_vocab, 1, 1 << 24, "random: vocabulary (default 256)"),
    {"seed", K_U64, offsetof(train_config, seed), 0, 0, 0, "random seed (default 1)"},
    S("load", load, "resume from this checkpoint (default none)"),
    S("save", save, "write a checkpoint here at the end (default none)"),
    I("save_every", save_every, 0, 1 << 30, "also save every N steps (default 0: only at the end)"),
    I("stop_after", stop_after, 0, 1 << 30, "stop after step N although steps is larger (default 0: off)"),
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

const train_config_key *train_config_keys(int *n) {
    static train_config_key out[NKEYS];
    for (int i = 0; i < NKEYS; i++) out[i] = (train_config_key){keys[i].key, keys[i].help};
    *n = NKEYS;
    return out;
}

static int key_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a == '-' ? '_' : *a, y = *b == '-' ? '_' : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

static int parse_long(const char *v, long *out) {
    char *end;
    if (!v || !*v) return -1;
    long x = strtol(v, &end, 10);
    if (*end) return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double *out) {
    char *end;
    if (!v || !*v) return -1;
    double x = strtod(v, &end);
    if (*end || !isfinite(x)) return -1;
    *out = x;
    return 0;
}

int train_config_set(train_config *c, const char *key, const char *value, char *err, size_t errlen) {
    const key_def *k = NULL;
    for (int i = 0; i < NKEYS; i++)
        if (key_eq(keys[i].key, key)) k = &keys[i];
    if (!k) return rb_fail(err, errlen, "unknown training option '%s'", key);
    if (!value) return rb_fail(err, errlen, "%s needs a value", k->key);
    char *field = (char *)c + k->off;
    long l;
    double d;
    switch (k->type) {
    case K_INT:
        if (parse_long(value, &l)) return rb_fail(err, errlen, "%s: '%s' is not an integer", k->key, value);
        if (l < k->lo || l > k->hi)
            return rb_fail(err, errlen, "%s: %ld is out of range [%ld, %ld]", k->key, l, k->lo, k->hi);
        *(int *)field = (int)l;
        return 0;
    case K_FLOAT:
    case K_DOUBLE:
        if (parse_double(value, &d)) return rb_fail(err, errlen, "%s: '%s' is not a number", k->key, value);
        if (k->type == K_FLOAT) *(float *)field = (float)d;
        else *(double *)field = d;
        return 0;
    case K_STR:
        if (strlen(value) >= k->len)
            return rb_fail(err, errlen, "%s: '%s' is too long (at most %zu characters)", k->key, value, k->len - 1);
        snprintf(field, k->len, "%s", value);
        return 0;
    case K_U64: {
        char *end;
        if (!*value || value[0] == '-') return rb_fail(err, errlen, "%s: '%s' is not a non-negative integer", k->key, value);
        unsigned long long x = strtoull(value, &end, 10);
        if (*end) return rb_fail(err, errlen, "%s: '%s' is not a non-negative integer", k->key, value);
        *(uint64_t *)field = x;
        return 0;
    }
    case K_POS:
        if (strcmp(value, "learned") == 0) *(int *)field = TRAIN_POS_LEARNED;
        else if (strcmp(value, "sinusoidal") == 0) *(int *)field = TRAIN_POS_SINUSOIDAL;
        else return rb_fail(err, errlen, "pos must be learned or sinusoidal (got '%s')", value);
        return 0;
    case K_CLUSTERS:
        if (strcmp(value, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        if (parse_long(value, &l) || l < 0 || l > (1 << 22))
            return rb_fail(err, errlen, "clusters must be a positive integer or auto (got '%s')", value);
        *(int *)field = (int)l;
        return 0;
    case K_ASSIGN:
        if (strcmp(value, "topk") == 0) *(int *)field = ATTN_ASSIGN_TOPK;
        else if (strcmp(value, "argmax") == 0) *(int *)field = ATTN_ASSIGN_ARGMAX;
        else return rb_fail(err, errlen, "assign must be topk or argmax (got '%s')", value);
        return 0;
    case K_NORM:
        if (strcmp(value, "l2") == 0) *(int *)field = ATTN_NORM_L2;
        else if (strcmp(value, "layernorm") == 0) *(int *)field = ATTN_NORM_LAYERNORM;
        else return rb_fail(err, errlen, "norm must be l2 or layernorm (got '%s')", value);
        return 0;
    }
    return rb_fail(err, errlen, "internal: key type");
}

/* Every key as it would be given to train_config_set. Floats and doubles are
 * written with as few digits as read back as the same value (at most 9 and
 * 17), so the configuration hash survives the round trip exactly. */
int train_config_to_text(const train_config *c, char *out, size_t len) {
    size_t off = 0;
    if (len) out[0] = 0;
    for (int i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const char *field = (const char *)c + k->off;
        char v[TRAIN_PATH_LEN + 32];
        int x = k->type == K_INT || k->type == K_POS || k->type == K_CLUSTERS || k->type == K_ASSIGN ||
                        k->type == K_NORM
                    ? *(const int *)field
                    : 0;
        switch (k->type) {
        case K_INT: snprintf(v, sizeof v, "%d", x); break;
        case K_FLOAT: { /* the shortest text that reads back as the same float: 0.999, not 0.999000013 */
            float f = *(const float *)field;
            for (int p = 6; p <= 9; p++) {
                snprintf(v, sizeof v, "%.*g", p, (double)f);
                if (strtof(v, NULL) == f) break;
            }
            break;
        }
        case K_DOUBLE: {
            double d = *(const double *)field;
            for (int p = 15; p <= 17; p++) {
                snprintf(v, sizeof v, "%.*g", p, d);
                if (strtod(v, NULL) == d) break;
            }
            break;
        }
        case K_STR:
            if (strlen(field) >= k->len || strchr(field, '\n')) return -1; /* one line per key */
            snprintf(v, sizeof v, "%s", field);
            break;
        case K_U64: snprintf(v, sizeof v, "%llu", (unsigned long long)*(const uint64_t *)field); break;
        case K_POS:
            if (x != TRAIN_POS_LEARNED && x != TRAIN_POS_SINUSOIDAL) return -1;
            snprintf(v, sizeof v, "%s", x == TRAIN_POS_SINUSOIDAL ? "sinusoidal" : "learned");
            break;
        case K_CLUSTERS:
            if (x < 0) return -1;
            if (x == 0) snprintf(v, sizeof v, "auto");
            else snprintf(v, sizeof v, "%d", x);
            break;
        case K_ASSIGN:
            if (x != ATTN_ASSIGN_TOPK && x != ATTN_ASSIGN_ARGMAX) return -1;
            snprintf(v, sizeof v, "%s", x == ATTN_ASSIGN_TOPK ? "topk" : "argmax");
            break;
        case K_NORM:
            if (x != ATTN_NORM_L2 && x != ATTN_NORM_LAYERNORM) return -1;
            snprintf(v, sizeof v, "%s", x == ATTN_NORM_L2 ? "l2" : "layernorm");
            break;
        default: return -1;
        }
        int n = snprintf(off < len ? out + off : NULL, off < len ? len - off : 0, "%s=%s\n", k->key, v);
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

const char *train_layer_backend(const train_config *c, int l) {
    static _Thread_local char buf[TRAIN_NAME_LEN];
    if (c->layer_backends[0]) {
        if (list_item(c->layer_backends, l, buf, sizeof buf)) buf[0] = 0;
        return buf;
    }
    return l < c->local_layers ? "local" : c->backend;
}

/* The attention parameters layer l's backend sees. */
static attn_params layer_params(const train_config *c) {
    attn_params p = c->attn;
    p.batch = c->batch;
    p.heads = c->heads;
    p.seq = c->seq;
    p.head_dim = c->heads > 0 ? c->d_model / c->heads : 0;
    p.causal = 1;
    p.seed = c->seed;
    p.commit_weight = c->commit_beta / (float)(c->accum > 0 ? c->accum : 1);
    return p;
}

int train_config_check(train_config *c, char *err, size_t errlen) {
    int tv = task_vocab(c, err, errlen);
    if (tv < 0) return -1;
    if (c->vocab == 0) c->vocab = tv;
    else if (c->vocab < tv)
        return rb_fail(err, errlen, "vocab %d is smaller than the %s task needs (%d)", c->vocab, c->task, tv);
    if (c->d_model < 1 || c->layers < 1 || c->layers > TRAIN_MAX_LAYERS || c->heads < 1 || c->mlp_mult < 1 ||
        c->seq < 1 || c->batch < 1 || c->accum < 1 || c->steps < 0)
        return rb_fail(err, errlen, "sizes must be positive (d_model %d, layers %d (max %d), heads %d, seq %d, "
                                    "batch %d, accum %d)",
                       c->d_model, c->layers, TRAIN_MAX_LAYERS, c->heads, c->seq, c->batch, c->accum);
    if (c->d_model % c->heads)
        return rb_fail(err, errlen, "heads (%d) must divide d_model (%d)", c->heads, c->d_model);
    if (c->pos != TRAIN_POS_LEARNED && c->pos != TRAIN_POS_SINUSOIDAL) return rb_fail(err, errlen, "bad pos");
    if (c->local_layers < 0 || c->local_layers > c->layers)
        return rb_fail(err, errlen, "local_layers %d must be in [0, layers = %d]", c->local_layers, c->layers);
    if (!(c->lr > 0)) return rb_fail(err, errlen, "lr must be positive (got %g)", c->lr);
    if (c->warmup < 0) c->warmup = RB_MIN(100, c->steps / 10);
    if (c->min_lr < 0) c->min_lr = c->lr / 10;
    if (c->min_lr > c->lr) return rb_fail(err, errlen, "min_lr %g exceeds lr %g", c->min_lr, c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 && c->eps > 0))
        return rb_fail(err, errlen, "AdamW needs 0 <= beta1, beta2 < 1 and eps > 0");
    if (c->weight_decay < 0 || c->clip < 0 || c->commit_beta < 0)
        return rb_fail(err, errlen, "weight_decay, clip and commit_beta must not be negative");
    if (c->eval_batches < 1) return rb_fail(err, errlen, "eval_batches must be at least 1");
    if (!(c->train_frac > 0 && c->val_frac > 0 && c->train_frac + c->val_frac < 1))
        return rb_fail(err, errlen, "split fractions must be positive and leave a test split (train %g, val %g)",
                       c->train_frac, c->val_frac);
    if (c->layer_backends[0]) {
        int items = 1;
        for (const char *p = c->layer_backends; *p; p++) items += *p == ',';
        if (items != c->layers)
            return rb_fail(err, errlen, "layer_backends lists %d backends for %d layers", items, c->layers);
    }
    for (int l = 0; l < c->layers; l++) {
        const char *name = train_layer_backend(c, l);
        const attn_backend *be = attn_find(name);
        if (!be) return rb_fail(err, errlen, "layer %d: unknown backend '%s' (known: %s)", l, name, attn_names());
        attn_params p = layer_params(c);
        char e2[256];
        if (attn_params_check_sizes(&p, e2, sizeof e2) || be->validate(&p, e2, sizeof e2))
            return rb_fail(err, errlen, "layer %d (%s): %s", l, name, e2);
    }
    return 0;
}

static uint64_t hmix(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t train_config_hash(const train_config *c) {
    uint64_t h = 0xcbf29ce484222325ull;
    int ints[] = {c->vocab,          c->d_model,        c->layers,        c->heads,          c->mlp_mult,
                  c->seq,            c->pos,            c->attn.window,   c->attn.clusters,  c->attn.local_heads,
                  c->attn.share_qk,  c->attn.assign,    c->attn.norm,     c->attn.kmeans_iters};
    h = hmix(h, ints, sizeof ints);
    h = hmix(h, &c->attn.decay, sizeof(float));
    for (int l = 0; l < c->layers; l++) {
        const char *n = train_layer_backend(c, l);
        h = hmix(h, n, strlen(n) + 1);
    }
    h = hmix(h, c->task, strlen(c->task) + 1);
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
        attn_params p = layer_params(c);
        char e2[256];
        if (be->validate(&p, e2, sizeof e2)) continue;
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
    r->attn_bytes = model_attn_bytes(m);
    r->peak_rss = rb_peak_rss();
    r->nstats = model_stats(m, r->stat_names, r->stat_values, TRAIN_MAX_STATS);
}

static void fill_medians(train_result *r, double *st, double *fw, double *bw, double *op, int n,
                         const train_config *c) {
    if (n <= 0) return;
    r->median_step_ms = rb_median(st, n);
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
    *gnorm = clip_grad_norm(m->grads_mem, m->nparams, c->clip);
    if (isfinite(loss) && isfinite(*gnorm))
        adamw_update(m->params_mem, m->grads_mem, m->m_mem, m->v_mem, m->decay_mask, m->nparams,
                     (float)lr_at(c, step), c->beta1, c->beta2, c->eps, c->weight_decay, step);
    *op = (rb_now() - t0) * 1e3;
    return loss;
}

int train_run(const train_config *cin, const train_hooks *h, train_result *r, char *err, size_t errlen) {
    train_config cc = *cin, *c = &cc;
    rb_reset_peak_rss(); /* peak RSS of this run, not of an earlier one in the same process */
    memset(r, 0, sizeof *r);
    r->final_eval_loss = r->bits_per_token = r->accuracy = NAN;
    r->test_loss = r->test_bits_per_token = r->test_accuracy = r->final_train_loss = NAN;
    if (train_config_check(c, err, errlen)) return -1;
    task *t = task_open(c, err, errlen);
    if (!t) return -1;
    model *m = model_create(c, err, errlen);
    if (!m) {
        task_free(t);
        return -1;
    }
    size_t BT = (size_t)c->batch * c->seq;
    batch_bufs bb = {mallocCheck(BT * sizeof(int)), mallocCheck(BT * sizeof(int)), mallocCheck(BT * sizeof(float))};
    int nmax = c->steps > 0 ? c->steps : 1;
    double *st = mallocCheck(4 * nmax * sizeof(double)), *fws = st + nmax, *bws = st + 2 * nmax, *ops = st + 3 * nmax;
    int ntimed = 0, rc = 0;
    uint64_t hash = train_config_hash(c);

    rb_rng rng;
    rb_rng_seed(&rng, task_stream_seed(c->seed, TASK_TRAIN, 0));
    int step = 0;
    if (c->load[0] && checkpoint_load(c->load, m, &step, &rng, hash, err, errlen)) {
        rc = -1;
        goto done;
    }
    r->steps_done = step;
    double start = rb_now();
    while (step < c->steps) {
        step++;
        double fw, bw, op, gnorm;
        int fail;
        double t0 = rb_now();
        double loss = one_step(m, c, step, t, &rng, &bb, &fw, &bw, &op, &gnorm, err, errlen, &fail);
        double ms = (rb_now() - t0) * 1e3;
        if (fail) {
            rc = -1;
            goto done;
        }
        if (!isfinite(loss) || !isfinite(gnorm)) {
            rb_fail(err, errlen, "%s became %s at step %d", isfinite(loss) ? "gradient norm" : "loss",
                    isnan(isfinite(loss) ? gnorm : loss) ? "NaN" : "infinite", step);
            rc = -1;
            goto done;
        }
        r->steps_done = step;
        r->final_train_loss = loss;
        st[ntimed] = ms, fws[ntimed] = fw, bws[ntimed] = bw, ops[ntimed] = op;
        ntimed++;
        if (h && h->on_step) {
            train_step_info si = {step, loss, lr_at(c, step), gnorm,
                                  (double)BT * c->accum / (ms / 1e3), fw, bw, op, ms, rb_now() - start};
            h->on_step(h->ctx, &si);
        }
        int last = step == c->steps || (c->stop_after > 0 && step >= c->stop_after) || (h && h->should_stop &&
                                                                                         h->should_stop(h->ctx));
        if (c->eval_every > 0 && step % c->eval_every == 0 && !last) {
            double el, ea;
            if (evaluate(m, t, c, TASK_VAL, &bb, &el, &ea, err, errlen)) {
                rc = -1;
                goto done;
            }
            if (h && h->on_eval) {
                train_eval_info ei = {step, el, el / M_LN2, ea, rb_now() - start};
                h->on_eval(h->ctx, &ei);
            }
        }
        if (c->save[0] && c->save_every > 0 && step % c->save_every == 0 && !last &&
            checkpoint_save(c->save, m, step, &rng, c, err, errlen)) {
            rc = -1;
            goto done;
        }
        if (last) break;
    }
    if (c->save[0] && checkpoint_save(c->save, m, step, &rng, c, err, errlen)) {
        rc = -1;
        goto done;
    }
    /* the first step warms caches and the backends' lazy state: not timed when there are others */
    fill_common(r, c, m);
    if (ntimed > 1) fill_medians(r, st + 1, fws + 1, bws + 1, ops + 1, ntimed - 1, c);
    else fill_medians(r, st, fws, bws, ops, ntimed, c);
    {
        double el, ea;
        if (evaluate(m, t, c, TASK_VAL, &bb, &el, &ea, err, errlen)) {
            rc = -1;
            goto done;
        }
        r->final_eval_loss = el, r->bits_per_token = el / M_LN2, r->accuracy = ea;
        if (h && h->on_eval) {
            train_eval_info ei = {step, el, el / M_LN2, ea, rb_now() - start};
            h->on_eval(h->ctx, &ei);
        }
        if (evaluate(m, t, c, TASK_TEST, &bb, &el, &ea, err, errlen)) {
            rc = -1;
            goto done;
        }
        r->test_loss = el, r->test_bits_per_token = el / M_LN2, r->test_accuracy = ea;
        if (!isfinite(r->final_eval_loss)) {
            rc = rb_fail(err, errlen, "evaluation loss became %s after step %d",
                         isnan(r->final_eval_loss) ? "NaN" : "infinite", step);
        }
    }
    r->peak_rss = rb_peak_rss();
done:
    free(st);
    free(bb.tokens);
    free(bb.targets);
    free(bb.mask);
    model_free(m);
    task_free(t);
    return rc;
}

int train_bench_step(const train_config *cin, int repeat, int warmup, train_result *r, char *err, size_t errlen) {
    train_config cc = *cin, *c = &cc;
    rb_reset_peak_rss(); /* peak RSS of this run, not of an earlier one in the same process */
    memset(r, 0, sizeof *r);
    r->final_eval_loss = r->bits_per_token = r->accuracy = NAN;
    r->test_loss = r->test_bits_per_token = r->test_accuracy = r->final_train_loss = NAN;
    if (repeat < 1) return rb_fail(err, errlen, "repeat must be at least 1");
    if (warmup < 0) warmup = 0;
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
    double *st = mallocCheck(4 * repeat * sizeof(double)), *fws = st + repeat, *bws = st + 2 * repeat,
           *ops = st + 3 * repeat;
    int rc = 0;
    for (int i = 0; i < warmup + repeat; i++) {
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
            int k = i - warmup;
            st[k] = ms, fws[k] = fw, bws[k] = bw, ops[k] = op;
        }
    }
    if (rc == 0) {
        fill_common(r, c, m);
        fill_medians(r, st, fws, bws, ops, repeat, c);
    }
    free(st);
    free(bb.tokens);
    free(bb.targets);
    model_free(m);
    return rc;
}
