/* registry.c: the table of every attention backend, generated from
 * registry.def (one BACKEND(x) line each). core/attn/attn.c finds backends
 * through attn_registry[] and never includes anything from variants/. */
#include "attn/attn.h"

#define BACKEND(x) extern const attn_backend attn_backend_##x;
#include "registry.def"
#undef BACKEND

const attn_backend *const attn_registry[] = {
#define BACKEND(x) &attn_backend_##x,
#include "registry.def"
#undef BACKEND
};

const int attn_registry_count = (int)(sizeof attn_registry / sizeof attn_registry[0]);
