/* vexp.h: a vectorised expf. glibc's scalar expf made softmax half of
 * attention's time on the calibration machine; this Cephes-style polynomial
 * (range reduction by ln 2, degree-5 polynomial, exponent by integer add) is
 * within about 2 ulp over the float range and runs eight lanes at once with
 * AVX2, sixteen with AVX-512. Inputs below -87.3 (including -INFINITY, the mask value) give exactly
 * 0; inputs above 88.7 give +INFINITY. The scalar rb_expf uses the same
 * polynomial, so a loop's vector body and its scalar tail agree, and CPUs
 * without AVX2 get the same numbers. */
#ifndef RB_VEXP_H
#define RB_VEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define RB_EXP_LO (-87.33654f)
#define RB_EXP_HI (88.72283f)

static inline float rb_expf(float x) {
    if (!(x >= RB_EXP_LO)) return (x != x) ? x : 0.0f; /* NaN stays NaN */
    if (x > RB_EXP_HI) return INFINITY;
    /* fmaf, in the same order as the vector code's fused multiply-adds, so
     * both give the same bits (plain a * b + c differs in about a quarter of
     * inputs by an ulp); with -march=native on an FMA CPU it is one instruction */
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float y = 1.9875691500e-4f;
    y = fmaf(y, r, 1.3981999507e-3f);
    y = fmaf(y, r, 8.3334519073e-3f);
    y = fmaf(y, r, 4.1665795894e-2f);
    y = fmaf(y, r, 1.6666665459e-1f);
    y = fmaf(y, r, 5.0000001201e-1f);
    y = fmaf(y * r, r, r + 1.0f);
    int32_t e = (int32_t)n;
    /* 2^n may be subnormal near the low end: split into two factors */
    int32_t e1 = e >> 1, e2 = e - e1; /* floor, as the vector code's srai */
    uint32_t b1 = (uint32_t)(e1 + 127) << 23, b2 = (uint32_t)(e2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    return y * s1 * s2;
}

#ifdef __AVX2__
static inline __m256 rb_exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(RB_EXP_LO), hi = _mm256_set1_ps(RB_EXP_HI);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_NGE_UQ); /* x < lo or NaN */
    __m256 isnan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(_mm256_mul_ps(y, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_cvtps_epi32(n);
    __m256i e1 = _mm256_srai_epi32(e, 1), e2 = _mm256_sub_epi32(e, e1);
    __m256i c127 = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e1, c127), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e2, c127), 23));
    y = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
    y = _mm256_blendv_ps(y, x, isnan);
    return y;
}
#endif

#ifdef __AVX512F__
/* Sixteen lanes of the same polynomial, operation for operation as
 * rb_exp256 and rb_expf, so all three give the same bits. */
static inline __m512 rb_exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(RB_EXP_LO), hi = _mm512_set1_ps(RB_EXP_HI);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_NGE_UQ); /* x < lo or NaN */
    __mmask16 isnan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(_mm512_mul_ps(y, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_cvtps_epi32(n);
    __m512i e1 = _mm512_srai_epi32(e, 1), e2 = _mm512_sub_epi32(e, e1);
    __m512i c127 = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e1, c127), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e2, c127), 23));
    y = _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
    y = _mm512_mask_blend_ps(over, y, _mm512_set1_ps(INFINITY));
    y = _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
    y = _mm512_mask_blend_ps(isnan, y, x);
    return y;
}
#endif

/* y[i] = exp(x[i]); y may alias x. */
void rb_vexp(float *y, const float *x, int n);

/* y[i] = exp(x[i] - m) (the difference taken in float); returns the sum of
 * the y[i] accumulated in double (per lane, then across lanes in a fixed
 * order). y may alias x. */
double rb_vexp_shift_sum(float *y, const float *x, float m, int n);

/* max over x[0..n), -INFINITY for n == 0. */
float rb_vmax(const float *x, int n);

#endif
