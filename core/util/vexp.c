/* vexp.c: array forms of the exponential in vexp.h. */
#include "util/vexp.h"

void rb_vexp(float *y, const float *x, int n) {
    int i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, rb_exp256(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) y[i] = rb_expf(x[i]);
}

double rb_vexp_shift_sum(float *y, const float *x, float m, int n) {
    int i = 0;
    double total = 0.0;
#ifdef __AVX2__
    /* lane sums in double: in float a long row (softmax over 10^5 keys)
     * drifts by ~1e-6 relative, more than the exponentials' own error */
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
    __m256 vm = _mm256_set1_ps(m);
    for (; i + 8 <= n; i += 8) {
        __m256 e = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(acc_lo, acc_hi));
    total = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
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
#ifdef __AVX2__
    if (n >= 8) {
        __m256 vm = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        float lanes[8];
        _mm256_storeu_ps(lanes, vm);
        for (int j = 0; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
