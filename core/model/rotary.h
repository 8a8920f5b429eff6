/* rotary.h: rotary position embeddings (Su et al., RoFormer; the positions
 * of lucidrains' routing-transformer): each head vector's channel pairs
 * (2i, 2i+1) are rotated by the angle t * base^(-2i/D) at position t, so
 * q_t . k_s depends on t and s only through t - s. Applied to queries and
 * keys before any attention backend, routing included (the clustering sees
 * the rotated vectors). A rotation is orthogonal: the backward pass rotates
 * the gradients by the inverse angle. */
#ifndef RB_ROTARY_H
#define RB_ROTARY_H

#include <stddef.h>

#define ROTARY_BASE 10000.0

typedef struct {
    int T, D;          /* positions 0..T-1, head dimension (pairs: D/2; an odd last channel is left alone) */
    float *cos, *sin;  /* (T, D/2) */
} rotary;

/* Tables for T positions of head dimension D; 0, or -1 when out of memory. */
int rotary_init(rotary *r, int T, int D);
void rotary_free(rotary *r);

/* Rotate x, rows (BH, T, D) in place, row t of every (b, h) by position
 * t0 + t (t0 + T <= r->T). dir = +1: the forward rotation; dir = -1: its
 * inverse (the transpose), which is the backward pass of dir = +1. */
void rotary_apply(const rotary *r, float *x, size_t BH, int T, int t0, int dir);

#endif
