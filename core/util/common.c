/* common.c: checked allocation, errors, clocks, memory readings and the
 * seeded random generator declared in common.h. */
#include "util/common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int g_nomem_exit = 1;
void rb_set_nomem_exit(int code) { g_nomem_exit = code; }

void *rb_malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory allocating %zu bytes at %s:%d\n", size, file, line);
        exit(g_nomem_exit);
    }
    return p;
}

void *rb_calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory allocating %zu x %zu bytes at %s:%d\n", n, size, file, line);
        exit(g_nomem_exit);
    }
    return p;
}

void *rb_realloc_check(void *old, size_t size, const char *file, int line) {
    void *p = realloc(old, size ? size : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory reallocating %zu bytes at %s:%d\n", size, file, line);
        exit(g_nomem_exit);
    }
    return p;
}

FILE *rb_fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f) {
        fprintf(stderr, "error: cannot open '%s' (mode %s): %s (at %s:%d)\n", path, mode,
                strerror(errno), file, line);
        exit(1);
    }
    return f;
}

void *rb_aligned_alloc(size_t size) {
    void *p = NULL;
    if (posix_memalign(&p, 64, size ? size : 64) != 0) return NULL;
    return p;
}

int rb_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double rb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t rb_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        unsigned long kb = 0;
        int found = 0;
        while (!found && fgets(line, sizeof line, f)) found = sscanf(line, "VmHWM: %lu kB", &kb) == 1;
        fclose(f);
        if (found) return (size_t)kb * 1024;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

int rb_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rb_rng_seed(rb_rng *r, uint64_t seed) {
    uint64_t x = seed;
    r->s = splitmix64(&x);
    if (r->s == 0) r->s = 0x9E3779B97F4A7C15ull;
}

uint64_t rb_rng_u64(rb_rng *r) { /* xorshift64* */
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float rb_rng_uniform(rb_rng *r) { return (float)(rb_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float rb_rng_normal(rb_rng *r) {
    double u1 = ((double)(rb_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rb_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t rb_rng_below(rb_rng *r, uint32_t n) { return (uint32_t)((rb_rng_u64(r) >> 32) * (uint64_t)n >> 32); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double rb_median(double *xs, int n) {
    if (n <= 0) return NAN;
    qsort(xs, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}
