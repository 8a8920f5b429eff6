/* instance.h: what every backend's create does alike. The instance: a
 * struct whose first member is its attn, allocated zeroed with be and p set.
 * The block: for backends whose buffers are one allocation cut by a layout
 * function, attn_block_bytes is what act_bytes reports and attn_block_alloc
 * allocates exactly that, for the same thread count, so the two agree. */
#ifndef RB_ATTN_INSTANCE_H
#define RB_ATTN_INSTANCE_H

#include <stddef.h>

#include "attn/attn.h"

/* size bytes, zeroed, beginning with an attn whose be and p are set; NULL
 * and "out of memory" in err when they cannot be had. */
void *attn_instance_new(size_t size, const attn_backend *be, const attn_params *p, char *err, size_t errlen);

/* layout(inst, p, nthr, base): the bytes of the block for p and nthr
 * threads; given inst and base it also points inst's buffers into base. */
typedef size_t (*attn_layout_fn)(void *inst, const attn_params *p, int nthr, char *base);

/* The threads a block is laid out for (omp_get_max_threads()). */
int attn_block_threads(void);

/* act_bytes of a block backend: layout's bytes for attn_block_threads(). */
size_t attn_block_bytes(attn_layout_fn layout, const attn_params *p);

/* inst's block for its attn's p: laid out for attn_block_threads() threads
 * (stored in *nthr), allocated aligned and zeroed (so its pages are resident
 * before the first timed pass), its size stored in the attn's bytes. When
 * it cannot be allocated: NULL, err naming the backend and the size, and
 * inst freed (it holds nothing else yet), so create can return at once. */
char *attn_block_alloc(void *inst, attn_layout_fn layout, int *nthr, char *err, size_t errlen);

#endif
