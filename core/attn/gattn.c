/* gattn.c: the block attention kernel of gattn.h. Per tile of GATTN_TQ query
 * rows: S = Q K^T * scale over the key columns the tile can see (one sgemm),
 * masked softmax with the vectorised exponential and denominators in double,
 * O = P V (one sgemm). Backward recomputes P from the saved log-sum-exp and
 * makes dV, dP, dQ and dK with four more products. The products run on the
 * calling thread (rb_sgemm_st, inside the caller's parallel region). */
#include "attn/gattn.h"

#include <math.h>
#include <string.h>

#include "util/gemm.h"
#include "util/vexp.h"

size_t gattn_ws_bytes(gattn_ws *w, char *base, int mk_max, int d) {
    gattn_arena a = {base, 0};
    gattn_ws tmp;
    gattn_ws *t = base ? w : &tmp;
    t->S = gattn_take(&a, sizeof(float) * GATTN_TQ * (size_t)mk_max);
    t->dP = gattn_take(&a, sizeof(float) * GATTN_TQ * (size_t)mk_max);
    t->lo = gattn_take(&a, sizeof(int) * GATTN_TQ);
    t->hi = gattn_take(&a, sizeof(int) * GATTN_TQ);
    t->self = gattn_take(&a, sizeof(int) * GATTN_TQ);
    /* products: rows up to a tile or mk_max keys, columns up to mk_max or d */
    size_t g = rb_sgemm_st_floats(mk_max > GATTN_TQ ? mk_max : GATTN_TQ, mk_max > d ? mk_max : d, 0);
    t->gw = g ? gattn_take(&a, sizeof(float) * g) : NULL;
    return a.used;
}

/* The visible key run [lo, hi) and the own-position column of rows
 * r0..r0+rows (positions ascending, so each bound only moves forward). */
static void gattn_runs(const gattn_block *b, const gattn_mask *m, int r0, int rows, gattn_ws *w) {
    int jl = 0, jh = 0, js = 0;
    for (int rr = 0; rr < rows; rr++) {
        long p = b->qpos[r0 + rr];
        while (jl < b->mk && (long)b->kpos[jl] - p < (long)m->lo) jl++;
        if (jh < jl) jh = jl;
        while (jh < b->mk && (long)b->kpos[jh] - p <= (long)m->hi) jh++;
        while (js < b->mk && b->kpos[js] < p) js++;
        w->lo[rr] = jl, w->hi[rr] = jh;
        /* the own column is left out when anything else is visible */
        w->self[rr] = (m->self_last && js < jh && js >= jl && b->kpos[js] == p && jh - jl > 1) ? js : -1;
    }
}

/* Softmax of one score row over its visible run; returns the log-sum-exp
 * (-inf when nothing is visible) and zeroes every other column. */
static float gattn_softmax_row(float *s, int nc, int a, int e, int self) {
    if (self >= 0) s[self] = -INFINITY;
    if (e <= a) {
        memset(s, 0, sizeof(float) * (size_t)nc);
        return -INFINITY;
    }
    float mx = rb_vmax(s + a, e - a);
    double l = rb_vexp_shift_sum(s + a, s + a, mx, e - a);
    float inv = (float)(1.0 / l);
    for (int j = a; j < e; j++) s[j] *= inv;
    memset(s, 0, sizeof(float) * (size_t)a);
    memset(s + e, 0, sizeof(float) * (size_t)(nc - e));
    return mx + (float)log(l);
}

long gattn_forward(const gattn_block *b, const gattn_mask *m, float scale, gattn_ws *w) {
    int d = b->d;
    long pairs = 0;
    for (int r0 = 0; r0 < b->mq; r0 += GATTN_TQ) {
        int rows = b->mq - r0 < GATTN_TQ ? b->mq - r0 : GATTN_TQ;
        gattn_runs(b, m, r0, rows, w);
        int c0 = w->lo[0], c1 = w->hi[rows - 1], nc = c1 - c0;
        float *o = b->o + (size_t)r0 * b->ldo;
        if (nc <= 0) {
            for (int rr = 0; rr < rows; rr++) {
                memset(o + (size_t)rr * b->ldo, 0, sizeof(float) * (size_t)d);
                b->lse[r0 + rr] = -INFINITY;
            }
            continue;
        }
        rb_sgemm_st(0, 1, rows, nc, d, scale, b->q + (size_t)r0 * b->ldq, b->ldq,
                    b->k + (size_t)c0 * b->ldk, b->ldk, 0.0f, w->S, nc, w->gw);
        for (int rr = 0; rr < rows; rr++) {
            int self = w->self[rr] >= 0 ? w->self[rr] - c0 : -1;
            b->lse[r0 + rr] = gattn_softmax_row(w->S + (size_t)rr * nc, nc, w->lo[rr] - c0, w->hi[rr] - c0, self);
            pairs += w->hi[rr] > w->lo[rr] ? w->hi[rr] - w->lo[rr] - (self >= 0) : 0;
        }
        rb_sgemm_st(0, 0, rows, d, nc, 1.0f, w->S, nc,
                    b->v + (size_t)c0 * b->ldk, b->ldk, 0.0f, o, b->ldo, w->gw);
    }
    return pairs;
}

/* P = exp(S - lse) on the visible run of one row (own column 0), then
 * dS = P (dP - D) * scale over the whole row (0 wherever P is). */
static void gattn_dsoftmax_row(float *s, float *dp, int nc, int a, int e, int self, float lse, float D, float scale) {
    if (e <= a || !(lse > -INFINITY)) {
        memset(s, 0, sizeof(float) * (size_t)nc);
        memset(dp, 0, sizeof(float) * (size_t)nc);
        return;
    }
    memset(s, 0, sizeof(float) * (size_t)a);
    memset(s + e, 0, sizeof(float) * (size_t)(nc - e));
    rb_vexp_shift_sum(s + a, s + a, lse, e - a);
    if (self >= 0) s[self] = 0.0f;
    for (int j = 0; j < nc; j++) dp[j] = s[j] * (dp[j] - D) * scale;
}

void gattn_backward(const gattn_block *b, const gattn_mask *m, float scale, gattn_ws *w) {
    int d = b->d;
    for (int r0 = 0; r0 < b->mq; r0 += GATTN_TQ) {
        int rows = b->mq - r0 < GATTN_TQ ? b->mq - r0 : GATTN_TQ;
        gattn_runs(b, m, r0, rows, w);
        int c0 = w->lo[0], c1 = w->hi[rows - 1], nc = c1 - c0;
        if (nc <= 0) {
            for (int rr = 0; rr < rows; rr++) memset(b->o + (size_t)(r0 + rr) * b->ldo, 0, sizeof(float) * (size_t)d);
            continue;
        }
        const float *q = b->q + (size_t)r0 * b->ldq, *g = b->dout + (size_t)r0 * b->ldo;
        const float *k = b->k + (size_t)c0 * b->ldk, *v = b->v + (size_t)c0 * b->ldk;
        rb_sgemm_st(0, 1, rows, nc, d, scale, q, b->ldq, k, b->ldk, 0.0f, w->S, nc, w->gw);
        rb_sgemm_st(0, 1, rows, nc, d, 1.0f, g, b->ldo, v, b->ldk, 0.0f, w->dP, nc, w->gw);
        for (int rr = 0; rr < rows; rr++) {
            int self = w->self[rr] >= 0 ? w->self[rr] - c0 : -1;
            gattn_dsoftmax_row(w->S + (size_t)rr * nc, w->dP + (size_t)rr * nc, nc, w->lo[rr] - c0, w->hi[rr] - c0,
                               self, b->lse[r0 + rr], b->D[r0 + rr], scale);
        }
        /* dV += P^T dO; dK += dS^T Q; dQ = dS K (each query row is in one tile) */
        rb_sgemm_st(1, 0, nc, d, rows, 1.0f, w->S, nc, g, b->ldo, 1.0f,
                    b->dv + (size_t)c0 * b->ldk, b->ldk, w->gw);
        rb_sgemm_st(1, 0, nc, d, rows, 1.0f, w->dP, nc, q, b->ldq, 1.0f,
                    b->dk + (size_t)c0 * b->ldk, b->ldk, w->gw);
        rb_sgemm_st(0, 0, rows, d, nc, 1.0f, w->dP, nc, k, b->ldk, 0.0f,
                    b->o + (size_t)r0 * b->ldo, b->ldo, w->gw);
    }
}
