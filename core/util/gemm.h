/* gemm.h: the model's matrix products.
 *
 * rb_sgemm has cblas_sgemm's row-major meaning: C (M,N) = alpha op(A) op(B)
 * + beta C, op(A) (M,K) = A or A^T (ta), op(B) (K,N) = B or B^T (tb). With
 * AVX-512 it runs a packed, register-blocked kernel of our own (panels of 6
 * rows x 64 columns, k in blocks of 256, the rows of C split over our
 * threads); OpenBLAS here runs its AVX2 kernels (the environment sets
 * OPENBLAS_CORETYPE=Haswell, as older OpenBLAS builds misbehave on these
 * CPUs), which reach half of what AVX-512 does on a CPU with full-width
 * AVX-512 units. Without AVX-512, inside a parallel region, or for an empty
 * product, it calls cblas_sgemm.
 *
 * The sum over k runs in the same order whatever the thread count (each
 * element of C is one thread's, k blocks in order), so results do not
 * depend on the threads; they differ from OpenBLAS's in rounding only. */
#ifndef RB_GEMM_H
#define RB_GEMM_H

#include <stddef.h>

void rb_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);

/* The same on the calling thread (for products inside a parallel region,
 * a thread's tiles), packing into ws: rb_sgemm_st_floats(M, N, K) floats,
 * 64-byte aligned, that the caller owns (0 without AVX-512, where it calls
 * cblas_sgemm; so does a NULL ws). */
size_t rb_sgemm_st_floats(int M, int N, int K);
void rb_sgemm_st(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc, float *ws);

#endif
