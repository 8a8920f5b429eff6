/* rotary.c: rotary position embeddings (rotary.h). The angles are computed
 * in double once per table; the rotation itself is one multiply-add pair
 * per channel pair, an OpenMP loop over rows with a static schedule. */
#include "model/rotary.h"

#include <math.h>
#include <stdlib.h>

#include "util/common.h"

int rotary_init(rotary *r, int T, int D) {
    int P = D / 2;
    r->T = T, r->D = D;
    size_t n = (size_t)T * (P > 0 ? P : 1);
    r->cos = malloc(n * sizeof(float));
    r->sin = malloc(n * sizeof(float));
    if (!r->cos || !r->sin) {
        rotary_free(r);
        return -1;
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < P; i++) {
            double ang = (double)t * pow(ROTARY_BASE, -2.0 * i / (double)D);
            r->cos[(size_t)t * P + i] = (float)cos(ang);
            r->sin[(size_t)t * P + i] = (float)sin(ang);
        }
    return 0;
}

void rotary_free(rotary *r) {
    free(r->cos), free(r->sin);
    r->cos = r->sin = NULL;
}

void rotary_apply(const rotary *r, float *x, size_t BH, int T, int t0, int dir) {
    int D = r->D, P = D / 2;
    float sgn = dir < 0 ? -1.0f : 1.0f;
    size_t rows = BH * (size_t)T;
#pragma omp parallel for schedule(static) if (rows * D > ((size_t)1 << 15))
    for (size_t row = 0; row < rows; row++) {
        int t = t0 + (int)(row % (size_t)T);
        float *v = x + row * D;
        const float *c = r->cos + (size_t)t * P, *s = r->sin + (size_t)t * P;
        for (int i = 0; i < P; i++) {
            float a = v[2 * i], b = v[2 * i + 1], si = sgn * s[i];
            v[2 * i] = a * c[i] - b * si;
            v[2 * i + 1] = a * si + b * c[i];
        }
    }
}
