/* vexp.c: array forms of the exponential in vexp.h. */
#include "vexp.h"

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
    __m256 acc = _mm256_setzero_ps(), vm = _mm256_set1_ps(m);
    for (; i + 8 <= n; i += 8) {
        __m256 e = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int j = 0; j < 8; j++) total += lanes[j];
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
