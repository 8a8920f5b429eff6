/* cluster.h: the small dense products of attention inside gathered blocks
 * (routing's clusters: tens to a thousand rows of head_dim floats).
 *
 * OpenBLAS spends as long packing and dispatching a 46 x 46 x 64 product
 * as computing it, and computes the whole rectangle where causal attention
 * needs a triangle. cl_gemm is one register-blocked AVX-512 kernel (6 rows x
 * up to 64 columns of accumulators, operands read in place, no packing) that
 * takes, per row, the range of k and the columns it needs, so a causal
 * block computes its triangle to within a 6-row step. Without AVX-512 the
 * same driver runs a plain C inner loop (same results up to rounding).
 *
 * One product: C(i, j) = alpha * sum_k A(i, k) B(k, j) (+ C(i, j) when acc)
 * for rows i in [0, m), A(i, k) = a[i * ars + k * acs] (any strides, so A
 * or its transpose), B row-major (B(k, j) = b[k * ldb + j]), C row-major.
 * Row i sums k over [k0[i], k1[i]) and needs columns [0, nc[i]) (NULL
 * arrays: k over [0, kk), columns [0, n)). Rows are done 6 at a time with
 * the union of their ranges: the caller guarantees that A is zero wherever
 * a row's own k-range is narrower than its group's, and accepts that C(i, j)
 * is written for j up to the group's widest nc (values there are the same
 * sum over the group's k-range). */
#ifndef RB_CLUSTER_H
#define RB_CLUSTER_H

#include <stddef.h>

typedef struct {
    const float *a;
    ptrdiff_t ars, acs; /* A(i, k) = a[i * ars + k * acs] */
    const float *b;
    ptrdiff_t ldb;
    float *c;
    ptrdiff_t ldc;
    float alpha;
    int acc; /* 1: C += alpha A B; 0: C = alpha A B */
} cl_prod;

/* Rows per register block (the granularity of the per-row ranges). */
enum { CL_MR = 6 };

void cl_gemm(const cl_prod *P, int m, int n, int kk, const int *k0, const int *k1, const int *nc);

/* dst (m, d) row r = src row rows[r]; dst_t (d, ldt) column r = the same row
 * (either may be NULL). */
void cl_gather(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const int *rows, int m, int d);

/* Ask for the cache lines of rows `rows` of src (m rows of d floats). */
void cl_prefetch_rows(const float *src, const int *rows, int m, int d);

#endif
