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

double rb_vexp_shift_sum(float *y, const float *x, float m, int n) {
    int i = 0;
    double total = 0.0;
    /* lane sums in double: in float a long row (softmax over 10^5 keys)
     * drifts by ~1e-6 relative, more than the exponentials' own error */
#ifdef __AVX512F__
    __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
    __m512 vm = _mm512_set1_ps(m);
    for (; i + 16 <= n; i += 16) {
        __m512 e = rb_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(y + i, e);
        acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        acc_hi = _mm512_add_pd(acc_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double l16[8];
    _mm512_storeu_pd(l16, _mm512_add_pd(acc_lo, acc_hi));
    total = ((l16[0] + l16[1]) + (l16[2] + l16[3])) + ((l16[4] + l16[5]) + (l16[6] + l16[7]));
#endif
#ifdef __AVX2__
    __m256d a_lo = _mm256_setzero_pd(), a_hi = _mm256_setzero_pd();
    __m256 vm8 = _mm256_set1_ps(m);
    for (; i + 8 <= n; i += 8) {
        __m256 e = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm8));
        _mm256_storeu_ps(y + i, e);
        a_lo = _mm256_add_pd(a_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        a_hi = _mm256_add_pd(a_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a_lo, a_hi));
    total += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
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
    if (n >= 16) {
        __m512 vm = _mm512_loadu_ps(x);
        for (i = 16; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
        m = _mm512_reduce_max_ps(vm);
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
