/* test_gemm.c: rb_sgemm (util/gemm.h) against a product in double, for the
 * four transpose cases, alpha and beta (0 with NaN in C, which must not be
 * read; 1; 0.5), sizes on and off the kernel's steps (6 rows, 64 columns,
 * k blocks of 256, column blocks of 1024), row strides wider than the
 * matrices; and the same bits with 1 and 2 threads, as its header promises. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "util/common.h"
#include "util/gemm.h"
#include "util/threads.h"

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
} shape;

static double worst_err(const shape *s, const float *A, const float *B, const float *C0, const float *C) {
    double worst = 0;
    for (int i = 0; i < s->M; i++)
        for (int j = 0; j < s->N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < s->K; k++) {
                double a = s->ta ? A[(size_t)k * s->lda + i] : A[(size_t)i * s->lda + k];
                double b = s->tb ? B[(size_t)j * s->ldb + k] : B[(size_t)k * s->ldb + j];
                acc += a * b, mag += fabs(a * b);
            }
            double want = s->alpha * acc + (s->beta != 0.0f ? s->beta * (double)C0[(size_t)i * s->ldc + j] : 0.0);
            double err = fabs(C[(size_t)i * s->ldc + j] - want) / (1.0 + fabs(s->alpha) * mag);
            if (!(err <= worst)) worst = err; /* NaN becomes the worst */
        }
    return worst;
}

int main(void) {
    rb_rng r;
    rb_rng_seed(&r, 7);
    int bad = 0, differ = 0, n = 0;
    double worst = 0;
    for (int t = 0; t < 60; t++) {
        shape s = {.ta = t % 2, .tb = (t / 2) % 2};
        int big = t % 5 == 4; /* past a column block (1024) and over two k blocks (256) */
        s.M = 1 + (int)rb_rng_below(&r, big ? 300 : 80);
        s.N = big ? 1000 + (int)rb_rng_below(&r, 100) : 1 + (int)rb_rng_below(&r, 200);
        s.K = big ? 520 + (int)rb_rng_below(&r, 200) : 1 + (int)rb_rng_below(&r, 300);
        s.lda = (s.ta ? s.M : s.K) + (int)rb_rng_below(&r, 3);
        s.ldb = (s.tb ? s.K : s.N) + (int)rb_rng_below(&r, 3);
        s.ldc = s.N + (int)rb_rng_below(&r, 3);
        float betas[] = {0.0f, 1.0f, 0.5f};
        s.beta = betas[t % 3];
        s.alpha = t % 4 == 3 ? -0.75f : 1.0f;
        size_t na = (size_t)(s.ta ? s.K : s.M) * s.lda, nb = (size_t)(s.tb ? s.N : s.K) * s.ldb;
        size_t nc = (size_t)s.M * s.ldc;
        float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb), *C0 = malloc(sizeof(float) * nc);
        float *C1 = malloc(sizeof(float) * nc), *C2 = malloc(sizeof(float) * nc);
        for (size_t i = 0; i < na; i++) A[i] = rb_rng_normal(&r);
        for (size_t i = 0; i < nb; i++) B[i] = rb_rng_normal(&r);
        for (size_t i = 0; i < nc; i++) C0[i] = s.beta == 0.0f ? NAN : rb_rng_normal(&r);
        memcpy(C1, C0, sizeof(float) * nc), memcpy(C2, C0, sizeof(float) * nc);
        rb_set_threads(1);
        rb_sgemm(s.ta, s.tb, s.M, s.N, s.K, s.alpha, A, s.lda, B, s.ldb, s.beta, C1, s.ldc);
        rb_set_threads(2);
        rb_sgemm(s.ta, s.tb, s.M, s.N, s.K, s.alpha, A, s.lda, B, s.ldb, s.beta, C2, s.ldc);
        double e = worst_err(&s, A, B, C0, C2);
        if (!(e < 1e-6)) {
            bad++;
            diag("M %d N %d K %d ta %d tb %d beta %g: relative error %.2e", s.M, s.N, s.K, s.ta, s.tb,
                 (double)s.beta, e);
        }
        if (e > worst) worst = e;
        /* columns between N and ldc are not C's: they stay as they were */
        for (int i = 0; i < s.M; i++)
            for (int j = s.N; j < s.ldc; j++)
                bad += memcmp(&C2[(size_t)i * s.ldc + j], &C0[(size_t)i * s.ldc + j], 4) != 0;
        differ += memcmp(C1, C2, sizeof(float) * nc) != 0;
        n++;
        free(A), free(B), free(C0), free(C1), free(C2);
    }
    diag("rb_sgemm: %d products, worst error %.2e of the sum of |terms|", n, worst);
    ok(bad == 0, "rb_sgemm equals a double product (every transpose case, alpha, beta 0 / 1 / 0.5, sizes off the "
                 "kernel's steps, wide row strides; %d bad)", bad);
    ok(differ == 0, "the same bits with 1 and 2 threads (%d of %d differ)", differ, n);
    return tap_done();
}
