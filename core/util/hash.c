/* hash.c: see hash.h. */
#include "util/hash.h"

#include <stdio.h>
#include <string.h>

uint64_t rb_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

void rb_key_hex(char out[17], const char *json) {
    snprintf(out, 17, "%016llx", (unsigned long long)rb_fnv1a(RB_KEY_BASIS, json, strlen(json)));
}
