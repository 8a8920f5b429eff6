/* bench.c: timing one attention layer and checking a backend (bench.h).
 * Both work only through the attention interface, so every registered
 * backend is timed and checked the same way. */
#include "attn/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

typedef struct {
    size_t n; /* elements per tensor */
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv;
} attn_io;

static void io_free(attn_io *io) {
    free(io->q), free(io->k), free(io->v), free(io->out);
    free(io->dout), free(io->dq), free(io->dk), free(io->dv);
    memset(io, 0, sizeof *io);
}

static int io_alloc(attn_io *io, const attn_params *p, char *err, size_t errlen) {
    memset(io, 0, sizeof *io);
    io->n = (size_t)p->batch * p->heads * p->seq * p->head_dim;
    size_t bytes = io->n * sizeof(float);
    float **all[] = {&io->q, &io->k, &io->v, &io->out, &io->dout, &io->dq, &io->dk, &io->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        *all[i] = rb_aligned_alloc(bytes);
        if (!*all[i]) {
            io_free(io);
            return rb_fail(err, errlen, "out of memory: 8 input/output tensors of %zu bytes each", bytes);
        }
    }
    return 0;
}

/* Inputs drawn from N(0,1) so scaled logits have unit variance. */
static void io_fill(attn_io *io, uint64_t seed) {
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (size_t i = 0; i < io->n; i++) io->q[i] = rb_rng_normal(&r);
    for (size_t i = 0; i < io->n; i++) io->k[i] = rb_rng_normal(&r);
    for (size_t i = 0; i < io->n; i++) io->v[i] = rb_rng_normal(&r);
    for (size_t i = 0; i < io->n; i++) io->dout[i] = rb_rng_normal(&r);
    memset(io->out, 0, io->n * sizeof(float));
    memset(io->dq, 0, io->n * sizeof(float));
    memset(io->dk, 0, io->n * sizeof(float));
    memset(io->dv, 0, io->n * sizeof(float));
}

static int resolve(const char *backend, attn_params *p, const attn_backend **be, char *err, size_t errlen) {
    *be = attn_find(backend);
    if (!*be) return attn_fail_unknown(backend, err, errlen);
    char msg[512];
    if (attn_validate_msg(*be, p, msg, sizeof msg) != 0)
        return rb_fail(err, errlen, "%s: %s", backend, msg);
    /* the backend's activations plus the 8 input/output tensors made here */
    double n = (double)p->batch * p->heads * p->seq * p->head_dim;
    return attn_memory_check(*be, p, 8.0 * n * sizeof(float), err, errlen);
}

int attn_bench(const char *backend, attn_params *p, int repeat, int warmup, attn_bench_result *r, char *err,
               size_t errlen) {
    memset(r, 0, sizeof *r);
    const attn_backend *be;
    if (resolve(backend, p, &be, err, errlen) != 0) return -1;
    if (repeat < 1) repeat = 1;
    if (warmup < 0) warmup = 0;
    attn_io io;
    if (io_alloc(&io, p, err, errlen) != 0) return -1;
    io_fill(&io, p->seed);
    rb_reset_peak_rss(); /* this measurement's own peak, not an earlier one's in the same process */
    r->base_rss_bytes = rb_peak_rss();
    char msg[512];
    attn *a = be->create(p, msg, sizeof msg);
    if (!a) {
        io_free(&io);
        return rb_fail(err, errlen, "%s: %s", backend, msg);
    }
    double *tf = mallocCheck((size_t)repeat * sizeof(double));
    double *tb = mallocCheck((size_t)repeat * sizeof(double));
    double *tfb = mallocCheck((size_t)repeat * sizeof(double));
    for (int i = 0; i < warmup + repeat; i++) {
        double t0 = rb_now();
        be->forward(a, io.out, io.q, io.k, io.v, ATTN_TRAIN);
        double t1 = rb_now();
        be->backward(a, io.dq, io.dk, io.dv, io.dout, io.q, io.k, io.v, io.out);
        double t2 = rb_now();
        if (i >= warmup) {
            int j = i - warmup;
            tf[j] = (t1 - t0) * 1e3, tb[j] = (t2 - t1) * 1e3, tfb[j] = (t2 - t0) * 1e3;
        }
    }
    r->repeat = repeat;
    r->fwd_ms = rb_median(tf, repeat); /* sorts tf */
    r->fwd_ms_min = tf[0], r->fwd_ms_max = tf[repeat - 1];
    r->bwd_ms = rb_median(tb, repeat);
    r->bwd_ms_min = tb[0], r->bwd_ms_max = tb[repeat - 1];
    r->fwdbwd_ms = rb_median(tfb, repeat);
    r->fwd_flops = be->flops(p, ATTN_PASS_FWD);
    r->bwd_flops = be->flops(p, ATTN_PASS_BWD);
    r->fwd_gflops = r->fwd_flops / (r->fwd_ms * 1e-3) * 1e-9;
    r->fwdbwd_gflops = (r->fwd_flops + r->bwd_flops) / (r->fwdbwd_ms * 1e-3) * 1e-9;
    r->act_bytes = be->act_bytes(p);
    r->inst_bytes = a->bytes;
    r->nstats = be->stats ? be->stats(a, r->stats, ATTN_BENCH_MAX_STATS) : 0;
    r->peak_rss_bytes = rb_peak_rss();
    free(tf), free(tb), free(tfb);
    be->destroy(a);
    io_free(&io);
    return 0;
}

/* ---- checking ---------------------------------------------------------- */

/* Objective of the gradient check: L = sum(out * R) (+ commit_weight *
 * commit_loss when the backend reports one), in double. */
static double stat_value(const attn *a, const char *name) {
    if (!a->be->stats) return 0.0;
    attn_stat st[ATTN_BENCH_MAX_STATS];
    int n = a->be->stats(a, st, ATTN_BENCH_MAX_STATS);
    for (int i = 0; i < n; i++)
        if (strcmp(st[i].name, name) == 0) return st[i].value;
    return 0.0;
}

/* Difference of the objective between two outputs, summed in double: entries
 * a perturbation did not change cancel exactly, so the quotient's noise comes
 * only from the outputs that moved. */
static double objective_diff(const float *o1, const float *o2, const float *R, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += ((double)o1[i] - (double)o2[i]) * (double)R[i];
    return s;
}

int attn_check(const char *backend, attn_params *p, attn_check_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->dense_max_abs_err = NAN;
    const attn_backend *be;
    if (resolve(backend, p, &be, err, errlen) != 0) return -1;
    attn_io io;
    if (io_alloc(&io, p, err, errlen) != 0) return -1;
    io_fill(&io, p->seed);
    float *o2 = rb_aligned_alloc(io.n * sizeof(float));
    if (!o2) {
        io_free(&io);
        return rb_fail(err, errlen, "out of memory");
    }
    char msg[512];
    attn *a = be->create(p, msg, sizeof msg);
    if (!a) {
        io_free(&io), free(o2);
        return rb_fail(err, errlen, "%s: %s", backend, msg);
    }
    /* One training pass chooses the routes (and initialises centroids); the
     * analytic gradients come from a pass that reuses them, as do all the
     * perturbed passes, so the cluster choice is held fixed throughout. */
    be->forward(a, io.out, io.q, io.k, io.v, ATTN_TRAIN);
    be->forward(a, io.out, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
    be->backward(a, io.dq, io.dk, io.dv, io.dout, io.q, io.k, io.v, io.out);
    float *out0 = rb_aligned_alloc(io.n * sizeof(float));
    if (!out0) {
        be->destroy(a), io_free(&io), free(o2);
        return rb_fail(err, errlen, "out of memory");
    }
    memcpy(out0, io.out, io.n * sizeof(float));
    const double cw = p->commit_weight;

    float *xs[3] = {io.q, io.k, io.v};
    const float *gs[3] = {io.dq, io.dk, io.dv};
    const char *names[3] = {"q", "k", "v"};
    const int directions = 3, samples = 16;
    rb_rng rng;
    rb_rng_seed(&rng, p->seed ^ 0xC0FFEEull);
    double worst = 0.0;
    float *x0 = rb_aligned_alloc(io.n * sizeof(float)), *u = rb_aligned_alloc(io.n * sizeof(float));
    if (!x0 || !u) {
        free(x0), free(u), free(out0), free(o2), io_free(&io), be->destroy(a);
        return rb_fail(err, errlen, "out of memory");
    }
    for (int t = 0; t < 3; t++) {
        double gmax = 0.0;
        double gnorm = 0.0;
        for (size_t i = 0; i < io.n; i++) {
            gmax = fmax(gmax, fabs((double)gs[t][i]));
            gnorm += (double)gs[t][i] * gs[t][i];
        }
        gnorm = sqrt(gnorm);
        memcpy(x0, xs[t], io.n * sizeof(float));
        /* Directional derivatives along random directions u: every entry
         * contributes, so the signal dwarfs float rounding in the outputs.
         * Then single entries (the last one always: the end of the sequence
         * is where off-by-one errors hide), each measured against the
         * tensor's largest gradient so rounding noise on a tiny entry is not
         * mistaken for an error. */
        for (int s = 0; s < directions + samples; s++) {
            int single = s >= directions;
            size_t idx = 0;
            double ana = 0.0, step;
            if (single) {
                idx = (s == directions) ? io.n - 1 : (size_t)(rb_rng_u64(&rng) % io.n);
                const float eps = 1e-2f;
                xs[t][idx] = x0[idx] + eps;
                be->forward(a, o2, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
            } else {
                for (size_t i = 0; i < io.n; i++) u[i] = rb_rng_normal(&rng);
                for (size_t i = 0; i < io.n; i++) ana += (double)gs[t][i] * u[i];
                const float eps = 1e-2f;
                for (size_t i = 0; i < io.n; i++) xs[t][i] = x0[i] + eps * u[i];
                be->forward(a, o2, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
            }
            double cplus = cw > 0 ? stat_value(a, "commit_loss") : 0.0;
            if (single) {
                xs[t][idx] = x0[idx] - 1e-2f;
                step = (double)(x0[idx] + 1e-2f) - (double)(x0[idx] - 1e-2f);
                ana = gs[t][idx];
            } else {
                for (size_t i = 0; i < io.n; i++) xs[t][i] = x0[i] - 1e-2f * u[i];
                step = 2e-2;
            }
            be->forward(a, io.out, io.q, io.k, io.v, ATTN_KEEP_ROUTES);
            double cminus = cw > 0 ? stat_value(a, "commit_loss") : 0.0;
            memcpy(xs[t], x0, io.n * sizeof(float));
            double num = (objective_diff(o2, io.out, io.dout, io.n) + cw * (cplus - cminus)) / step;
            /* Along u ~ N(0, I) the derivative's typical size is |g|: a
             * direction that happens to be nearly orthogonal to g is
             * measured against that, not against its own small value. */
            double denom = fmax(fabs(ana), fabs(num));
            denom = fmax(denom, single ? 0.05 * gmax : 0.5 * gnorm);
            double rel = fabs(ana - num) / fmax(denom, 1e-12);
            if (rel > worst) {
                worst = rel;
                if (single)
                    snprintf(r->detail, sizeof r->detail, "worst: d%s[%zu] analytic %.6g numeric %.6g", names[t],
                             idx, ana, num);
                else
                    snprintf(r->detail, sizeof r->detail,
                             "worst: d%s along a random direction, analytic %.6g numeric %.6g", names[t], ana, num);
            }
        }
    }
    free(x0), free(u);
    r->grad_rel_err = worst;
    int pass = worst <= 2e-2;

    if (be->equals_dense && be->equals_dense(p)) {
        attn_params dp = *p;
        const attn_backend *dbe;
        attn *d = NULL;
        if (resolve("dense", &dp, &dbe, msg, sizeof msg) == 0) d = dbe->create(&dp, msg, sizeof msg);
        if (!d) {
            be->destroy(a), io_free(&io), free(o2), free(out0);
            return rb_fail(err, errlen, "dense reference: %s", msg);
        }
        float *g[3];
        for (int t = 0; t < 3; t++) g[t] = rb_aligned_alloc(io.n * sizeof(float));
        dbe->forward(d, o2, io.q, io.k, io.v, ATTN_TRAIN);
        dbe->backward(d, g[0], g[1], g[2], io.dout, io.q, io.k, io.v, o2);
        double m = 0.0, scale = 1.0;
        const float *mine[4] = {out0, io.dq, io.dk, io.dv};
        const float *ref[4] = {o2, g[0], g[1], g[2]};
        for (int t = 0; t < 4; t++)
            for (size_t i = 0; i < io.n; i++) {
                m = fmax(m, fabs((double)mine[t][i] - (double)ref[t][i]));
                scale = fmax(scale, fabs((double)ref[t][i]));
            }
        r->compared_dense = 1;
        r->dense_max_abs_err = m;
        if (m > 1e-4 * scale) pass = 0;
        for (int t = 0; t < 3; t++) free(g[t]);
        dbe->destroy(d);
    }
    r->pass = pass;
    be->destroy(a);
    io_free(&io);
    free(o2), free(out0);
    return 0;
}
