/* instance.c: see instance.h. */
#include "attn/instance.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

void *attn_instance_new(size_t size, const attn_backend *be, const attn_params *p, char *err, size_t errlen) {
    attn *a = calloc(1, size);
    if (!a) {
        rb_fail(err, errlen, "out of memory");
        return NULL;
    }
    a->be = be;
    a->p = *p;
    return a;
}

int attn_block_threads(void) { return omp_get_max_threads(); }

size_t attn_block_bytes(attn_layout_fn layout, const attn_params *p) {
    return layout(NULL, p, attn_block_threads(), NULL);
}

char *attn_block_alloc(void *inst, attn_layout_fn layout, int *nthr, char *err, size_t errlen) {
    attn *a = inst;
    *nthr = attn_block_threads();
    size_t bytes = layout(NULL, &a->p, *nthr, NULL);
    char *mem = rb_aligned_alloc(bytes);
    if (!mem) {
        rb_fail(err, errlen, "out of memory: %s needs %.1f MiB", a->be->name, (double)bytes / (1 << 20));
        free(inst);
        return NULL;
    }
    memset(mem, 0, bytes);
    layout(inst, &a->p, *nthr, mem);
    a->bytes = bytes;
    return mem;
}
