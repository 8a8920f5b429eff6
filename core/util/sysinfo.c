/* sysinfo.c: CPU name, cores, BLAS and the measured sgemm rate (sysinfo.h). */
#include "util/sysinfo.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"
#include "util/threads.h"

static void read_cpu_model(char *out, size_t len) {
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ' || *c == '\t') c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(out, len, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

double rb_sgemm_gflops(int n, int repeat) {
    size_t nn = (size_t)n * n;
    float *a = rb_aligned_alloc(nn * sizeof(float));
    float *b = rb_aligned_alloc(nn * sizeof(float));
    float *c = rb_aligned_alloc(nn * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
    rb_rng r;
    rb_rng_seed(&r, 42);
    for (size_t i = 0; i < nn; i++) a[i] = rb_rng_uniform(&r) - 0.5f, b[i] = rb_rng_uniform(&r) - 0.5f, c[i] = 0;
    if (repeat < 1) repeat = 1;
    double *ts = mallocCheck((size_t)repeat * sizeof(double));
    rb_threads(); /* make sure the thread setting is applied */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    for (int i = 0; i < repeat; i++) {
        double t0 = rb_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        ts[i] = rb_now() - t0;
    }
    double med = rb_median(ts, repeat);
    free(ts), free(a), free(b), free(c);
    return 2.0 * (double)n * n * n / med * 1e-9;
}

void rb_sysinfo_read(rb_sysinfo *s, int measure) {
    memset(s, 0, sizeof *s);
    read_cpu_model(s->cpu, sizeof s->cpu);
    if (gethostname(s->host, sizeof s->host - 1) != 0) snprintf(s->host, sizeof s->host, "unknown");
    s->cores = rb_cores();
    s->threads = rb_threads();
    rb_blas_name(s->blas, sizeof s->blas);
    s->sgemm_gflops = measure ? rb_sgemm_gflops(2048, 7) : 0.0;
}
