/* attn.h: the one interface every attention backend implements, and the
 * registry that finds a backend by name.
 *
 * A backend is a const struct of function pointers (ggml's backend_i idea).
 * An instance (struct attn) is made for one fixed parameter set and owns every
 * buffer its forward and backward need, so forward/backward never allocate.
 * Instances embed `attn` as their first member and cast.
 *
 * Layout of q, k, v, out and their gradients: [batch, heads, seq, head_dim],
 * row-major, float32. Attention is scaled by 1/sqrt(head_dim).
 *
 * FLOP convention (attn_backend.flops): 2 FLOPs per multiply-add; only the
 * query-key pairs a query actually attends are counted (a causal dense layer
 * counts n(n+1)/2 pairs even though tiles on the diagonal compute more).
 * Forward: 4*d per attended pair (q.k and p*v). Backward: 8*d per attended
 * pair (dV, dP, dQ, dK), recomputation not counted. Extra work a backend does
 * (routing: distances to centroids, 2*n*K*d per head and pass) is added in
 * the same convention. Softmax exponentials are not counted.
 *
 * Nothing in core/ switches on a backend's name: new behaviour goes through
 * an optional method here (NULL = not supported; callers check), and which
 * parameters a backend reads through its `uses` bits. Two names are known to
 * core/, on purpose: "dense" is the reference (attn_check and the tests
 * compare with it) and the default backend (params.def), and the model's
 * local_layers parameter puts "local" in the first layers (the paper's
 * sparsity_skip_first).
 */
#ifndef RB_ATTN_H
#define RB_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "util/params.h"
#include "util/status.h"

enum { ATTN_ASSIGN_TOPK = 0, ATTN_ASSIGN_ARGMAX = 1 };
enum { ATTN_NORM_L2 = 0, ATTN_NORM_LAYERNORM = 1 };

/* forward flags */
enum {
    ATTN_EVAL = 0,
    ATTN_TRAIN = 1,       /* training pass: routing moves its centroids */
    ATTN_KEEP_ROUTES = 2, /* reuse the previous pass's cluster choice (gradient checks) */
};

enum { ATTN_PASS_FWD = 0, ATTN_PASS_BWD = 1 };

/* The parameters of one attention layer: a struct made from the W_A, W_AA
 * and W_AT lines of core/util/params.def (name, C type from the PT_ type),
 * so a new parameter is one line there. What each field means, its range
 * and default: params.def. The ATTN_USES_* bits a backend declares in
 * attn_backend.uses are in core/util/params.h. */
#define RB_CTYPE_PT_INT int
#define RB_CTYPE_PT_BOOL int
#define RB_CTYPE_PT_ENUM int
#define RB_CTYPE_PT_FLOAT float
#define RB_CTYPE_PT_DOUBLE double
#define RB_CTYPE_PT_U64 uint64_t
#define RB_ATTN_FIELD_W_A(type, name) RB_CTYPE_##type name;
#define RB_ATTN_FIELD_W_AA(type, name) RB_CTYPE_##type name;
#define RB_ATTN_FIELD_W_AT(type, name) RB_CTYPE_##type name;
#define RB_ATTN_FIELD_W_T(type, name)
#define RB_ATTN_FIELD_W_SEL(type, name)
typedef struct {
#define PARAM(name, type, where, ...) RB_ATTN_FIELD_##where(type, name)
#define ALIAS(old, name)
#include "util/params.def"
#undef PARAM
#undef ALIAS
} attn_params;

/* Every field at its params.def default for one layer (adef): batch 1,
 * heads 1, seq 0 (to be set), head_dim 64, causal, the rest auto. */
void attn_params_default(attn_params *p);
/* Set the field of parameter key (a params.def name or old spelling) from
 * text, checked by the table's rules. 0, or -1 with "key: message". */
int attn_params_set(attn_params *p, const char *key, const char *text, char *err, size_t errlen);
/* The field of parameter d in p, or NULL when d is not an attention
 * parameter (W_T, W_SEL). */
void *attn_params_field(attn_params *p, const rb_param *d);
const void *attn_params_cfield(const attn_params *p, const rb_param *d);
/* 1 when backend uses bits `uses` read parameter d (d->uses is 0 or shares a bit). */
int attn_param_applies(const rb_param *d, unsigned uses);
/* The parameters backend bits `uses` read, as members of the JSON object
 * being written (in params.def order; the seed is left out).
 * RB_FMT_KEY: the trial-key form (integers and booleans as integers, reals
 * %.9g; PF_NEWKEY parameters only when not at their default), which must
 * never change; RB_FMT_TEXT: booleans as true/false, reals shortest. */
struct rb_jw;
void attn_params_json(struct rb_jw *w, const attn_params *p, unsigned uses, int fmt);

/* Checks what all backends need: every field within its params.def range
 * (or auto), and sizes that are not absurd; 0 or -1 + err. */
int attn_params_check_sizes(const attn_params *p, char *err, size_t errlen);

typedef struct {
    const char *name;
    double value;
} attn_stat;

typedef struct attn_backend attn_backend;

/* One group of a layer's heads that one backend computes with its own
 * parameters (hybrid: local heads with their window beside routing heads
 * with their clusters and window). */
typedef struct {
    const attn_backend *be; /* the registered backend of these heads */
    int first, heads;       /* heads first .. first + heads - 1 of the layer */
    attn_params p;          /* their resolved parameters (p.heads == heads) */
} attn_head_group;

typedef struct attn {
    const attn_backend *be;
    attn_params p;   /* resolved parameters (defaults filled in by validate) */
    size_t bytes;    /* bytes of buffers this instance holds (activations + workspace) */
} attn;

struct attn_backend {
    const char *name;
    const char *description; /* one line, for `routebench backends` */
    unsigned uses;           /* ATTN_USES_* bits */

    /* Fill the backend's defaults into p (window, clusters, share_qk, ...)
     * and check the combination (single parameters' ranges are the table's,
     * checked before). 0 on success; -1 with e->key naming the parameter at
     * fault, so a caller can point at it without reading the message. No
     * allocation. Required. */
    int (*validate)(attn_params *p, rb_err *e);

    /* Make an instance for p (validated), with a->be pointing at this
     * backend and a->p the resolved parameters. NULL with a message when
     * memory cannot be had. Required. */
    attn *(*create)(const attn_params *p, char *err, size_t errlen);

    /* out = attention(q, k, v), flags a combination of ATTN_TRAIN and
     * ATTN_KEEP_ROUTES. Saves what backward needs inside the instance.
     * Required. */
    void (*forward)(attn *a, float *out, const float *q, const float *k, const float *v, int flags);

    /* Gradients of the last forward's inputs given dout. Overwrites dq, dk
     * and dv (they are not accumulated). When keys are shared with queries
     * (routing's share_qk), k was not read and dk is written as zeros. q, k,
     * v and out are the same arrays the last forward saw. Required. */
    void (*backward)(attn *a, float *dq, float *dk, float *dv, const float *dout, const float *q,
                     const float *k, const float *v, const float *out);

    /* Analytic FLOPs of one pass (ATTN_PASS_FWD or ATTN_PASS_BWD) for p
     * (validated), in the convention at the top of this file. Required. */
    double (*flops)(const attn_params *p, int pass);

    /* Analytic bytes of activations/workspace an instance holds for p. Required. */
    size_t (*act_bytes)(const attn_params *p);

    /* Statistics of the last forward (routing: cluster sizes, unrouted share,
     * k-means objective, commitment loss as "commit_loss"). Writes up to max
     * entries, returns how many. Optional. */
    int (*stats)(const attn *a, attn_stat *out, int max);

    /* 1 when p makes this backend compute exactly dense attention (local with
     * window >= seq, ...), so tests and --check compare against `dense`.
     * Optional (NULL = never). */
    int (*equals_dense)(const attn_params *p);

    void (*destroy)(attn *a); /* Required. */

    /* Cluster membership of the last forward (routing; NULL elsewhere). Sets
     * *members to the positions, ascending, of cluster c for batch b, head h
     * and returns how many there are; keys = 0 asks for the query members
     * (whose outputs the cluster produces), keys = 1 for the key members (the
     * same list when Q and K are shared). -1 before the first forward or for
     * an index out of range. Optional. */
    int (*routes)(const attn *a, int b, int h, int c, int keys, const int **members);

    /* The centroids, [heads, clusters, head_dim] floats owned by the
     * instance, readable and writable (routing; NULL elsewhere). Calling it
     * marks them initialised: a forward after it will not initialise them
     * from data. Optional. */
    float *(*centroids)(attn *a);

    /* The heads of a layer with parameters p (validated) as groups, in head
     * order, each computed by one backend with its own parameters (hybrid).
     * Writes up to max groups and returns how many there are. Optional
     * (NULL = every head is this backend's, with p). */
    int (*head_groups)(const attn_params *p, attn_head_group *out, int max);
};

/* be->head_groups, or one group of every head with p when be has none. */
int attn_head_groups(const attn_backend *be, const attn_params *p, attn_head_group *out, int max);
/* "local heads 0-3 (window 256), routing heads 4-7 (clusters 16, window 512)"
 * for a layer of backend be with p (validated) into buf (returned). */
const char *attn_describe_heads(const attn_backend *be, const attn_params *p, char *buf, size_t len);

/* Registry (core/attn/attn.c; the list itself is variants/registry.def). */
const attn_backend *attn_find(const char *name);
int attn_count(void);
const attn_backend *attn_get(int i);
/* "dense, dense-naive, local, ..." into buf (returned), for messages. */
const char *attn_names(char *buf, size_t len);
/* "unknown backend 'NAME' (did you mean 'X'? known: ...)" into err; -1. */
int attn_fail_unknown(const char *name, char *err, size_t errlen);

/* Whether an instance for p (validated) plus extra_bytes of the caller's
 * own fits in the memory this machine has available now (MemAvailable):
 * 0, or -1 with "BACKEND at seq N needs X GiB ...; this machine has Y GiB
 * available". Memory is a property of the machine, not of the parameters,
 * so validate() does not check it: a sweep records such a trial as
 * unsupported instead of refusing the whole file. */
int attn_memory_check(const attn_backend *be, const attn_params *p, double extra_bytes, char *err, size_t errlen);

/* attn_params_check_sizes, then be->validate: 0, or -1 with e filled (the
 * key of the parameter at fault, "" when none is). */
int attn_validate(const attn_backend *be, attn_params *p, rb_err *e);
/* The same with a message only. */
int attn_validate_msg(const attn_backend *be, attn_params *p, char *err, size_t errlen);

/* Convenience: find by name, validate, check memory and create, with one
 * error message.
 * p is updated with the resolved parameters. */
attn *attn_make(const char *name, attn_params *p, char *err, size_t errlen);
void attn_free(attn *a);

#endif
