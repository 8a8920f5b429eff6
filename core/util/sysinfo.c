/* sysinfo.c: CPU name, cores, BLAS and the measured sgemm rate (sysinfo.h). */
#include "util/sysinfo.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* The product's operands: n x n uniform in [-0.5, 0.5). */
static int sgemm_operands(int n, float **a, float **b, float **c) {
    size_t nn = (size_t)n * n;
    *a = rb_aligned_alloc(nn * sizeof(float));
    *b = rb_aligned_alloc(nn * sizeof(float));
    *c = rb_aligned_alloc(nn * sizeof(float));
    if (!*a || !*b || !*c) {
        free(*a), free(*b), free(*c);
        return -1;
    }
    rb_rng r;
    rb_rng_seed(&r, 42);
    for (size_t i = 0; i < nn; i++) (*a)[i] = rb_rng_uniform(&r) - 0.5f, (*b)[i] = rb_rng_uniform(&r) - 0.5f, (*c)[i] = 0;
    return 0;
}

int rb_sgemm_measure(int n, const rb_autorange *ar, rb_sgemm_rate *out) {
    memset(out, 0, sizeof *out);
    float *a, *b, *c;
    if (sgemm_operands(n, &a, &b, &c) != 0) return -1;
    rb_autorange dflt;
    if (!ar) rb_autorange_default(&dflt), ar = &dflt;
    int cap = ar->max_runs > 0 ? ar->max_runs : 1000;
    double *ts = mallocCheck((size_t)cap * sizeof(double));
    rb_threads(); /* make sure the thread setting is applied */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    rb_load_probe lp;
    rb_load_begin(&lp);
    int k = 0;
    double spent = 0;
    do {
        double t0 = rb_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        ts[k] = rb_now() - t0;
        spent += ts[k++];
    } while (k < cap && rb_autorange_more(ar, ts, k, spent));
    rb_load ld;
    rb_load_end(&lp, &ld);
    double flop = 2.0 * (double)n * n * n;
    for (int i = 0; i < k; i++) ts[i] = flop / ts[i] * 1e-9; /* GFLOP/s per run */
    rb_summary s;
    rb_summarize(ts, k, &s);
    out->gflops = s.median, out->gflops_iqr = s.iqr, out->runs = k;
    rb_noise_rule rule;
    rb_noise_rule_default(&rule, rb_threads());
    out->noisy = rb_noise_judge(&rule, &s, &ld, out->noise, sizeof out->noise);
    free(ts), free(a), free(b), free(c);
    return 0;
}

double rb_sgemm_gflops(int n, int repeat) {
    rb_autorange ar;
    rb_autorange_default(&ar);
    ar.min_runs = repeat < 1 ? 1 : repeat;
    rb_sgemm_rate r;
    return rb_sgemm_measure(n, &ar, &r) == 0 ? r.gflops : 0.0;
}

/* 1 when /proc/cpuinfo's flags list `flag` (a whole word). */
static int cpu_has(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[8192];
    int has = 0;
    size_t n = strlen(flag);
    while (!has && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        for (char *p = strstr(line, flag); p && !has; p = strstr(p + 1, flag))
            has = p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n' || p[n] == 0);
        break;
    }
    fclose(f);
    return has;
}

extern char *openblas_get_corename(void);

/* Our kernels are built for the compiler's target (-march=native); OpenBLAS
 * picks its own at run time, and OPENBLAS_CORETYPE can force an older one.
 * The share of "sgemm" a benchmark reports is against OpenBLAS's choice, so
 * a reader needs to know when our kernels are wider than its. */
static void read_kernels(char *out, size_t len) {
#if defined(__AVX512F__)
    const char *ours = "AVX-512", *wide = "avx512f";
#elif defined(__AVX2__)
    const char *ours = "AVX2", *wide = NULL;
#else
    const char *ours = "generic C (products through OpenBLAS)", *wide = NULL;
#endif
    const char *core = openblas_get_corename();
    if (!core) core = "?";
    /* OpenBLAS's x86 cores with AVX-512 kernels */
    static const char *const k512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    int blas512 = 0;
    for (size_t i = 0; i < sizeof k512 / sizeof k512[0]; i++) blas512 |= strcasecmp(core, k512[i]) == 0;
    const char *forced = getenv("OPENBLAS_CORETYPE");
    size_t off = (size_t)snprintf(out, len, "routebench %s; OpenBLAS %s kernels", ours, core);
    if (wide && !blas512 && cpu_has(wide) && off < len) {
        if (forced && *forced)
            snprintf(out + off, len - off, " (OPENBLAS_CORETYPE=%.32s on an AVX-512 CPU): our kernels can beat the "
                     "sgemm ceiling", forced);
        else
            snprintf(out + off, len - off, " on an AVX-512 CPU: our kernels can beat the sgemm ceiling");
    }
}

const char *rb_sysinfo_blas_line(const rb_sysinfo *s, char *buf, size_t len) {
    snprintf(buf, len, "%s; %s", s->blas, s->kernels);
    return buf;
}

void rb_sysinfo_read(rb_sysinfo *s, int measure) {
    memset(s, 0, sizeof *s);
    read_cpu_model(s->cpu, sizeof s->cpu);
    if (gethostname(s->host, sizeof s->host - 1) != 0) snprintf(s->host, sizeof s->host, "unknown");
    s->cores = rb_cores();
    s->threads = rb_threads();
    rb_blas_name(s->blas, sizeof s->blas);
    read_kernels(s->kernels, sizeof s->kernels);
    if (measure && rb_sgemm_measure(RB_SGEMM_N, NULL, &s->sgemm) == 0) s->sgemm_gflops = s->sgemm.gflops;
}
