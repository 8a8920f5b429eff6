/* bench.h: timing one attention layer (what `routebench attn` and the
 * runner's bench trials measure) and checking a backend's gradients and its
 * agreement with dense (`routebench attn --check`, the tests). */
#ifndef RB_BENCH_H
#define RB_BENCH_H

#include <stddef.h>

#include "attn/attn.h"
#include "util/measure.h"

#define ATTN_BENCH_MAX_STATS 32

typedef struct {
    int repeat;                   /* timed samples (after warm-up) */
    int block;                    /* passes per sample (sub-2 ms passes are timed in blocks) */
    double fwd_ms, bwd_ms, fwdbwd_ms;           /* medians over the samples (per pass) */
    double fwd_ms_iqr, bwd_ms_iqr, fwdbwd_ms_iqr; /* their interquartile ranges */
    double fwd_ms_min, fwd_ms_max, bwd_ms_min, bwd_ms_max;
    int noisy;                    /* the spread or the machine's load too high to trust (util/measure.h) */
    char noise[256];              /* why ("" when not noisy) */
    double load_avg, other_cpu;   /* the machine while it ran: 1-min load, others' cores */
    double fwd_flops, bwd_flops;  /* analytic, backend's convention */
    double fwd_gflops, fwdbwd_gflops;
    size_t act_bytes;             /* analytic activation bytes (backend's act_bytes) */
    size_t inst_bytes;            /* bytes the instance actually holds */
    size_t base_rss_bytes;        /* peak RSS after inputs were allocated, before the backend */
    size_t peak_rss_bytes;        /* peak RSS at the end */
    int nstats;
    attn_stat stats[ATTN_BENCH_MAX_STATS];
} attn_bench_result;

/* How to time: untimed warm-up passes, then timed ones until the autorange
 * rule is met (repeat is its min_runs). */
typedef struct {
    int warmup;
    rb_autorange ar;
} attn_bench_opts;

/* warmup 1, util/measure.h's autorange defaults with min_runs = repeat. */
void attn_bench_opts_default(attn_bench_opts *o, int repeat);

/* Random q, k, v, dout from p->seed; o->warmup untimed passes then timed
 * forward and backward passes (training mode) as o->ar says, every sample
 * kept; medians, IQRs and the noise judgement into r. p is resolved in
 * place. 0, or -1 with a message (unknown backend, bad combination, no
 * memory). */
int attn_bench(const char *backend, attn_params *p, const attn_bench_opts *o, attn_bench_result *r, char *err,
               size_t errlen);

typedef struct {
    int pass;                 /* 1 when every check passed */
    double grad_rel_err;      /* worst relative error of analytic vs central-difference gradients */
    double dense_max_abs_err; /* max |out - dense out| over out, dq, dk, dv; NAN when no comparison applies */
    int compared_dense;
    char detail[512];         /* which tensor / index was worst */
} attn_check_result;

/* Gradient check (central differences of a random projection of the output,
 * sampled entries of q, k and v, the cluster choice held fixed) and, where
 * the backend's equals_dense says so, comparison with `dense`. */
int attn_check(const char *backend, attn_params *p, attn_check_result *r, char *err, size_t errlen);

#endif
