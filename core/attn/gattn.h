/* gattn.h: attention over one block of query rows and key rows that need not
 * be neighbours in the sequence, with the mask given by true positions. The
 * strided and lsh backends are both made of such blocks (a Sparse
 * Transformer head's residue class, a band of the sequence, an LSH chunk and
 * the chunk before it), so they share this one kernel and its
 * flash-style backward (the forward keeps one log-sum-exp per query row;
 * the backward recomputes the probabilities from it).
 *
 * Mask: key j is visible to query i when lo <= pos_j - pos_i <= hi; with
 * self_last the query's own position is visible only when nothing else is
 * (the Reformer's rule for shared query-key attention). Positions of the
 * queries and of the keys must each be strictly ascending: a query row's
 * visible keys are then one contiguous run, found by a moving pointer, and
 * a tile of query rows multiplies only the key columns some row can see.
 *
 * Rows are addressed with leading dimensions, so a residue class (every
 * l-th row) or a band is used in place, and gathered copies work the same.
 * No allocation: the workspace is carved by the caller (gattn_ws_bytes). */
#ifndef RB_GATTN_H
#define RB_GATTN_H

#include <limits.h>
#include <stddef.h>

/* Query rows per score tile (overridable at build time for tuning). */
#ifndef GATTN_TQ
#define GATTN_TQ 64
#endif

typedef struct {
    int lo, hi;    /* visible when lo <= pos_key - pos_query <= hi (INT_MIN/INT_MAX: unbounded) */
    int self_last; /* own position only when nothing else is visible */
} gattn_mask;

/* One block: mq queries against mk keys. */
typedef struct {
    int mq, mk, d;
    const int *qpos, *kpos; /* (mq), (mk), each strictly ascending */
    const float *q;         /* (mq) rows, row stride ldq */
    const float *k, *v;     /* (mk) rows, row stride ldk */
    int ldq, ldk;
    float *o;               /* forward: (mq) normalised output rows, stride ldo; backward: dq rows, overwritten */
    int ldo;
    float *lse;             /* (mq), stride 1: forward writes log-sum-exp (-inf: nothing visible); backward reads
                             * the log-sum-exp of the row's whole softmax (several blocks' combined) */
    const float *dout;      /* backward: (mq) rows, stride ldo */
    const float *D;         /* backward: (mq) rowsum(dout * out), stride 1 */
    float *dk, *dv;         /* backward: (mk) rows, stride ldk, added to */
} gattn_block;

/* Per-thread scratch for blocks of up to mk_max keys. */
typedef struct {
    float *S, *dP;   /* (GATTN_TQ, mk_max) */
    int *lo, *hi;    /* (GATTN_TQ) visible key run of each tile row */
    int *self;       /* (GATTN_TQ) column of the row's own position, -1 if none */
    float *gw;       /* the tile products' packing buffers (rb_sgemm_st), or NULL */
} gattn_ws;

/* Bytes of one gattn_ws for mk_max keys of d floats; with base not NULL
 * (64-byte aligned), also points w into base. Every buffer is rounded to 64
 * bytes. */
size_t gattn_ws_bytes(gattn_ws *w, char *base, int mk_max, int d);

/* Forward of one block; returns the query-key pairs attended. */
long gattn_forward(const gattn_block *b, const gattn_mask *m, float scale, gattn_ws *w);
/* Backward of one block: overwrites o (dq), adds into dk and dv. */
void gattn_backward(const gattn_block *b, const gattn_mask *m, float scale, gattn_ws *w);

/* A bump allocator over one block of memory: with base NULL it only counts,
 * so one layout function gives both the size and the pointers. */
typedef struct {
    char *base;
    size_t used;
} gattn_arena;

static inline void *gattn_take(gattn_arena *a, size_t bytes) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += (bytes + 63) & ~(size_t)63;
    return p;
}

#endif
