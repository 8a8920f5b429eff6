/* bench.c: timing one attention layer and checking a backend (bench.h).
 * Both work only through the attention interface, so every registered
 * backend is timed and checked the same way. */
#include "attn/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/threads.h"

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

void attn_bench_opts_default(attn_bench_opts *o, int repeat) {
    o->warmup = 1;
    rb_autorange_default(&o->ar);
    if (repeat > 0) o->ar.min_runs = repeat;
}

/* A sample is the mean of a block of passes lasting at least this long
 * (torch.utils.benchmark's blocked_autorange): a pass of 0.2 ms timed alone
 * varies by 15% on an idle machine (the clock, thread wake-ups, routing's
 * clusters moving with each training-mode pass), a block of ten by a third
 * of that. Passes of 2 ms and more are timed one by one. */
#define BENCH_BLOCK_S 2e-3
#define BENCH_LONG_S 1.0

/* Timed samples until the autorange rule is met; samples into tf, tb, tfb
 * (capacity max_runs), each the mean over *block passes (chosen from the
 * warm-up's duration). Returns how many. */
static int sample(const attn_backend *be, attn *a, attn_io *io, const attn_bench_opts *o, double *tf, double *tb,
                  double *tfb, int *block) {
    double twarm = 0;
    for (int i = 0; i < o->warmup; i++) {
        double t0 = rb_now();
        be->forward(a, io->out, io->q, io->k, io->v, ATTN_TRAIN);
        be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
        twarm = rb_now() - t0;
    }
    int b = 1;
    /* a warm-up pass of a second or more says passes are timed one by one
     * (k-means' initialisation cannot make a pass of milliseconds that long):
     * no sizing passes, which at a million tokens cost a minute each */
    if (o->warmup > 0 && twarm < BENCH_LONG_S) {
        /* untimed passes size the block (the first also initialises k-means):
         * the fastest of up to three, so one pass slowed by a descheduled
         * thread does not leave a tiny pass timed alone (on a busy machine a
         * pass of microseconds can take tens of ms). A pass under 2 ms ends
         * the sizing (a hiccup only makes passes slower), and so does one of
         * a second or more */
        double tw = INFINITY;
        for (int i = 0; i < 3; i++) {
            double t0 = rb_now();
            be->forward(a, io->out, io->q, io->k, io->v, ATTN_TRAIN);
            be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
            double t = rb_now() - t0;
            if (t < tw) tw = t;
            if (tw < BENCH_BLOCK_S || t > BENCH_LONG_S) break;
        }
        if (tw > 0 && tw < BENCH_BLOCK_S) b = (int)ceil(BENCH_BLOCK_S / tw);
    }
    *block = b;
    int n = 0;
    double elapsed = 0;
    do {
        double f = 0, t0 = rb_now(), t2 = t0;
        for (int i = 0; i < b; i++) {
            double s0 = rb_now();
            be->forward(a, io->out, io->q, io->k, io->v, ATTN_TRAIN);
            double s1 = rb_now();
            be->backward(a, io->dq, io->dk, io->dv, io->dout, io->q, io->k, io->v, io->out);
            t2 = rb_now();
            f += s1 - s0;
        }
        double all = t2 - t0;
        tf[n] = f / b * 1e3, tb[n] = (all - f) / b * 1e3, tfb[n] = all / b * 1e3;
        elapsed += all, n++;
    } while (rb_autorange_more(&o->ar, tfb, n, elapsed));
    return n;
}

static void summarize_into(attn_bench_result *r, double *tf, double *tb, double *tfb, int n, rb_summary *fb) {
    rb_summary sf, sb, sfb;
    rb_summarize(tf, n, &sf), rb_summarize(tb, n, &sb), rb_summarize(tfb, n, &sfb);
    r->repeat = n;
    r->fwd_ms = sf.median, r->fwd_ms_iqr = sf.iqr, r->fwd_ms_min = sf.min, r->fwd_ms_max = sf.max;
    r->bwd_ms = sb.median, r->bwd_ms_iqr = sb.iqr, r->bwd_ms_min = sb.min, r->bwd_ms_max = sb.max;
    r->fwdbwd_ms = sfb.median, r->fwdbwd_ms_iqr = sfb.iqr;
    *fb = sfb;
}

int attn_bench(const char *backend, attn_params *p, const attn_bench_opts *o, attn_bench_result *r, char *err,
               size_t errlen) {
    memset(r, 0, sizeof *r);
    const attn_backend *be;
    if (resolve(backend, p, &be, err, errlen) != 0) return -1;
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
    int cap = o->ar.max_runs > 0 ? o->ar.max_runs : 1;
    double *tf = mallocCheck((size_t)cap * sizeof(double)), *tb = mallocCheck((size_t)cap * sizeof(double));
    double *tfb = mallocCheck((size_t)cap * sizeof(double));
    rb_load_probe probe;
    rb_load load;
    rb_load_begin(&probe);
    int n = sample(be, a, &io, o, tf, tb, tfb, &r->block);
    rb_load_end(&probe, &load);
    rb_summary sfb;
    summarize_into(r, tf, tb, tfb, n, &sfb);
    rb_noise_rule rule;
    rb_noise_rule_default(&rule, rb_threads());
    r->noisy = rb_noise_judge(&rule, &sfb, &load, r->noise, sizeof r->noise);
    r->load_avg = load.load_avg, r->other_cpu = load.other_cpu;
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

/* What a gradient check works on: the instance (routes fixed by its first
 * pass), the inputs and their analytic gradients, scratch. */
typedef struct {
    const attn_backend *be;
    attn *a;
    attn_io io;
    float *o2, *out0, *x0, *u;
    double cw; /* commit_weight: the commitment loss is part of the objective */
} fd_ctx;

static void fd_free(fd_ctx *c) {
    if (c->a) c->be->destroy(c->a);
    io_free(&c->io);
    free(c->o2), free(c->out0), free(c->x0), free(c->u);
}

/* Objective L(x) with tensor t at x0 + s*u (idx == SIZE_MAX) or with only
 * entry idx moved by s, into out (routes kept). Returns the commitment part;
 * the output part is read with objective_diff. */
static double fd_eval(fd_ctx *c, float *xt, size_t idx, double s, float *out, double *step_taken) {
    size_t n = c->io.n;
    if (idx == SIZE_MAX)
        for (size_t i = 0; i < n; i++) xt[i] = (float)(c->x0[i] + s * c->u[i]);
    else xt[idx] = (float)(c->x0[idx] + s);
    if (step_taken) *step_taken = idx == SIZE_MAX ? s : (double)xt[idx] - (double)c->x0[idx];
    c->be->forward(c->a, out, c->io.q, c->io.k, c->io.v, ATTN_KEEP_ROUTES);
    double commit = c->cw > 0 ? stat_value(c->a, "commit_loss") : 0.0;
    if (idx == SIZE_MAX) memcpy(xt, c->x0, n * sizeof(float));
    else xt[idx] = c->x0[idx];
    return commit;
}

/* Central difference of L along the perturbation with step h (the steps
 * actually representable in float are used in the quotient). */
static double fd_central(fd_ctx *c, float *xt, size_t idx, double h) {
    double sp, sm;
    double cp = fd_eval(c, xt, idx, h, c->o2, &sp);
    double cm = fd_eval(c, xt, idx, -h, c->io.out, &sm);
    return (objective_diff(c->o2, c->io.out, c->io.dout, c->io.n) + c->cw * (cp - cm)) / (sp - sm);
}

/* The derivative by Richardson extrapolation of two central differences
 * (h and h/2): the h^2 error term cancels, so a step large enough to rise
 * above float rounding in the outputs does not bring truncation error. */
static double fd_derivative(fd_ctx *c, float *xt, size_t idx, double h) {
    return (4.0 * fd_central(c, xt, idx, 0.5 * h) - fd_central(c, xt, idx, h)) / 3.0;
}

/* Directional derivatives of tensor t along random directions (every entry
 * contributes, so the signal dwarfs rounding), then single entries (the
 * last one always: the end of the sequence is where off-by-one errors hide).
 * An error is measured against max(|analytic|, |numeric|, floor), the floor
 * a share of the tensor's gradient scale, so rounding on a tiny entry is not
 * mistaken for an error. Returns the worst; detail says where. */
static double fd_tensor(fd_ctx *c, int t, rb_rng *rng, char *detail, size_t dlen, double worst) {
    float *xs[3] = {c->io.q, c->io.k, c->io.v};
    const float *g = t == 0 ? c->io.dq : t == 1 ? c->io.dk : c->io.dv;
    const char *names[3] = {"q", "k", "v"};
    size_t n = c->io.n;
    double gmax = 0.0, gnorm = 0.0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)g[i])), gnorm += (double)g[i] * g[i];
    gnorm = sqrt(gnorm);
    memcpy(c->x0, xs[t], n * sizeof(float));
    const int directions = 3, samples = 16;
    for (int s = 0; s < directions + samples; s++) {
        int single = s >= directions;
        size_t idx = SIZE_MAX;
        double ana = 0.0, h = 1e-2;
        if (single) {
            idx = s == directions ? n - 1 : (size_t)(rb_rng_u64(rng) % n);
            ana = g[idx];
            /* A step per element, large: one entry moves few outputs, so a
             * small step's difference drowns in their float rounding (shared
             * QK routing: 10% at 1e-2); Richardson removes the h^2 term that
             * a large step brings. */
            h = 0.4 * fmax(1.0, fabs((double)c->x0[idx]));
        } else {
            for (size_t i = 0; i < n; i++) c->u[i] = rb_rng_normal(rng), ana += (double)g[i] * c->u[i];
        }
        double num = fd_derivative(c, xs[t], idx, h);
        /* along u ~ N(0, I) the derivative's typical size is |g| */
        double denom = fmax(fmax(fabs(ana), fabs(num)), single ? 0.05 * gmax : 0.5 * gnorm);
        double rel = fabs(ana - num) / fmax(denom, 1e-12);
        if (rel <= worst) continue;
        worst = rel;
        if (single)
            snprintf(detail, dlen, "worst: d%s[%zu] analytic %.6g numeric %.6g", names[t], idx, ana, num);
        else snprintf(detail, dlen, "worst: d%s along a random direction, analytic %.6g numeric %.6g", names[t], ana, num);
    }
    return worst;
}

/* Where p makes the backend dense attention: its output and gradients
 * against `dense`'s; the largest absolute difference, NAN on failure. */
static double against_dense(fd_ctx *c, const attn_params *p, char *msg, size_t mlen) {
    attn_params dp = *p;
    const attn_backend *dbe;
    attn *d = NULL;
    if (resolve("dense", &dp, &dbe, msg, mlen) == 0) d = dbe->create(&dp, msg, mlen);
    if (!d) return NAN;
    size_t n = c->io.n;
    float *g[3];
    for (int t = 0; t < 3; t++) g[t] = mallocCheck(n * sizeof(float));
    dbe->forward(d, c->o2, c->io.q, c->io.k, c->io.v, ATTN_TRAIN);
    dbe->backward(d, g[0], g[1], g[2], c->io.dout, c->io.q, c->io.k, c->io.v, c->o2);
    double m = 0.0, scale = 1.0;
    const float *mine[4] = {c->out0, c->io.dq, c->io.dk, c->io.dv}, *ref[4] = {c->o2, g[0], g[1], g[2]};
    for (int t = 0; t < 4; t++)
        for (size_t i = 0; i < n; i++) {
            m = fmax(m, fabs((double)mine[t][i] - (double)ref[t][i]));
            scale = fmax(scale, fabs((double)ref[t][i]));
        }
    for (int t = 0; t < 3; t++) free(g[t]);
    dbe->destroy(d);
    return m / scale; /* relative to the largest reference value (at least 1) */
}

int attn_check(const char *backend, attn_params *p, attn_check_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->dense_max_abs_err = NAN;
    fd_ctx c;
    memset(&c, 0, sizeof c);
    if (resolve(backend, p, &c.be, err, errlen) != 0) return -1;
    if (io_alloc(&c.io, p, err, errlen) != 0) return -1;
    io_fill(&c.io, p->seed);
    char msg[512];
    size_t bytes = c.io.n * sizeof(float);
    c.o2 = rb_aligned_alloc(bytes), c.out0 = rb_aligned_alloc(bytes);
    c.x0 = rb_aligned_alloc(bytes), c.u = rb_aligned_alloc(bytes);
    if (!c.o2 || !c.out0 || !c.x0 || !c.u) return fd_free(&c), rb_fail(err, errlen, "out of memory");
    if (!(c.a = c.be->create(p, msg, sizeof msg))) return fd_free(&c), rb_fail(err, errlen, "%s: %s", backend, msg);
    /* One training pass chooses the routes (and initialises centroids); the
     * analytic gradients come from a pass that reuses them, as do all the
     * perturbed passes, so the cluster choice is held fixed throughout. */
    c.be->forward(c.a, c.io.out, c.io.q, c.io.k, c.io.v, ATTN_TRAIN);
    c.be->forward(c.a, c.io.out, c.io.q, c.io.k, c.io.v, ATTN_KEEP_ROUTES);
    c.be->backward(c.a, c.io.dq, c.io.dk, c.io.dv, c.io.dout, c.io.q, c.io.k, c.io.v, c.io.out);
    memcpy(c.out0, c.io.out, bytes);
    c.cw = p->commit_weight;
    rb_rng rng;
    rb_rng_seed(&rng, p->seed ^ 0xC0FFEEull);
    double worst = 0.0;
    for (int t = 0; t < 3; t++) worst = fd_tensor(&c, t, &rng, r->detail, sizeof r->detail, worst);
    r->grad_rel_err = worst;
    int pass = worst <= 2e-2;
    if (c.be->equals_dense && c.be->equals_dense(p)) {
        double m = against_dense(&c, p, msg, sizeof msg);
        if (isnan(m)) return fd_free(&c), rb_fail(err, errlen, "dense reference: %s", msg);
        r->compared_dense = 1;
        r->dense_max_abs_err = m;
        if (m > 1e-4) pass = 0;
    }
    r->pass = pass;
    fd_free(&c);
    return 0;
}
