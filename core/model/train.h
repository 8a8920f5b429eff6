/* train.h: training one transformer language model on one task, the unit of
 * work behind `routebench train` and the sweep runner's `train` and `bench`
 * trials. A train_config holds every knob (model shape, per-layer attention
 * backends and their parameters, optimiser, schedule, task); train_run trains
 * and evaluates, reporting progress through optional hooks so the caller
 * decides where numbers go (terminal, SQLite); train_bench_step times whole
 * model steps without caring about learning. Every field can also be set by
 * name from a string (train_config_set), which is what the CLI flags and the
 * YAML sweep parser use, so a new field is one table entry in train.c. */
#ifndef RB_TRAIN_H
#define RB_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "attn/attn.h"

#define TRAIN_MAX_LAYERS 64
#define TRAIN_NAME_LEN 32
#define TRAIN_PATH_LEN 512
#define TRAIN_MAX_STATS 96 /* averaged statistics plus per-layer ones (unrouted_share.L<l>) */
/* Room for train_config_to_text of any config (every key, the paths full). */
#define TRAIN_CONFIG_TEXT_LEN 8192

/* params.def's pos choices, in order */
enum { TRAIN_POS_LEARNED = 0, TRAIN_POS_SINUSOIDAL = 1, TRAIN_POS_ROTARY = 2, TRAIN_POS_NONE = 3 };

typedef struct {
    /* --- model --- */
    int vocab;         /* 0 = set by the task (256 for text, copy_vocab, ...) */
    int d_model;       /* default 256 */
    int layers;        /* default 4 */
    int heads;         /* default 4; head_dim = d_model / heads */
    int mlp_mult;      /* MLP hidden width = mlp_mult * d_model, default 4 */
    int seq;           /* tokens per sequence (model context), default 256 */
    int pos;           /* TRAIN_POS_LEARNED (default), _SINUSOIDAL, _ROTARY (q and k) or _NONE */
    char backend[TRAIN_NAME_LEN];  /* attention backend of every layer, default "dense" */
    /* Per-layer override, comma separated ("local,local,routing,routing");
     * empty = none. Wins over backend and local_layers when set. */
    char layer_backends[TRAIN_NAME_LEN * 8];
    int local_layers;  /* the first local_layers layers use "local" (default 0) */
    /* window, clusters, assign, share_qk, local_heads, norm, decay,
     * kmeans_iters for every layer; batch/heads/seq/head_dim/seed/
     * commit_weight are filled in by the model. causal is always 1. */
    attn_params attn;
    float commit_beta; /* weight of the routing commitment loss, default 1e-4 */

    /* --- training --- */
    int batch;         /* sequences per micro-batch, default 8 */
    int accum;         /* micro-batches per optimiser step, default 1 */
    int steps;         /* optimiser steps, default 100 */
    int warmup;        /* linear warm-up steps, default min(100, steps/10) when -1 */
    float lr;          /* peak learning rate, default 3e-4 */
    float min_lr;      /* cosine decays to this, default lr/10 when < 0 */
    float weight_decay;/* AdamW decoupled decay on matrices/embeddings, default 0.1 */
    float clip;        /* global gradient-norm clip, 0 = off, default 1.0 */
    float beta1, beta2, eps; /* AdamW, default 0.9, 0.95, 1e-8 */
    int eval_every;    /* steps between evaluations, 0 = only at the end; default 0 */
    int eval_batches;  /* micro-batches per evaluation, default 8 */

    /* --- task --- */
    char task[TRAIN_NAME_LEN];      /* text (default) | copy | recall | random */
    char data[TRAIN_PATH_LEN];      /* text corpus, default "data/kjv.txt" */
    double train_frac, val_frac;    /* split fractions, default 0.9 / 0.05; test is the rest */
    int copy_vocab;    /* copy: symbols 1..copy_vocab-1, 0 the separator; default 16.
                        * The copied w has (seq+1)/2 - 1 symbols: 0 w 0 w fills the sequence. */
    int recall_keys;   /* recall: number of distinct keys, default 16; a sequence stores
                        * min(keys, (seq+1)/4) pairs, then a 0 and as many queries as fit */
    int recall_values; /* recall: number of distinct values, default 16 */
    int random_vocab;  /* random: vocabulary, default 256 */

    uint64_t seed;     /* parameters, data order, generated tasks, backends; default 1 */

    /* --- checkpoints (train_run only; not part of the configuration hash) --- */
    char load[TRAIN_PATH_LEN];  /* resume from this checkpoint ("" = none) */
    char save[TRAIN_PATH_LEN];  /* write a checkpoint here at the end (and every save_every) */
    int save_every;             /* 0 = only at the end */
    int stop_after;             /* stop (and save) after this step although steps is larger; 0 = off */
} train_config;

void train_config_default(train_config *c);

/* Set one field by name from a string, e.g. ("d_model", "256"),
 * ("backend", "routing"), ("clusters", "auto"), ("pos", "sinusoidal"): the
 * parameters of core/util/params.def that live in a model (rb_param_in_model;
 * old spellings and dashes accepted). 0, or -1 with "key: message". */
int train_config_set(train_config *c, const char *key, const char *value, char *err, size_t errlen);

/* The field of parameter d in c (NULL when d is not in a model) and, for
 * text fields, its size. */
void *train_config_field(train_config *c, const rb_param *d, size_t *size);

/* c as text, one `key=value` line per model parameter of params.def, which
 * train_config_from_text (train_config_set per line) applied to a default
 * config turns back into a config with the same train_config_hash (floats are
 * written to read back bit for bit). Returns the length written (without the
 * NUL), or -1 when out is too small or a value cannot be written as one line
 * (a string holding a newline, an enum field out of range). */
int train_config_to_text(const train_config *c, char *out, size_t len);

/* Apply the `key=value` lines of text (as train_config_to_text writes them;
 * empty lines are skipped) to c with train_config_set. 0, or -1 with a message
 * naming the line. */
int train_config_from_text(train_config *c, const char *text, char *err, size_t errlen);

/* Resolve defaults (vocab from the task, warmup, min_lr, the per-layer
 * backends) and validate everything, including each layer's backend
 * validate(). Does not read the data file. 0, or -1 with a message. */
int train_config_check(train_config *c, char *err, size_t errlen);
/* The same with the parameter at fault in e->key ("" when none is). */
int train_config_check_e(train_config *c, rb_err *e);

/* Layer l's attention parameters as its backend sees them, validated (auto
 * values resolved): c->attn with the model's sizes, and in a layer whose
 * backend is `local` (local_layers, the paper's sparsity_skip_first, or a
 * layer_backends item) window = local_window when that is set, so local
 * layers and hybrid's local heads share one block size. 0, or -1. */
int train_layer_params(const train_config *c, int l, attn_params *p);

/* The parameters layer l reads (attn_backend.uses bits): its backend's,
 * plus local_window's bit for a local layer (see train_layer_params). */
unsigned train_layer_uses(const train_config *c, int l);

/* Name of layer l's backend: the registry's own string (valid for the
 * program's life), "" when the configuration names no registered backend
 * for that layer (train_config_check says which). */
const char *train_layer_backend(const train_config *c, int l);

/* 64-bit hash of what defines the model and its state (shapes, backends,
 * attention parameters, vocab, task; not the optimiser, schedule, batch or
 * seed): a checkpoint from a config with another hash is refused. */
uint64_t train_config_hash(const train_config *c);

/* Analytic FLOPs of one optimiser step (forward + backward of every
 * micro-batch): 6 * (matmul parameters incl. the tied output projection) *
 * tokens, plus each layer's attention flops() (forward + backward). */
double train_flops_per_step(const train_config *c);

typedef struct {
    int step;            /* 1-based, after the update */
    double loss;         /* mean training loss of the step (incl. commit_beta * commitment) */
    double lr;
    double grad_norm;    /* before clipping */
    double tokens_per_s;
    double fwd_ms, bwd_ms, opt_ms;
    double step_ms;
    double elapsed_s;
} train_step_info;

typedef struct {
    int step;
    double eval_loss;       /* mean cross-entropy (nats) over the positions that count */
    double bits_per_token;  /* eval_loss / ln 2 */
    double accuracy;        /* copy and recall: share of counted positions predicted right; NAN otherwise */
    double elapsed_s;
} train_eval_info;

typedef struct {
    void *ctx;
    void (*on_step)(void *ctx, const train_step_info *s); /* may be NULL */
    void (*on_eval)(void *ctx, const train_eval_info *e); /* may be NULL */
    int (*should_stop)(void *ctx);  /* nonzero: stop after this step (Ctrl-C); may be NULL */
    /* nonzero: save the checkpoint (c->save) after this step, beside
     * save_every; asked after the step's evaluation; may be NULL */
    int (*should_save)(void *ctx, int step);
} train_hooks;

typedef struct {
    int steps_done;
    double final_train_loss;
    double final_eval_loss, bits_per_token, accuracy;  /* validation split, at the end */
    double test_loss, test_bits_per_token, test_accuracy;
    double median_step_ms, fwd_ms, bwd_ms, opt_ms;     /* medians (bench: over repeats) */
    double step_ms_iqr, step_ms_min, step_ms_max;      /* spread of the timed steps */
    int steps_timed;                                   /* how many steps the medians are over */
    double tokens_per_s;
    double flops_per_step, gflops;                     /* analytic flops / median step time */
    size_t params;                                     /* parameter count */
    size_t peak_rss;
    size_t arena_bytes, arena_peak;                    /* activation arena size and peak live bytes */
    size_t saved_act_bytes;                            /* of the arena: what forward keeps for backward */
    double arena_per_token_layer;                      /* arena_bytes / (batch * seq) / layers */
    double load_avg, other_cpu;                        /* bench: the machine while the steps ran */
    int noisy;                                         /* bench: the timing is not trustworthy (why in noise) */
    char noise[160];
    size_t attn_bytes;                                 /* bytes held by all attention instances */
    /* backend statistics of the last forward, averaged over the layers that
     * report them (routing: commit_loss, cluster sizes, unrouted share...),
     * then unrouted_share.L<l> for each layer l that reports it */
    int nstats;
    char stat_names[TRAIN_MAX_STATS][48];
    double stat_values[TRAIN_MAX_STATS];
} train_result;

/* Train c (checked inside) with hooks h (NULL = none), fill r. 0 ok; -1 on an
 * error with a message, e.g. a missing corpus, no memory, or
 * "loss became NaN at step 37". */
int train_run(const train_config *c, const train_hooks *h, train_result *r, char *err, size_t errlen);

/* Time whole training steps (forward, backward, optimiser) of the model in c
 * on random tokens: `warmup` untimed steps, then `repeat` timed ones and more
 * until min_time seconds have been timed (at most 10000 steps), so the
 * machine's load over them can be read (RB_LOAD_MIN_S); medians into r
 * (r->steps_timed says how many). No data file needed. 0, or -1 with a
 * message. */
int train_bench_step(const train_config *c, int repeat, int warmup, double min_time, train_result *r, char *err,
                     size_t errlen);

#endif
