/* cluster.c: register-blocked small products for attention inside clusters
 * (cluster.h). */
#include "attn/cluster.h"

#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "util/common.h"

enum { CL_NC = 64 }; /* columns per register block: four 16-float vectors */

typedef struct {
    int i0, rows; /* the block's first row and how many (<= CL_MR) */
    int j0, cw;   /* its first column and width (<= CL_NC) */
    int ka, kb;   /* k range */
} cl_tile;

#ifdef __AVX512F__
/* One register block with nv vectors per row; nv is a constant after
 * inlining, so acc stays in registers (6 x 4 accumulators + 4 B vectors). */
static inline __attribute__((always_inline)) void cl_micro(const cl_prod *P, const cl_tile *t, int nv) {
    __m512 acc[CL_MR][4];
    const float *ar[CL_MR];
    __mmask16 last = (__mmask16)((1u << (t->cw - 16 * (nv - 1))) - 1u);
#pragma GCC unroll 6
    for (int r = 0; r < CL_MR; r++) {
        int i = t->i0 + (r < t->rows ? r : t->rows - 1); /* a short block repeats its last row, unstored */
        ar[r] = P->a + (ptrdiff_t)i * P->ars;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    }
    const float *b = P->b + (ptrdiff_t)t->ka * P->ldb + t->j0;
    ptrdiff_t acs = P->acs;
    for (int k = t->ka; k < t->kb; k++, b += P->ldb) {
        __m512 bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = v == nv - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < CL_MR; r++) {
            __m512 av = _mm512_set1_ps(ar[r][k * acs]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    __m512 al = _mm512_set1_ps(P->alpha);
#pragma GCC unroll 6
    for (int r = 0; r < CL_MR; r++) {
        if (r >= t->rows) break;
        float *c = P->c + (ptrdiff_t)(t->i0 + r) * P->ldc + t->j0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 mk = v == nv - 1 ? last : (__mmask16)0xffff;
            __m512 o = _mm512_mul_ps(al, acc[r][v]);
            if (P->acc) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(mk, c + 16 * v));
            _mm512_mask_storeu_ps(c + 16 * v, mk, o);
        }
    }
}

static void cl_block(const cl_prod *P, const cl_tile *t) {
    switch ((t->cw + 15) / 16) {
    case 1: cl_micro(P, t, 1); break;
    case 2: cl_micro(P, t, 2); break;
    case 3: cl_micro(P, t, 3); break;
    default: cl_micro(P, t, 4); break;
    }
}
#else
static void cl_block(const cl_prod *P, const cl_tile *t) {
    for (int r = 0; r < t->rows; r++) {
        const float *a = P->a + (ptrdiff_t)(t->i0 + r) * P->ars;
        float *c = P->c + (ptrdiff_t)(t->i0 + r) * P->ldc + t->j0, s[CL_NC];
        for (int j = 0; j < t->cw; j++) s[j] = 0.0f;
        for (int k = t->ka; k < t->kb; k++) {
            float av = a[k * P->acs];
            const float *b = P->b + (ptrdiff_t)k * P->ldb + t->j0;
            for (int j = 0; j < t->cw; j++) s[j] += av * b[j];
        }
        for (int j = 0; j < t->cw; j++) c[j] = P->alpha * s[j] + (P->acc ? c[j] : 0.0f);
    }
}
#endif

/* Column blocks outside, row blocks inside: a block of B (kk x 64 floats)
 * stays in L1 while every row block that needs it passes over it. */
void cl_gemm(const cl_prod *P, int m, int n, int kk, const int *k0, const int *k1, const int *nc) {
    for (int j0 = 0; j0 < n; j0 += CL_NC) {
        for (int i0 = 0; i0 < m; i0 += CL_MR) {
            cl_tile t = {.i0 = i0, .rows = RB_MIN(CL_MR, m - i0), .j0 = j0, .ka = kk, .kb = 0};
            int nmax = 0;
            for (int i = i0; i < i0 + t.rows; i++) {
                t.ka = RB_MIN(t.ka, k0 ? k0[i] : 0);
                t.kb = RB_MAX(t.kb, k1 ? k1[i] : kk);
                nmax = RB_MAX(nmax, nc ? nc[i] : n);
            }
            if (nmax <= j0) continue;
            if (t.kb < t.ka) t.kb = t.ka; /* nothing to sum: C = 0 (or stays) */
            t.cw = RB_MIN(CL_NC, nmax - j0);
            cl_block(P, &t);
        }
    }
}

/* dst_t (d, ldt) columns [0, m) = rows `rows` of src, transposed: AVX-512
 * gathers of 16 members at a time (a scalar loop stored one float a cycle
 * and cost a sixth of routing's time at 46-member clusters). */
static void cl_gather_t(float *dst_t, ptrdiff_t ldt, const float *src, const int *rows, int m, int d) {
    int r0 = 0;
#ifdef __AVX512F__
    int top = 0; /* 32-bit gather offsets: rows[r] * d must fit */
    for (int r = 0; r < m; r++) top = RB_MAX(top, rows[r]);
    for (; (int64_t)top * d < INT32_MAX && r0 < m; r0 += 16) {
        int cnt = RB_MIN(16, m - r0);
        if (r0 + 16 < m) cl_prefetch_rows(src, rows + r0 + 16, RB_MIN(16, m - r0 - 16), d);
        __mmask16 mk = (__mmask16)((1u << cnt) - 1u);
        __m512i idx = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mk, rows + r0), _mm512_set1_epi32(d));
        for (int j = 0; j < d; j++) {
            __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, src + j, 4);
            _mm512_mask_storeu_ps(dst_t + (ptrdiff_t)j * ldt + r0, mk, v);
        }
    }
#endif
    for (int r = r0; r < m; r++) {
        const float *s = src + (size_t)rows[r] * d;
        for (int j = 0; j < d; j++) dst_t[(ptrdiff_t)j * ldt + r] = s[j];
    }
}

void cl_prefetch_rows(const float *src, const int *rows, int m, int d) {
    for (int r = 0; r < m; r++)
        for (int j = 0; j < d; j += 16) __builtin_prefetch(src + (size_t)rows[r] * d + j, 0, 3);
}

/* The rows are scattered over the head (tokens of one cluster): their
 * cache lines are asked for CL_AHEAD rows before they are copied. */
enum { CL_AHEAD = 8 };

void cl_gather(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const int *rows, int m, int d) {
    if (dst_t) cl_prefetch_rows(src, rows, RB_MIN(m, 16), d);
    if (dst)
        for (int r = 0; r < m; r++) {
            if (r + CL_AHEAD < m) cl_prefetch_rows(src, rows + r + CL_AHEAD, 1, d);
            memcpy(dst + (size_t)r * d, src + (size_t)rows[r] * d, (size_t)d * sizeof(float));
        }
    if (dst_t) cl_gather_t(dst_t, ldt, src, rows, m, d);
}
