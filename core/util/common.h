/* common.h: small helpers every file uses: checked allocation and file
 * opening (llm.c's mallocCheck/fopenCheck, which name the file and line and
 * exit), error-message filling for errors a user can cause, the monotonic
 * clock and a seeded random generator (splitmix64 + xorshift) so runs are
 * reproducible from a seed. */
#ifndef RB_COMMON_H
#define RB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RB_MAX(a, b) ((a) > (b) ? (a) : (b))

void *rb_malloc_check(size_t size, const char *file, int line);
void *rb_calloc_check(size_t n, size_t size, const char *file, int line);
void *rb_realloc_check(void *old, size_t size, const char *file, int line);
FILE *rb_fopen_check(const char *path, const char *mode, const char *file, int line);
/* The exit status of the *Check allocators' out-of-memory path (default 1;
 * util/child.c gives trial processes one of their own). */
void rb_set_nomem_exit(int code);
#define mallocCheck(size) rb_malloc_check((size), __FILE__, __LINE__)
#define callocCheck(n, size) rb_calloc_check((n), (size), __FILE__, __LINE__)
#define reallocCheck(p, size) rb_realloc_check((p), (size), __FILE__, __LINE__)
#define fopenCheck(path, mode) rb_fopen_check((path), (mode), __FILE__, __LINE__)

/* 64-byte aligned allocation (vector loads, cache lines); free with free().
 * Returns NULL on failure, so callers can record "out of memory". */
void *rb_aligned_alloc(size_t size);

/* Fill err (may be NULL) printf-style; returns -1 so callers can
 * `return rb_fail(err, errlen, "...")`. */
int rb_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic clock in seconds. */
double rb_now(void);

/* Peak resident set size of this process in bytes since the start or the
 * last rb_reset_peak_rss (VmHWM of /proc/self/status; getrusage where that
 * is missing). */
size_t rb_peak_rss(void);
/* Starts a new peak-RSS window at the current RSS (Linux clear_refs), so a
 * measurement inside a long process (the runner's trials) does not inherit
 * an earlier trial's peak. Returns 0, or -1 where the kernel cannot (the peak
 * then stays process-wide). */
int rb_reset_peak_rss(void);

/* Reproducible random numbers. */
typedef struct { uint64_t s; } rb_rng;
void rb_rng_seed(rb_rng *r, uint64_t seed);
uint64_t rb_rng_u64(rb_rng *r);
float rb_rng_uniform(rb_rng *r);              /* [0, 1) */
float rb_rng_normal(rb_rng *r);               /* N(0, 1) */
uint32_t rb_rng_below(rb_rng *r, uint32_t n); /* [0, n) */

/* Median of n doubles (sorts a copy in place of xs). */
double rb_median(double *xs, int n);

#endif
