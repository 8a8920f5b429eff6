/* sysinfo.h: what machine this is and how fast it multiplies matrices. The
 * sgemm rate (a 2048-cube product, median of several, with the thread count
 * in use) is the ceiling every benchmark is compared with. */
#ifndef RB_SYSINFO_H
#define RB_SYSINFO_H

typedef struct {
    char cpu[128];
    char host[128];
    int cores;        /* online cores */
    int threads;      /* threads in use (rb_threads) */
    char blas[256];   /* OpenBLAS config and threading */
    double sgemm_gflops; /* 0 when not measured */
} rb_sysinfo;

/* Fills s; measures sgemm when measure is nonzero (about a second). */
void rb_sysinfo_read(rb_sysinfo *s, int measure);

/* Median GFLOP/s of `repeat` n x n x n cblas_sgemm products after one warm-up. */
double rb_sgemm_gflops(int n, int repeat);

#endif
