/* vexp.c: array forms of the exponential in vexp.h: sixteen lanes at a time
 * with AVX-512, eight with AVX2, the scalar polynomial for the tail (all give
 * the same bits for each element). */
#include "util/vexp.h"

void rb_vexp(float *y, const float *x, int n) {
    int i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, rb_exp512(_mm512_loadu_ps(x + i)));
#endif
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, rb_exp256(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) y[i] = rb_expf(x[i]);
}

/* The lane sums of rb_vexp_shift_sum, added in a fixed pairwise order. */
static inline double lanes4(const double *l) { return (l[0] + l[1]) + (l[2] + l[3]); }
static inline double lanes8(const double *l) { return lanes4(l) + lanes4(l + 4); }

/* The low and high halves of a vector of W bits, as floats. */
#define RB_LO256(e) _mm256_castps256_ps128(e)
#define RB_HI256(e) _mm256_extractf128_ps(e, 1)
#define RB_LO512(e) _mm512_castps512_ps256(e)
#define RB_HI512(e) _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))

/* AVX-512 finishes a row in one masked vector (the lanes past n are 0 in
 * the sums and not stored): a short row (attention inside a 46-member
 * cluster) otherwise spent more in the scalar tail than in its vectors. */
#define RB_SHIFT_SUM_TAIL256 ((void)0)
#define RB_SHIFT_SUM_TAIL512                                                                                 \
    do {                                                                                                     \
        if (i < n) {                                                                                         \
            __mmask16 mk = (__mmask16)((1u << (n - i)) - 1u);                                                \
            __m512 e = rb_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vm));                       \
            e = _mm512_maskz_mov_ps(mk, e);                                                                  \
            _mm512_mask_storeu_ps(y + i, mk, e);                                                             \
            acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(RB_LO512(e)));                                     \
            acc_hi = _mm512_add_pd(acc_hi, _mm512_cvtps_pd(RB_HI512(e)));                                     \
            i = n;                                                                                           \
        }                                                                                                    \
    } while (0)

/* rb_vexp_shift_sum's vector loop for lane width W (256 or 512 bits, L
 * floats): exp(x - m) into y and into two double accumulators (the halves
 * of each vector), whose lanes are then added into total. */
#define RB_SHIFT_SUM_LOOP(W, L)                                                                              \
    do {                                                                                                     \
        __m##W##d acc_lo = _mm##W##_setzero_pd(), acc_hi = _mm##W##_setzero_pd();                            \
        __m##W vm = _mm##W##_set1_ps(m);                                                                     \
        for (; i + (L) <= n; i += (L)) {                                                                     \
            __m##W e = rb_exp##W(_mm##W##_sub_ps(_mm##W##_loadu_ps(x + i), vm));                             \
            _mm##W##_storeu_ps(y + i, e);                                                                    \
            acc_lo = _mm##W##_add_pd(acc_lo, _mm##W##_cvtps_pd(RB_LO##W(e)));                                 \
            acc_hi = _mm##W##_add_pd(acc_hi, _mm##W##_cvtps_pd(RB_HI##W(e)));                                 \
        }                                                                                                    \
        RB_SHIFT_SUM_TAIL##W;                                                                                \
        double lanes[(L) / 2];                                                                               \
        _mm##W##_storeu_pd(lanes, _mm##W##_add_pd(acc_lo, acc_hi));                                          \
        total += (L) == 16 ? lanes8(lanes) : lanes4(lanes);                                                  \
    } while (0)

double rb_vexp_shift_sum(float *y, const float *x, float m, int n) {
    int i = 0;
    double total = 0.0;
    /* lane sums in double: in float a long row (softmax over 10^5 keys)
     * drifts by ~1e-6 relative, more than the exponentials' own error */
#ifdef __AVX512F__
    RB_SHIFT_SUM_LOOP(512, 16);
#endif
#ifdef __AVX2__
    RB_SHIFT_SUM_LOOP(256, 8);
#endif
    for (; i < n; i++) {
        y[i] = rb_expf(x[i] - m);
        total += y[i];
    }
    return total;
}

float rb_vmax(const float *x, int n) {
    float m = -INFINITY;
    int i = 0;
#ifdef __AVX512F__
    if (n > 0) { /* the last vector masked, its missing lanes -inf */
        __m512 vm = _mm512_set1_ps(-INFINITY);
        for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
        if (i < n) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, (__mmask16)((1u << (n - i)) - 1u), x + i));
        m = _mm512_reduce_max_ps(vm);
        i = n;
    }
#endif
#ifdef __AVX2__
    if (n - i >= 8) {
        __m256 vm = _mm256_loadu_ps(x + i);
        for (i += 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        float lanes[8];
        _mm256_storeu_ps(lanes, vm);
        for (int j = 0; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
