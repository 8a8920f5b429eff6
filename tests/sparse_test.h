/* sparse_test.h: checks shared by test_strided.c and test_lsh.c, written
 * against the attn.h interface only: random inputs, every gradient entry
 * against central differences, agreement with `dense`, a double reference
 * from an attention pattern (tests/attn_ref.h's ref_attention), which output
 * rows a perturbed input row may move, and bit-identical results across
 * runs and thread counts. */
#ifndef RB_SPARSE_TEST_H
#define RB_SPARSE_TEST_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/bench.h"
#include "attn_ref.h"
#include "tap.h"
#include "util/common.h"
#include "util/threads.h"
#include "testutil.h"

static void st_run(attn *a, tu_io *io, int flags) {
    a->be->forward(a, io->out, io->q, io->k, io->v, flags);
    a->be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
}

static double st_maxdiff(const float *x, const float *y, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i] - (double)y[i]));
    return m;
}

static void st_free_patterns(ref_pattern *pats, const attn_params *p) {
    for (int bh = 0; bh < p->batch * p->heads; bh++) ref_pattern_free(&pats[bh]);
    free(pats);
}

/* The backend's out, dq, dk, dv (from io) against ref_attention on pats;
 * worst error relative to max(1, largest reference entry). */
static double st_vs_pattern(const ref_pattern *pats, const attn_params *p, const tu_io *io, char *detail, size_t len) {
    double *r[4];
    for (int t = 0; t < 4; t++) r[t] = mallocCheck(io->N * sizeof(double));
    ref_info info;
    ref_attention(pats, p, io->q, io->k, io->v, io->dout, r[0], r[1], r[2], r[3], &info);
    const float *x[4] = {io->out, io->dq, io->dk, io->dv};
    double worst = 0, e[4];
    for (int t = 0; t < 4; t++) {
        e[t] = ref_err(x[t], r[t], io->N, fmax(1.0, ref_maxabs(r[t], io->N)));
        worst = isnan(e[t]) ? INFINITY : fmax(worst, e[t]);
        free(r[t]);
    }
    snprintf(detail, len, "out %.1e dq %.1e dk %.1e dv %.1e, %d empty terms", e[0], e[1], e[2], e[3], info.empty_terms);
    return worst;
}

/* Every entry of dq, dk, dv against central differences of sum(out * dout)
 * with the routes of the first pass held (ATTN_KEEP_ROUTES). */
static double st_fd_all(attn *a, tu_io *io, int *worst_t, size_t *worst_i) {
    st_run(a, io, ATTN_EVAL);
    float *o1 = mallocCheck(io->N * sizeof(float)), *o2 = mallocCheck(io->N * sizeof(float));
    float *xs[3] = {io->q, io->k, io->v};
    const float *gs[3] = {io->dq, io->dk, io->dv};
    double worst = 0.0;
    const float eps = 1e-2f;
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < io->N; i++) {
            float x0 = xs[t][i];
            xs[t][i] = x0 + eps;
            a->be->forward(a, o1, io->q, io->k, io->v, ATTN_KEEP_ROUTES);
            xs[t][i] = x0 - eps;
            a->be->forward(a, o2, io->q, io->k, io->v, ATTN_KEEP_ROUTES);
            xs[t][i] = x0;
            double num = 0.0;
            for (size_t e = 0; e < io->N; e++) num += ((double)o1[e] - (double)o2[e]) * io->dout[e];
            num /= (double)(x0 + eps) - (double)(x0 - eps);
            double err = fabs(num - gs[t][i]) / fmax(1.0, fabs(num));
            if (err > worst) worst = err, *worst_t = t, *worst_i = i;
        }
    free(o1), free(o2);
    return worst;
}

/* st_fd_all for backend `name` at p on inputs drawn from seed; INFINITY
 * when the backend refuses p. */
static double st_fd_check(const char *name, attn_params *p, uint64_t seed, int *worst_t, size_t *worst_i) {
    attn *a = tu_make(name, p);
    if (!a) return INFINITY;
    tu_io io;
    tu_io_make(&io, p, seed);
    double e = st_fd_all(a, &io, worst_t, worst_i);
    tu_io_free(&io);
    attn_free(a);
    return e;
}

/* Backend `name` at p (equals_dense must say 1) against `dense`: the
 * largest difference of out, dq, dk, dv. */
static double st_vs_dense(const char *name, attn_params p) {
    attn_params pd = p;
    attn *a = tu_make(name, &p), *dn = tu_make("dense", &pd);
    if (!a || !dn) {
        attn_free(a), attn_free(dn);
        return INFINITY;
    }
    tu_io x, y;
    tu_io_make(&x, &p, 5);
    tu_io_make(&y, &p, 5);
    st_run(a, &x, ATTN_TRAIN);
    st_run(dn, &y, ATTN_TRAIN);
    double m = fmax(fmax(st_maxdiff(x.out, y.out, x.N), st_maxdiff(x.dq, y.dq, x.N)),
                    fmax(st_maxdiff(x.dk, y.dk, x.N), st_maxdiff(x.dv, y.dv, x.N)));
    tu_io_free(&x), tu_io_free(&y);
    attn_free(a), attn_free(dn);
    return m;
}

/* Bit-identical out and gradients from two runs of one instance and from
 * instances made with 1 and 2 threads; 1 when they are. */
static int st_deterministic(const char *name, attn_params p) {
    tu_io x, y;
    tu_io_make(&x, &p, 11);
    tu_io_make(&y, &p, 11);
    int threads = rb_threads(), same = 1;
    for (int round = 0; round < 2; round++) {
        rb_set_threads(2 - round);
        attn_params pp = p;
        attn *a = tu_make(name, &pp);
        if (!a) return 0;
        if (round == 0) st_run(a, &x, ATTN_TRAIN);
        st_run(a, &y, ATTN_TRAIN);
        float *xs[4] = {x.out, x.dq, x.dk, x.dv}, *ys[4] = {y.out, y.dq, y.dk, y.dv};
        for (int t = 0; t < 4; t++) same &= !memcmp(xs[t], ys[t], x.N * sizeof(float));
        attn_free(a);
    }
    rb_set_threads(threads);
    tu_io_free(&x), tu_io_free(&y);
    return same;
}

#endif
