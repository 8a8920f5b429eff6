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

/* Scores and their softmax in one pass, for a block at most 64 columns
 * wide: row i of C (columns [0, nc), nc <= 64) = the softmax over columns
 * [0, L[i]) of alpha A B (kk terms), leaving out column diag + i when diag
 * >= 0 and it is not the row's only column; every other column 0, and a row
 * with L[i] == 0 all 0. lse (when not NULL): lse[i] = the row's
 * log-sum-exp, INFINITY for an empty row. The results are those of cl_gemm
 * followed by rb_vmax and rb_vexp_shift_sum per row, bit for bit. Returns
 * -1 without AVX-512 or for nc > 64: the caller then takes those two steps. */
int cl_softmax_scores(const cl_prod *P, int m, int nc, int kk, const int *L, int diag, float *lse);

/* dst (m, d) row r = src row rows[r]; dst_t (d, ldt), when not NULL, the
 * transpose of dst (column r = the same row). */
void cl_gather(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const int *rows, int m, int d);

/* The same for a block already gathered: dst (m, d) row r = src row r (src
 * contiguous, m x d) times scale[rows[r]], dst_t (d, ldt) its transpose
 * (either may be NULL). Routing's shared keys are its queries' rows times
 * their L2 normaliser: made from the gathered queries in L1, they need no
 * second gather from the head's rows. */
void cl_scale_rows(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const float *scale, const int *rows,
                   int m, int d);

/* dst_t (d, ldt) columns [0, m) = src (m, d, contiguous) transposed, row r
 * times scale[rows[r]] when scale is not NULL (16 x 16 blocks transposed in
 * registers with AVX-512). */
void cl_transpose(float *dst_t, ptrdiff_t ldt, const float *src, int m, int d, const float *scale, const int *rows);

/* Ask for the cache lines of rows `rows` of src (m rows of d floats). */
void cl_prefetch_rows(const float *src, const int *rows, int m, int d);

#endif
