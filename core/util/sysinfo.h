/* sysinfo.h: what machine this is and how fast it multiplies matrices. The
 * sgemm rate (a 2048-cube product, median of several, with the thread count
 * in use) is the ceiling every benchmark is compared with. */
#ifndef RB_SYSINFO_H
#define RB_SYSINFO_H

#include "util/measure.h"

/* The ceiling's product: RB_SGEMM_N cubed. */
#define RB_SGEMM_N 2048

/* The sgemm ceiling measured as every timing is (util/measure.h): runs of
 * the product until their IQR is within tolerance or the time budget ends,
 * the median rate, its spread and whether the machine was busy. */
typedef struct {
    double gflops;      /* median over runs */
    double gflops_iqr;  /* interquartile range of the runs' rates */
    int runs;
    int noisy;
    char noise[256];
} rb_sgemm_rate;

typedef struct {
    char cpu[128];
    char host[128];
    int cores;        /* online cores */
    int threads;      /* threads in use (rb_threads) */
    char blas[256];   /* OpenBLAS config and threading */
    char kernels[320]; /* the SIMD of our own kernels and of OpenBLAS's, and why they differ */
    double sgemm_gflops; /* 0 when not measured */
    rb_sgemm_rate sgemm; /* the measurement behind it */
} rb_sysinfo;

/* Fills s; measures sgemm when measure is nonzero (about a second). */
void rb_sysinfo_read(rb_sysinfo *s, int measure);

/* Measure n x n x n cblas_sgemm products after one warm-up, sampling as ar
 * says (NULL: rb_autorange_default). 0, or -1 when the operands cannot be
 * allocated. */
int rb_sgemm_measure(int n, const rb_autorange *ar, rb_sgemm_rate *out);

/* Median GFLOP/s of at least `repeat` products (rb_sgemm_measure). */
double rb_sgemm_gflops(int n, int repeat);

/* blas and kernels in one line, as stored with a run ("OpenBLAS ... (openmp);
 * routebench: AVX-512 ..."). */
const char *rb_sysinfo_blas_line(const rb_sysinfo *s, char *buf, size_t len);

#endif
