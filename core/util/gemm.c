/* gemm.c: rb_sgemm (gemm.h), the BLIS layout: B packed in blocks of KC x NC
 * (panels of NR columns, k-major), A in blocks of MC x KC per thread (panels
 * of MR rows), and a micro-kernel holding MR x NR of C in 24 registers. */
#include "util/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "util/common.h"
#include "util/threads.h"

static void gemm_blas(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc) {
    if (K <= 0) { /* C = beta C (cblas rejects lda = 0) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                lda, B, ldb, beta, C, ldc);
}

#ifdef __AVX512F__
enum { MR = 6, NR = 64, KC = 256, NC = 1024, MC_MAX = 240 };

/* Buffers kept from call to call (rb_sgemm runs outside parallel regions,
 * so one caller at a time): the packed B block and one A block per thread. */
static float *g_bp, *g_ap;
static int g_ap_threads;

static int gemm_buffers(int nth) {
    if (!g_bp && !(g_bp = rb_aligned_alloc(sizeof(float) * KC * NC))) return -1;
    if (g_ap_threads < nth) {
        free(g_ap);
        g_ap_threads = 0;
        if (!(g_ap = rb_aligned_alloc(sizeof(float) * (size_t)MC_MAX * KC * nth))) return -1;
        g_ap_threads = nth;
    }
    return 0;
}

/* op(A) rows [i0, i0+mc) x k [p0, p0+kc) into MR-row panels, k-major; rows past mc are 0 */
static void pack_a(float *ap, const float *A, int lda, int ta, int i0, int mc, int p0, int kc) {
    for (int ir = 0; ir < mc; ir += MR) {
        float *dst = ap + (size_t)ir * kc;
        int rows = RB_MIN(MR, mc - ir);
        if (ta) { /* A(i, k) = A[k lda + i]: a panel's rows are adjacent */
            for (int k = 0; k < kc; k++) {
                const float *s = A + (size_t)(p0 + k) * lda + i0 + ir;
                for (int r = 0; r < MR; r++) dst[k * MR + r] = r < rows ? s[r] : 0.0f;
            }
        } else {
            for (int r = 0; r < MR; r++) {
                const float *s = A + (size_t)(i0 + ir + r) * lda + p0;
                if (r < rows)
                    for (int k = 0; k < kc; k++) dst[k * MR + r] = s[k];
                else
                    for (int k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
            }
        }
    }
}

/* op(B) k [p0, p0+kc) x columns [j0, j0+nc) into NR-column panels, k-major; columns past nc are 0 */
static void pack_b_panel(float *bp, const float *B, int ldb, int tb, int p0, int kc, int j0, int cols) {
    if (tb) { /* B(k, j) = B[j ldb + k]: read each column's run of k, write it strided */
        for (int c = 0; c < NR; c++) {
            if (c < cols) {
                const float *s = B + (size_t)(j0 + c) * ldb + p0;
                for (int k = 0; k < kc; k++) bp[k * NR + c] = s[k];
            } else
                for (int k = 0; k < kc; k++) bp[k * NR + c] = 0.0f;
        }
    } else {
        for (int k = 0; k < kc; k++) {
            const float *s = B + (size_t)(p0 + k) * ldb + j0;
            memcpy(bp + k * NR, s, sizeof(float) * cols);
            for (int c = cols; c < NR; c++) bp[k * NR + c] = 0.0f;
        }
    }
}

/* C rows [0, rows) x columns [0, cols) = alpha (A panel B panel) + beta C
 * (beta 0: C not read) */
static void micro(int kc, const float *ap, const float *bp, float *C, int ldc, int rows, int cols, float alpha,
                  float beta) {
    __m512 acc[MR][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *b = bp + (size_t)k * NR;
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32),
               b3 = _mm512_load_ps(b + 48);
        const float *a = ap + (size_t)k * MR;
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(av, b3, acc[r][3]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha), be = _mm512_set1_ps(beta);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        float *c = C + (size_t)r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            int left = cols - 16 * v;
            if (left <= 0) break;
            __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
            __m512 o = _mm512_mul_ps(al, acc[r][v]);
            if (beta != 0.0f) o = _mm512_fmadd_ps(be, _mm512_maskz_loadu_ps(mk, c + 16 * v), o);
            _mm512_mask_storeu_ps(c + 16 * v, mk, o);
        }
    }
}

/* A block's rows of C against one packed B block: pack the block of A, then
 * the micro-kernel over every panel pair. */
static void gemm_rows(float *ap, const float *bp, const float *A, int lda, int ta, int i0, int m, int pc, int kc,
                      int jc, int nc, float alpha, float be, float *C, int ldc) {
    pack_a(ap, A, lda, ta, i0, m, pc, kc);
    for (int jp = 0; jp * NR < nc; jp++) {
        int cols = RB_MIN((int)NR, nc - jp * NR);
        for (int ir = 0; ir < m; ir += MR)
            micro(kc, ap + (size_t)ir * kc, bp + (size_t)jp * NR * kc, C + (size_t)(i0 + ir) * ldc + jc + jp * NR,
                  ldc, RB_MIN((int)MR, m - ir), cols, alpha, be);
    }
}

static size_t st_ap_floats(int M) { return (size_t)((RB_MIN(M, (int)MC_MAX) + MR - 1) / MR * MR) * KC; }

size_t rb_sgemm_st_floats(int M, int N, int K) {
    (void)K;
    if (M <= 0 || N <= 0) return 0;
    return st_ap_floats(M) + (size_t)KC * ((RB_MIN(N, (int)NC) + NR - 1) / NR * NR);
}

void rb_sgemm_st(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc, float *ws) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || !ws) {
        gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *ap = ws, *bp = ws + st_ap_floats(M);
    for (int jc = 0; jc < N; jc += NC) {
        int nc = RB_MIN((int)NC, N - jc);
        for (int pc = 0; pc < K; pc += KC) {
            int kc = RB_MIN((int)KC, K - pc);
            for (int jp = 0; jp * NR < nc; jp++)
                pack_b_panel(bp + (size_t)jp * NR * kc, B, ldb, tb, pc, kc, jc + jp * NR,
                             RB_MIN((int)NR, nc - jp * NR));
            for (int i0 = 0; i0 < M; i0 += MC_MAX)
                gemm_rows(ap, bp, A, lda, ta, i0, RB_MIN((int)MC_MAX, M - i0), pc, kc, jc, nc, alpha,
                          pc == 0 ? beta : 1.0f, C, ldc);
        }
    }
}

void rb_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int nth = rb_threads();
    if (K <= 0 || omp_in_parallel() || gemm_buffers(nth) != 0) {
        gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* blocks of rows of C: a multiple of the thread count, as even as MR
     * allows, at most MC_MAX rows (static schedule: 5 blocks on 2 threads
     * left one waiting a fifth of the time) */
    int nmb = (M + MC_MAX - 1) / MC_MAX;
    nmb = (nmb + nth - 1) / nth * nth;
    int mc = (M + nmb - 1) / nmb;
    mc = (mc + MR - 1) / MR * MR;
    nmb = (M + mc - 1) / mc;
    for (int jc = 0; jc < N; jc += NC) {
        int nc = RB_MIN((int)NC, N - jc), npan = (nc + NR - 1) / NR;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = RB_MIN((int)KC, K - pc);
            float be = pc == 0 ? beta : 1.0f; /* later k blocks add to what the first wrote */
#pragma omp parallel num_threads(nth)
            {
#pragma omp for schedule(static)
                for (int jp = 0; jp < npan; jp++)
                    pack_b_panel(g_bp + (size_t)jp * NR * kc, B, ldb, tb, pc, kc, jc + jp * NR,
                                 RB_MIN((int)NR, nc - jp * NR));
                float *ap = g_ap + (size_t)omp_get_thread_num() * MC_MAX * KC;
#pragma omp for schedule(static)
                for (int ib = 0; ib < nmb; ib++)
                    gemm_rows(ap, g_bp, A, lda, ta, ib * mc, RB_MIN(mc, M - ib * mc), pc, kc, jc, nc, alpha, be, C,
                              ldc);
            }
        }
    }
}
#else
void rb_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

size_t rb_sgemm_st_floats(int M, int N, int K) {
    (void)M, (void)N, (void)K;
    return 0;
}

void rb_sgemm_st(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc, float *ws) {
    (void)ws;
    if (M <= 0 || N <= 0) return;
    gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif
