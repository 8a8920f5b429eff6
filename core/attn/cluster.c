/* cluster.c: register-blocked small products for attention inside clusters
 * (cluster.h). */
#include "attn/cluster.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "util/common.h"
#include "util/vexp.h"

enum { CL_NC = 64 }; /* columns per register block: four 16-float vectors */

typedef struct {
    int i0, rows; /* the block's first row and how many (<= CL_MR) */
    int j0, cw;   /* its first column and width (<= CL_NC) */
    int ka, kb;   /* k range */
} cl_tile;

#ifdef __AVX512F__
/* The products of one register block into acc (nv vectors per row; nv is a
 * constant after inlining, so acc stays in registers: 6 x 4 accumulators +
 * 4 B vectors). Rows past t->rows repeat the last row and are not stored. */
static inline __attribute__((always_inline)) void cl_acc(__m512 acc[CL_MR][4], const cl_prod *P, const cl_tile *t,
                                                          int nv) {
    const float *ar[CL_MR];
    __mmask16 last = (__mmask16)((1u << (t->cw - 16 * (nv - 1))) - 1u);
#pragma GCC unroll 6
    for (int r = 0; r < CL_MR; r++) {
        int i = t->i0 + (r < t->rows ? r : t->rows - 1);
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
}

static inline __attribute__((always_inline)) void cl_micro(const cl_prod *P, const cl_tile *t, int nv) {
    __m512 acc[CL_MR][4];
    cl_acc(acc, P, t, nv);
    __mmask16 last = (__mmask16)((1u << (t->cw - 16 * (nv - 1))) - 1u);
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

/* lanes of columns [16 v, 16 v + 16) below `below` */
static inline __mmask16 cl_lanes_below(int below, int v) {
    int k = below - 16 * v;
    return k <= 0 ? 0 : k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1u);
}

/* The softmax of one block's rows from their scores in registers (see
 * cl_softmax_scores): the same operations, in the same order, as
 * rb_vmax and rb_vexp_shift_sum over a stored row, so the results are
 * those of the two-step path bit for bit; with the scores never stored and
 * six rows' chains of latencies side by side. nv vectors computed, nvs
 * stored (the tile's width). */
static inline __attribute__((always_inline)) void cl_softmax_micro(const cl_prod *P, const cl_tile *t,
                                                                    const int *L, int diag, float *lse, int nc,
                                                                    int nv, int nvs) {
    __m512 acc[CL_MR][4];
    cl_acc(acc, P, t, nv);
    __m512 al = _mm512_set1_ps(P->alpha), ninf = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 6
    for (int r = 0; r < CL_MR; r++) {
        if (r >= t->rows) break;
        int i = t->i0 + r, Lr = L[i];
        float *c = P->c + (ptrdiff_t)i * P->ldc;
        if (Lr == 0) {
#pragma GCC unroll 4
            for (int v = 0; v < nvs; v++) _mm512_mask_storeu_ps(c + 16 * v, cl_lanes_below(nc, v), _mm512_setzero_ps());
            if (lse) lse[i] = INFINITY;
            continue;
        }
        int self = diag >= 0 && diag + i < Lr && Lr > 1 ? diag + i : -1;
        __m512 sv[4], vm = ninf;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 ok = cl_lanes_below(Lr, v);
            if (self >= 16 * v && self < 16 * v + 16) ok &= (__mmask16) ~(1u << (self - 16 * v));
            sv[v] = _mm512_mask_blend_ps(ok, ninf, _mm512_mul_ps(al, acc[r][v]));
            vm = _mm512_max_ps(vm, sv[v]);
        }
        float m = _mm512_reduce_max_ps(vm);
        __m512 mv = _mm512_set1_ps(m);
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            if (16 * v >= Lr) break;
            sv[v] = _mm512_maskz_mov_ps(cl_lanes_below(Lr, v), rb_exp512(_mm512_sub_ps(sv[v], mv)));
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(sv[v])));
            __m256 upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sv[v]), 1));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(upper));
        }
        double lanes[8];
        _mm512_storeu_pd(lanes, _mm512_add_pd(lo, hi));
        double l = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        __m512 inv = _mm512_set1_ps((float)(1.0 / l));
#pragma GCC unroll 4
        for (int v = 0; v < nvs; v++) {
            __m512 o = v < nv && 16 * v < Lr ? _mm512_mul_ps(sv[v], inv) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(c + 16 * v, cl_lanes_below(nc, v), o);
        }
        if (lse) lse[i] = m + (float)log(l);
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

int cl_softmax_scores(const cl_prod *P, int m, int nc, int kk, const int *L, int diag, float *lse) {
#ifdef __AVX512F__
    if (nc > CL_NC || nc <= 0) return -1;
    int nvs = (nc + 15) / 16;
    for (int i0 = 0; i0 < m; i0 += CL_MR) {
        cl_tile t = {.i0 = i0, .rows = RB_MIN(CL_MR, m - i0), .j0 = 0, .ka = 0, .kb = kk};
        int w = 0;
        for (int i = i0; i < i0 + t.rows; i++) w = RB_MAX(w, L[i]);
        t.cw = RB_MAX(w, 1);
        switch ((t.cw + 15) / 16) {
        case 1: cl_softmax_micro(P, &t, L, diag, lse, nc, 1, nvs); break;
        case 2: cl_softmax_micro(P, &t, L, diag, lse, nc, 2, nvs); break;
        case 3: cl_softmax_micro(P, &t, L, diag, lse, nc, 3, nvs); break;
        default: cl_softmax_micro(P, &t, L, diag, lse, nc, 4, nvs); break;
        }
    }
    return 0;
#else
    (void)P, (void)m, (void)nc, (void)kk, (void)L, (void)diag, (void)lse;
    return -1;
#endif
}

void cl_prefetch_rows(const float *src, const int *rows, int m, int d) {
    for (int r = 0; r < m; r++)
        for (int j = 0; j < d; j += 16) __builtin_prefetch(src + (size_t)rows[r] * d + j, 0, 3);
}

/* The rows are scattered over the head (tokens of one cluster): their
 * cache lines are asked for CL_AHEAD rows before they are copied. */
enum { CL_AHEAD = 8 };

void cl_gather(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const int *rows, int m, int d) {
    cl_prefetch_rows(src, rows, RB_MIN(m, CL_AHEAD), d);
    for (int r = 0; r < m; r++) {
        if (r + CL_AHEAD < m) cl_prefetch_rows(src, rows + r + CL_AHEAD, 1, d);
        memcpy(dst + (size_t)r * d, src + (size_t)rows[r] * d, (size_t)d * sizeof(float));
    }
    /* the columns from the rows just copied, in L1 (gathering them from the
     * head's scattered rows with AVX-512 gathers took twice as long) */
    if (dst_t) cl_transpose(dst_t, ldt, dst, m, d, NULL, NULL);
}

#ifdef __AVX512F__
/* r[0..16) = the transpose of r (16 x 16 floats): unpack pairs of rows,
 * then gather four-float and 128-bit pieces (4 x 16 shuffles). */
static inline void cl_tr16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    /* r[4 g + k] lane L: rows 4g..4g+3 of column k + 4 L */
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
        t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xDD);
        r[k + 4] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
        r[k + 12] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xDD);
    }
}
#endif

void cl_transpose(float *dst_t, ptrdiff_t ldt, const float *src, int m, int d, const float *scale, const int *rows) {
    int r0 = 0;
#ifdef __AVX512F__
    for (; r0 < m; r0 += 16) {
        int cnt = RB_MIN(16, m - r0);
        __mmask16 mk = (__mmask16)((1u << cnt) - 1u);
        __m512 sc = scale ? _mm512_mask_i32gather_ps(_mm512_set1_ps(1.0f), mk,
                                                      _mm512_maskz_loadu_epi32(mk, rows + r0), scale, 4)
                          : _mm512_set1_ps(1.0f);
        for (int j0 = 0; j0 < d; j0 += 16) {
            int cw = RB_MIN(16, d - j0);
            __mmask16 cm = (__mmask16)((1u << cw) - 1u);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = i < cnt ? _mm512_maskz_loadu_ps(cm, src + (size_t)(r0 + i) * d + j0) : _mm512_setzero_ps();
            cl_tr16(r);
            for (int j = 0; j < cw; j++)
                _mm512_mask_storeu_ps(dst_t + (ptrdiff_t)(j0 + j) * ldt + r0, mk, _mm512_mul_ps(r[j], sc));
        }
    }
#endif
    for (int r = r0; r < m; r++) {
        float sc = scale ? scale[rows[r]] : 1.0f;
        for (int j = 0; j < d; j++) dst_t[(ptrdiff_t)j * ldt + r] = src[(size_t)r * d + j] * sc;
    }
}

void cl_scale_rows(float *dst, float *dst_t, ptrdiff_t ldt, const float *src, const float *scale, const int *rows,
                   int m, int d) {
    if (dst)
        for (int r = 0; r < m; r++) {
            float sc = scale[rows[r]];
            const float *s = src + (size_t)r * d;
            float *o = dst + (size_t)r * d;
            for (int j = 0; j < d; j++) o[j] = s[j] * sc;
        }
    if (dst_t) cl_transpose(dst_t, ldt, src, m, d, scale, rows);
}
