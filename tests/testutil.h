/* testutil.h: fixtures the C tests repeat, beside tap.h: strings that live
 * to the end of the test, a trial row's parameter columns by name, a
 * temporary directory, random tensors. Header-only (static functions), so a
 * test includes what it uses and nothing links twice. */
#ifndef RB_TESTUTIL_H
#define RB_TESTUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* printf into a string that stays valid until the test exits. */
static __attribute__((unused, format(printf, 1, 2))) const char *tu_str(const char *fmt, ...) {
    static char pool[8192][48];
    static int next;
    char *s = pool[next++ % 8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof pool[0], fmt, ap);
    va_end(ap);
    return s;
}

/* A fresh directory under $TMPDIR (or /tmp) named for the test. */
static __attribute__((unused)) const char *tu_tmpdir(const char *test) {
    static char dir[256];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/rb_%s_XXXXXX", base && *base ? base : "/tmp", test);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    return dir;
}

#ifdef RB_STORE_H
/* Set a trial row's parameter column by name (a column the table lacks is ignored). */
static __attribute__((unused)) void tu_col(store_trial *t, const char *name, const char *v) {
    int i = store_col_index(name);
    if (i >= 0) t->colv[i] = v;
}
static __attribute__((unused)) void tu_coli(store_trial *t, const char *name, long long v) {
    tu_col(t, name, tu_str("%lld", v));
}
#endif

#ifdef RB_COMMON_H
/* n floats from N(0, scale^2), reproducible from seed. */
static __attribute__((unused)) void tu_randn(float *x, size_t n, uint64_t seed, float scale) {
    rb_rng r;
    rb_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rb_rng_normal(&r);
}
#endif

#endif
