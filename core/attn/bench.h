/* bench.h: timing one attention layer (what `routebench attn` and the
 * runner's bench trials measure) and checking a backend's gradients and its
 * agreement with dense (`routebench attn --check`, the tests). */
#ifndef RB_BENCH_H
#define RB_BENCH_H

#include <stddef.h>

#include "attn/attn.h"

#define ATTN_BENCH_MAX_STATS 32

typedef struct {
    int repeat;                   /* timed runs (after warm-up) */
    double fwd_ms, bwd_ms, fwdbwd_ms;           /* medians over the timed runs */
    double fwd_ms_min, fwd_ms_max, bwd_ms_min, bwd_ms_max;
    double fwd_flops, bwd_flops;  /* analytic, backend's convention */
    double fwd_gflops, fwdbwd_gflops;
    size_t act_bytes;             /* analytic activation bytes (backend's act_bytes) */
    size_t inst_bytes;            /* bytes the instance actually holds */
    size_t base_rss_bytes;        /* peak RSS after inputs were allocated, before the backend */
    size_t peak_rss_bytes;        /* peak RSS at the end */
    int nstats;
    attn_stat stats[ATTN_BENCH_MAX_STATS];
} attn_bench_result;

/* Random q, k, v, dout from p->seed; `warmup` untimed passes then `repeat`
 * timed forward and backward passes (training mode). p is resolved in place.
 * 0, or -1 with a message (unknown backend, bad combination, no memory). */
int attn_bench(const char *backend, attn_params *p, int repeat, int warmup, attn_bench_result *r, char *err,
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
