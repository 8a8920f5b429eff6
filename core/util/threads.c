/* threads.c: see threads.h. */
#include "util/threads.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* OpenBLAS extensions (declared in its cblas.h, repeated here so this file
 * does not depend on which cblas.h is first on the include path). */
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
extern int openblas_get_parallel(void);
extern char *openblas_get_config(void);

static int g_threads = 0;

int rb_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void rb_set_threads(int n) {
    if (n <= 0) n = rb_cores();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int rb_threads(void) {
    if (g_threads == 0) rb_set_threads(0);
    return g_threads;
}

void rb_par_begin(void) {
    if (openblas_get_parallel() == 1) openblas_set_num_threads(1); /* pthreads build */
}

void rb_par_end(void) {
    if (openblas_get_parallel() == 1) openblas_set_num_threads(rb_threads());
}

const char *rb_blas_name(char *buf, size_t len) {
    const char *kind[] = {"sequential", "pthreads", "openmp"};
    int p = openblas_get_parallel();
    snprintf(buf, len, "%s (%s)", openblas_get_config(), (p >= 0 && p <= 2) ? kind[p] : "?");
    return buf;
}
