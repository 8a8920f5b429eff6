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

/* rb_exp256 (eight lanes, AVX2) and rb_exp512 (sixteen, AVX-512) are one
 * body, written once below for lane width W (256 or 512) so that they stay
 * operation for operation the polynomial of rb_expf and all three give the
 * same bits. What differs between the widths is named per width: the mask
 * type (a vector for AVX2, a bit mask for AVX-512), a comparison giving a
 * mask, a blend taking b where the mask is set, and round to nearest. */
#define RB_VMASK256 __m256
#define RB_VCMP256(a, b, pred) _mm256_cmp_ps(a, b, pred)
#define RB_VBLEND256(m, a, b) _mm256_blendv_ps(a, b, m)
#define RB_VROUND256(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define RB_VMASK512 __mmask16
#define RB_VCMP512(a, b, pred) _mm512_cmp_ps_mask(a, b, pred)
#define RB_VBLEND512(m, a, b) _mm512_mask_blend_ps(m, a, b)
#define RB_VROUND512(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

#define RB_EXP_VEC(W)                                                                                        \
    static inline __m##W rb_exp##W(__m##W x) {                                                               \
        const __m##W lo = _mm##W##_set1_ps(RB_EXP_LO), hi = _mm##W##_set1_ps(RB_EXP_HI);                     \
        RB_VMASK##W under = RB_VCMP##W(x, lo, _CMP_NGE_UQ); /* x < lo or NaN */                              \
        RB_VMASK##W isnan = RB_VCMP##W(x, x, _CMP_UNORD_Q);                                                  \
        RB_VMASK##W over = RB_VCMP##W(x, hi, _CMP_GT_OQ);                                                    \
        __m##W xc = _mm##W##_min_ps(_mm##W##_max_ps(x, lo), hi);                                             \
        __m##W n = RB_VROUND##W(_mm##W##_mul_ps(xc, _mm##W##_set1_ps(1.44269504088896341f)));                \
        __m##W r = _mm##W##_fnmadd_ps(n, _mm##W##_set1_ps(0.693359375f), xc);                               \
        r = _mm##W##_fnmadd_ps(n, _mm##W##_set1_ps(-2.12194440e-4f), r);                                     \
        __m##W y = _mm##W##_set1_ps(1.9875691500e-4f);                                                       \
        y = _mm##W##_fmadd_ps(y, r, _mm##W##_set1_ps(1.3981999507e-3f));                                     \
        y = _mm##W##_fmadd_ps(y, r, _mm##W##_set1_ps(8.3334519073e-3f));                                     \
        y = _mm##W##_fmadd_ps(y, r, _mm##W##_set1_ps(4.1665795894e-2f));                                     \
        y = _mm##W##_fmadd_ps(y, r, _mm##W##_set1_ps(1.6666665459e-1f));                                     \
        y = _mm##W##_fmadd_ps(y, r, _mm##W##_set1_ps(5.0000001201e-1f));                                     \
        y = _mm##W##_fmadd_ps(_mm##W##_mul_ps(y, r), r, _mm##W##_add_ps(r, _mm##W##_set1_ps(1.0f)));          \
        __m##W##i e = _mm##W##_cvtps_epi32(n);                                                               \
        __m##W##i e1 = _mm##W##_srai_epi32(e, 1), e2 = _mm##W##_sub_epi32(e, e1);                            \
        __m##W##i c127 = _mm##W##_set1_epi32(127);                                                           \
        __m##W s1 = _mm##W##_castsi##W##_ps(_mm##W##_slli_epi32(_mm##W##_add_epi32(e1, c127), 23));           \
        __m##W s2 = _mm##W##_castsi##W##_ps(_mm##W##_slli_epi32(_mm##W##_add_epi32(e2, c127), 23));           \
        y = _mm##W##_mul_ps(_mm##W##_mul_ps(y, s1), s2);                                                     \
        y = RB_VBLEND##W(over, y, _mm##W##_set1_ps(INFINITY));                                               \
        y = RB_VBLEND##W(under, y, _mm##W##_setzero_ps());                                                   \
        return RB_VBLEND##W(isnan, y, x);                                                                    \
    }

#ifdef __AVX2__
RB_EXP_VEC(256)
#endif
#ifdef __AVX512F__
RB_EXP_VEC(512)
#endif

/* One row of attention's softmax backward, in place: s[j] = exp(s[j] - lse)
 * (the probability) and dp[j] = s[j] * (dp[j] - dd) (the score's gradient)
 * for the nv visible keys, both 0 for keys nv to nk (masked). */
static inline void rb_softmax_bwd_row(float *s, float *dp, int nv, int nk, float lse, float dd) {
    int j = 0;
#ifdef __AVX2__
    __m256 vl = _mm256_set1_ps(lse), vd = _mm256_set1_ps(dd);
    for (; j + 8 <= nv; j += 8) {
        __m256 pj = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vl));
        _mm256_storeu_ps(s + j, pj);
        _mm256_storeu_ps(dp + j, _mm256_mul_ps(pj, _mm256_sub_ps(_mm256_loadu_ps(dp + j), vd)));
    }
#endif
    for (; j < nv; j++) {
        float pj = rb_expf(s[j] - lse);
        s[j] = pj;
        dp[j] = pj * (dp[j] - dd);
    }
    for (; j < nk; j++) s[j] = dp[j] = 0.0f;
}

/* y[i] = exp(x[i]); y may alias x. */
void rb_vexp(float *y, const float *x, int n);

/* y[i] = exp(x[i] - m) (the difference taken in float); returns the sum of
 * the y[i] accumulated in double (per lane, then across lanes in a fixed
 * order). y may alias x. */
double rb_vexp_shift_sum(float *y, const float *x, float m, int n);

/* max over x[0..n), -INFINITY for n == 0. */
float rb_vmax(const float *x, int n);

#endif
