/* hash.h: the one hash of the project, 64-bit FNV-1a: checkpoint checksums,
 * the configuration hash, corpus fingerprints and trial keys all use it. */
#ifndef RB_HASH_H
#define RB_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a's own offset basis. */
#define RB_FNV_BASIS 0xcbf29ce484222325ull
/* The offset basis trial keys were first computed with: FNV's basis
 * (14695981039346656037) written a digit short. Kept, because every stored
 * trial key depends on it; the multiply is FNV-1a's. */
#define RB_KEY_BASIS 1469598103934665603ull

/* Continue hash h over n bytes at p. */
uint64_t rb_fnv1a(uint64_t h, const void *p, size_t n);

/* A trial key: rb_fnv1a(RB_KEY_BASIS, ...) of the canonical parameter JSON,
 * as 16 lower-case hex digits. */
void rb_key_hex(char out[17], const char *json);

#endif
