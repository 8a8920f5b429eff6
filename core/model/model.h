/* model.h: the decoder-only transformer language model (GPT-2 shaped, llm.c
 * layout). Token embedding plus learned or sinusoidal positions (or none, or
 * rotary ones applied to q and k), L pre-norm blocks (layer norm -> QKV ->
 * [B,H,T,D] -> rotary -> attention backend -> merge ->
 * projection -> residual; layer norm -> MLP with GELU -> residual), a final
 * layer norm and an output projection tied to the embedding. Parameters,
 * their gradients and the AdamW moments are each one allocation carved into
 * tensors; activations live in one arena whose peak use is recorded. Each
 * layer owns its own attention instance made through attn.h, so the backend
 * may differ per layer without this file knowing any backend by name. */
#ifndef RB_MODEL_H
#define RB_MODEL_H

#include <stddef.h>

#include "attn/attn.h"
#include "model/rotary.h"
#include "model/train.h"

#define MODEL_NTENSORS 16

/* Parameter tensors, in this order in the one allocation. L = layers,
 * C = d_model, F = mlp_mult * C, V = vocab, T = seq. */
typedef struct {
    float *wte;      /* (V,C) token embedding, also the output projection */
    float *wpe;      /* (T,C) learned positions (0 floats when sinusoidal) */
    float *ln1w, *ln1b;         /* (L,C) */
    float *qkvw, *qkvb;         /* (L,3C,C), (L,3C) */
    float *attprojw, *attprojb; /* (L,C,C), (L,C) */
    float *ln2w, *ln2b;         /* (L,C) */
    float *fcw, *fcb;           /* (L,F,C), (L,F) */
    float *fcprojw, *fcprojb;   /* (L,C,F), (L,C) */
    float *lnfw, *lnfb;         /* (C) */
} model_tensors;

/* Bump allocator over one block: forward carves the saved activations,
 * backward its scratch on top and releases it; peak is the high-water mark. */
typedef struct {
    char *base;
    size_t size, used, peak;
} model_arena;

typedef struct {
    train_config c; /* resolved copy */
    int V, C, L, H, D, T, B, F;
    int accum;

    size_t sizes[MODEL_NTENSORS];
    size_t nparams;
    float *params_mem, *grads_mem, *m_mem, *v_mem; /* nparams each */
    unsigned char *decay_mask;                     /* nparams: 1 = weight decay applies */
    model_tensors params, grads;
    float *pos_table; /* (T,C) sinusoidal table, or NULL */
    rotary rope;      /* pos rotary: the angle tables (NULL tables otherwise) */

    attn **att; /* L instances */

    model_arena arena;
    /* saved activations (carved by forward); what backward recomputes
     * (layer norm outputs, GELU output, merged heads) is not kept */
    float *encoded;          /* (B,T,C) */
    float *ln1_mean, *ln1_rstd;        /* (L,B,T) each */
    float *qkvh;             /* (L,3,B,H,T,D) q, k, v in the backends' layout */
    float *atty;             /* (L,B,H,T,D) backend output */
    float *res2;             /* (L,B,T,C) residual after attention */
    float *ln2_mean, *ln2_rstd;        /* (L,B,T) each */
    float *res3;             /* (L,B,T,C) residual after the MLP = block output */
    float *lnf, *lnf_mean, *lnf_rstd; /* (B,T,C), (B,T), (B,T) */
    float *logits;           /* (B,T,V); backward overwrites them with their gradient */
    float *losses;           /* (B,T) */
    size_t act_bytes;        /* bytes of the above (the arena below work) */
    float *work;             /* forward's temporaries and backward's scratch (model.c carve_work) */
    int logits_valid;        /* logits hold the last forward's (not yet backward's gradient) */

    /* the last forward */
    const int *tokens, *targets;
    const float *mask;
    double mask_sum;
    double ce_loss, commit_loss; /* mean cross-entropy; sum over layers of commit_beta * commit_loss */
} model;

/* Build the model for c (already through train_config_check) with micro-batch
 * c->batch; accum is the number of micro-batches whose gradients are summed
 * before an update (the commitment-loss weight handed to the backends is
 * commit_beta / accum so the total matches). Parameters are initialised from
 * c->seed. NULL with a message on failure (backend refused, no memory). */
model *model_create(const train_config *c, char *err, size_t errlen);
/* The parameter tensors' sizes in floats for c (checked), into sizes (may be
 * NULL); returns their sum, the model's parameter count, without building it. */
size_t model_param_sizes(const train_config *c, size_t sizes[MODEL_NTENSORS]);
void model_free(model *m);

/* Forward on tokens (B,T); with targets (B,T) and an optional mask (B,T,
 * NULL = all positions count) returns the loss: mean cross-entropy over the
 * masked positions plus the weighted commitment losses. flags: ATTN_TRAIN /
 * ATTN_EVAL, optionally | ATTN_KEEP_ROUTES (reuse the previous forward's
 * cluster choice, for finite-difference checks). tokens, targets and mask
 * must stay alive until backward. Without targets returns 0 (logits only). */
double model_forward(model *m, const int *tokens, const int *targets, const float *mask, int flags);

void model_zero_grad(model *m);
/* Accumulate into the gradients d(scale * ce_loss + commitment terms)/dparams
 * for the last forward (which must have had targets). Once per forward: the
 * logits' memory is reused for their gradient. */
void model_backward(model *m, float scale);

/* Count argmax(logits) == target over the positions with mask > 0 (all when
 * mask is NULL) of the last forward. */
void model_accuracy(const model *m, long *correct, long *counted);

/* Statistics the layers' backends report for the last forward, averaged over
 * the layers reporting each name, followed by unrouted_share.L<l> for every
 * layer l reporting an unrouted share. Returns how many (at most max). */
int model_stats(const model *m, char names[][48], double *values, int max);

/* Bytes held by all attention instances. */
size_t model_attn_bytes(const model *m);

/* For the attention analysis (core/model/analyze.c): layer l's attention instance,
 * and the q, k, v (B,H,T,D) the model gave it in the last forward (valid
 * until the next forward). */
attn *model_layer_attn(model *m, int l);
void model_layer_qkv(const model *m, int l, const float **q, const float **k, const float **v);

#endif
