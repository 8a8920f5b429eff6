/* attn_ref.h: what an attention backend attends, recovered independently of
 * its code, and a double-precision recomputation of it, for the tests that
 * loop over the registry (test_range.c, test_analytic.c), so a new backend
 * is covered by them without edits.
 *
 * A pattern says, per (batch, head), which softmaxes a backend computes: a
 * list of terms, each one query position and the key positions its softmax
 * runs over; a query's output is the mean of its terms (routing: one term per
 * cluster that picked the token, and a term may have no visible key, giving
 * zero; everyone else: one term per query).
 *  - heads whose membership the backend reports through routes() get one
 *    term per (cluster, query member): the cluster's key members visible by
 *    position when causal, the query itself left out when keys are shared and
 *    it sees anything else (the rules attn.h and the README state);
 *  - every other head is probed: forward with values that are one-hot in a
 *    channel (key j carries e_{j mod d}) reads P[i][j] off out[i][j mod d],
 *    so the keys each query attends are the ones with P > 0. That needs
 *    ordinary scores (no probability underflows to 0): probe with them.
 * Keys of a routed head with share_qk are the normalised queries (L2 or
 * layer norm without gain, as p->norm says); elsewhere the keys are k. */
#ifndef RB_ATTN_REF_H
#define RB_ATTN_REF_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "util/common.h"

typedef struct {
    int n, nterms, nkeys, cap_t, cap_k;
    int routed;  /* 1: from routes(); 0: probed */
    int shared;  /* keys are the normalised queries */
    int *tq;     /* (nterms) query of term t */
    int *toff;   /* (nterms + 1) term t's keys are tkeys[toff[t] .. toff[t+1]) */
    int *tkeys;
    int *cnt;    /* (n) terms of each query */
} ref_pattern;

static inline void ref_pattern_init(ref_pattern *pt, int n) {
    memset(pt, 0, sizeof *pt);
    pt->n = n;
    pt->cap_t = 4 * n + 4;
    pt->cap_k = 4 * n * n + 4;
    pt->tq = mallocCheck(sizeof(int) * (size_t)pt->cap_t);
    pt->toff = mallocCheck(sizeof(int) * (size_t)(pt->cap_t + 1));
    pt->tkeys = mallocCheck(sizeof(int) * (size_t)pt->cap_k);
    pt->cnt = callocCheck((size_t)n, sizeof(int));
    pt->toff[0] = 0;
}

static inline void ref_pattern_free(ref_pattern *pt) {
    free(pt->tq);
    free(pt->toff);
    free(pt->tkeys);
    free(pt->cnt);
}

static inline void ref_add_term(ref_pattern *pt, int q, const int *keys, int nk) {
    if (pt->nterms >= pt->cap_t || pt->nkeys + nk > pt->cap_k) {
        pt->cap_t *= 2;
        pt->cap_k = 2 * (pt->cap_k + nk);
        pt->tq = realloc(pt->tq, sizeof(int) * (size_t)pt->cap_t);
        pt->toff = realloc(pt->toff, sizeof(int) * (size_t)(pt->cap_t + 1));
        pt->tkeys = realloc(pt->tkeys, sizeof(int) * (size_t)pt->cap_k);
        if (!pt->tq || !pt->toff || !pt->tkeys) abort();
    }
    pt->tq[pt->nterms] = q;
    memcpy(pt->tkeys + pt->nkeys, keys, sizeof(int) * (size_t)nk);
    pt->nkeys += nk;
    pt->toff[++pt->nterms] = pt->nkeys;
    pt->cnt[q]++;
}

/* Query-key pairs the pattern attends (the FLOP convention's count). */
static inline double ref_pairs(const ref_pattern *pt) { return pt->nkeys; }

/* Terms of head (b, h) from routes(); 0, or -1 when the head has none. */
static inline int ref_from_routes(ref_pattern *pt, const attn *a, int b, int h) {
    const attn_params *p = &a->p;
    const int *qm, *km;
    if (!a->be->routes || a->be->routes(a, b, h, 0, 0, &qm) < 0) return -1;
    int n = p->seq, *vis = mallocCheck(sizeof(int) * (size_t)n);
    pt->routed = 1;
    pt->shared = p->share_qk == 1;
    for (int c = 0; c < p->clusters; c++) {
        int mq = a->be->routes(a, b, h, c, 0, &qm), mk = a->be->routes(a, b, h, c, 1, &km);
        for (int r = 0; r < mq; r++) {
            int i = qm[r], nv = 0, self = 0;
            for (int t = 0; t < mk; t++)
                if (!p->causal || km[t] <= i) vis[nv++] = km[t], self |= km[t] == i;
            if (pt->shared && self && nv > 1) { /* the query leaves itself out */
                int w = 0;
                for (int t = 0; t < nv; t++)
                    if (vis[t] != i) vis[w++] = vis[t];
                nv = w;
            }
            ref_add_term(pt, i, vis, nv);
        }
    }
    free(vis);
    return 0;
}

/* Probe every head without routes: pats[b*H + h] gets one term per query.
 * q, k: ordinary-scale inputs (B,H,n,d). The routed heads are filled from
 * routes() of the same forward. */
static inline void ref_probe(ref_pattern *pats, attn *a, const float *q, const float *k) {
    const attn_params *p = &a->p;
    int B = p->batch, H = p->heads, n = p->seq, d = p->head_dim;
    size_t nd = (size_t)n * d, total = (size_t)B * H * nd;
    float *v = callocCheck(total, sizeof(float)), *out = mallocCheck(total * sizeof(float));
    unsigned char *att = callocCheck((size_t)B * H * n * n, 1);
    for (int j0 = 0; j0 < n; j0 += d) {
        memset(v, 0, total * sizeof(float));
        for (size_t bh = 0; bh < (size_t)B * H; bh++)
            for (int j = j0; j < n && j < j0 + d; j++) v[bh * nd + (size_t)j * d + (j - j0)] = 1.0f;
        a->be->forward(a, out, q, k, v, ATTN_EVAL);
        for (size_t bh = 0; bh < (size_t)B * H; bh++)
            for (int i = 0; i < n; i++)
                for (int j = j0; j < n && j < j0 + d; j++)
                    if (out[bh * nd + (size_t)i * d + (j - j0)] != 0.0f) att[(bh * n + i) * n + j] = 1;
    }
    int *keys = mallocCheck(sizeof(int) * (size_t)n);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t bh = (size_t)b * H + h;
            ref_pattern *pt = &pats[bh];
            ref_pattern_init(pt, n);
            if (ref_from_routes(pt, a, b, h) == 0) continue;
            for (int i = 0; i < n; i++) {
                int nk = 0;
                for (int j = 0; j < n; j++)
                    if (att[(bh * n + i) * n + j]) keys[nk++] = j;
                if (nk) ref_add_term(pt, i, keys, nk);
            }
        }
    free(keys);
    free(att);
    free(out);
    free(v);
}

/* Routed heads again after another forward (their membership follows the
 * content); probed heads are kept. */
static inline void ref_reroute(ref_pattern *pats, const attn *a) {
    int B = a->p.batch, H = a->p.heads, n = a->p.seq;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            ref_pattern *pt = &pats[(size_t)b * H + h];
            if (!pt->routed) continue;
            ref_pattern_free(pt);
            ref_pattern_init(pt, n);
            ref_from_routes(pt, a, b, h);
        }
}

/* x = normalised v (one row of d), as attn.h's routing vectors; s keeps the
 * scalar backward needs (1/|v| or 1/std). */
static inline void ref_norm_row(double *x, double *s, const float *v, int d, int norm) {
    if (norm == ATTN_NORM_L2) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)v[j] * v[j];
        *s = 1.0 / sqrt(ss + 1e-12);
        for (int j = 0; j < d; j++) x[j] = v[j] * *s;
    } else {
        double m = 0, var = 0;
        for (int j = 0; j < d; j++) m += v[j];
        m /= d;
        for (int j = 0; j < d; j++) var += (v[j] - m) * (v[j] - m);
        *s = 1.0 / sqrt(var / d + 1e-5);
        for (int j = 0; j < d; j++) x[j] = (v[j] - m) * *s;
    }
}

/* dv += (d x / d v)^T g for one row */
static inline void ref_norm_back(double *dv, const double *g, const double *x, double s, int d, int norm) {
    double gx = 0, gm = 0;
    for (int j = 0; j < d; j++) gx += g[j] * x[j], gm += g[j];
    for (int j = 0; j < d; j++)
        dv[j] += norm == ATTN_NORM_L2 ? s * (g[j] - x[j] * gx) : s * (g[j] - gm / d - x[j] * gx / d);
}

/* Sizes of the reference's result for error scales. */
typedef struct {
    double max_score, max_dp; /* largest |score| and |dO . v| over attended pairs */
    /* the size of one pair's contribution to dq and dk with its probability
     * at 1: the scale float rounding of the probabilities multiplies (a row
     * whose softmax is one-hot has gradients far below it) */
    double nat_dq, nat_dk;
    int empty_terms;          /* terms with no visible key (fully masked rows) */
} ref_info;

/* Backward of one term (query qi, keys ky[0..nk), probabilities pr, output
 * weight w) given dout gi: adds into dq_i, dkey and dv. */
static inline void ref_term_backward(const float *qi, const float *gi, const int *ky, int nk, const double *pr,
                                     double w, const double *key, const float *vb, double scale, int d, double *dqi,
                                     double *dkey, double *dv, double *dp, ref_info *info) {
    double D = 0, qn = 0;
    for (int r = 0; r < nk; r++) {
        double a = 0;
        for (int e = 0; e < d; e++) a += w * gi[e] * vb[(size_t)ky[r] * d + e];
        dp[r] = a;
        D += pr[r] * a;
        info->max_dp = fmax(info->max_dp, fabs(a));
    }
    for (int e = 0; e < d; e++) qn += (double)qi[e] * qi[e];
    qn = sqrt(qn);
    for (int r = 0; r < nk; r++) {
        const double *kj = key + (size_t)ky[r] * d;
        double ds = pr[r] * (dp[r] - D) * scale, kn = 0, g1 = fabs(dp[r] - D) * scale;
        for (int e = 0; e < d; e++) kn += kj[e] * kj[e];
        info->nat_dq = fmax(info->nat_dq, g1 * sqrt(kn));
        info->nat_dk = fmax(info->nat_dk, g1 * qn);
        for (int e = 0; e < d; e++) {
            if (dqi) dqi[e] += ds * kj[e];
            dkey[(size_t)ky[r] * d + e] += ds * qi[e];
            if (dv) dv[(size_t)ky[r] * d + e] += pr[r] * w * gi[e];
        }
    }
}

/* Double-precision attention of the patterns on float inputs; out (B,H,n,d)
 * and, when dout is given, dq, dk, dv. Any output may be NULL. */
static inline void ref_attention(const ref_pattern *pats, const attn_params *p, const float *q, const float *k,
                                 const float *v, const float *dout, double *out, double *dq, double *dk, double *dv,
                                 ref_info *info) {
    int n = p->seq, d = p->head_dim;
    size_t nd = (size_t)n * d;
    double scale = 1.0 / sqrt((double)d);
    double *key = mallocCheck(sizeof(double) * nd), *ks = mallocCheck(sizeof(double) * n);
    /* a term may list a key more than once (lsh: rounds that find it again) */
    size_t maxk = (size_t)n;
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++)
        for (int t = 0; t < pats[bh].nterms; t++) maxk = RB_MAX(maxk, (size_t)(pats[bh].toff[t + 1] - pats[bh].toff[t]));
    double *dkey = mallocCheck(sizeof(double) * nd), *s = mallocCheck(sizeof(double) * maxk);
    double *dp = mallocCheck(sizeof(double) * maxk);
    memset(info, 0, sizeof *info);
    for (size_t bh = 0; bh < (size_t)p->batch * p->heads; bh++) {
        const ref_pattern *pt = &pats[bh];
        const float *qb = q + bh * nd, *kb = k + bh * nd, *vb = v + bh * nd, *gb = dout ? dout + bh * nd : NULL;
        for (int j = 0; j < n; j++) {
            if (pt->shared) ref_norm_row(key + (size_t)j * d, &ks[j], qb + (size_t)j * d, d, p->norm);
            else
                for (int e = 0; e < d; e++) key[(size_t)j * d + e] = kb[(size_t)j * d + e];
        }
        memset(dkey, 0, sizeof(double) * nd);
        double *ob = out ? out + bh * nd : NULL, *dqb = dq ? dq + bh * nd : NULL, *dvb = dv ? dv + bh * nd : NULL;
        if (ob) memset(ob, 0, sizeof(double) * nd);
        if (dqb) memset(dqb, 0, sizeof(double) * nd);
        if (dvb) memset(dvb, 0, sizeof(double) * nd);
        for (int t = 0; t < pt->nterms; t++) {
            int i = pt->tq[t], nk = pt->toff[t + 1] - pt->toff[t];
            const int *ky = pt->tkeys + pt->toff[t];
            const float *qi = qb + (size_t)i * d;
            double w = 1.0 / pt->cnt[i], mx = -INFINITY, l = 0;
            if (nk == 0) { /* nothing visible: the term gives 0 (and counts in the mean) */
                info->empty_terms++;
                continue;
            }
            for (int r = 0; r < nk; r++) {
                double dot = 0;
                for (int e = 0; e < d; e++) dot += qi[e] * key[(size_t)ky[r] * d + e];
                s[r] = dot * scale;
                mx = fmax(mx, s[r]);
                info->max_score = fmax(info->max_score, fabs(s[r]));
            }
            for (int r = 0; r < nk; r++) l += s[r] = exp(s[r] - mx);
            for (int r = 0; r < nk; r++) s[r] /= l;
            for (int r = 0; ob && r < nk; r++)
                for (int e = 0; e < d; e++) ob[(size_t)i * d + e] += w * s[r] * vb[(size_t)ky[r] * d + e];
            if (gb)
                ref_term_backward(qi, gb + (size_t)i * d, ky, nk, s, w, key, vb, scale, d,
                                  dqb ? dqb + (size_t)i * d : NULL, dkey, dvb, dp, info);
        }
        if (!gb) continue;
        /* the keys' gradient: through the normalisation into dq when they are the queries */
        for (int j = 0; j < n; j++) {
            if (pt->shared) {
                if (dqb) ref_norm_back(dqb + (size_t)j * d, dkey + (size_t)j * d, key + (size_t)j * d, ks[j], d, p->norm);
                info->nat_dq = fmax(info->nat_dq, info->nat_dk * ks[j]);
            } else if (dk) {
                for (int e = 0; e < d; e++) dk[bh * nd + (size_t)j * d + e] = dkey[(size_t)j * d + e];
            }
        }
        if (dk && pt->shared) memset(dk + bh * nd, 0, sizeof(double) * nd);
    }
    free(key), free(ks), free(dkey), free(s), free(dp);
}

/* max |a - r| / scale, NaN when a holds a non-finite value */
static inline double ref_err(const float *a, const double *r, size_t n, double scale) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return NAN;
        w = fmax(w, fabs(a[i] - r[i]));
    }
    return w / scale;
}

static inline double ref_maxabs(const double *r, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(r[i]));
    return m;
}

#endif
