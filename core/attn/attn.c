/* attn.c: the backend registry and the parameter helpers shared by all
 * backends. The table itself is variants/registry.c (generated from
 * variants/registry.def), so adding a backend never touches this file. */
#include "attn/attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"

/* variants/registry.c */
extern const attn_backend *const attn_registry[];
extern const int attn_registry_count;

int attn_count(void) { return attn_registry_count; }

const attn_backend *attn_get(int i) { return (i >= 0 && i < attn_count()) ? attn_registry[i] : NULL; }

const attn_backend *attn_find(const char *name) {
    for (int i = 0; i < attn_count(); i++)
        if (strcmp(attn_registry[i]->name, name) == 0) return attn_registry[i];
    return NULL;
}

const char *attn_names(void) {
    static char buf[1024];
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < attn_count() && off < sizeof buf; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? ", " : "", attn_registry[i]->name);
    return buf;
}

void attn_params_default(attn_params *p) {
    memset(p, 0, sizeof *p);
    p->batch = 1;
    p->heads = 1;
    p->seq = 0;
    p->head_dim = 64;
    p->causal = 1;
    p->window = 0;
    p->clusters = 0;
    p->local_heads = -1;
    p->share_qk = -1;
    p->assign = ATTN_ASSIGN_TOPK;
    p->norm = ATTN_NORM_L2;
    p->decay = 0.999f;
    p->commit_weight = 0.0f;
    p->kmeans_init_iters = 3;
    p->seed = 1;
}

int attn_params_check_sizes(const attn_params *p, char *err, size_t errlen) {
    if (p->batch <= 0) return rb_fail(err, errlen, "batch must be positive (got %d)", p->batch);
    if (p->heads <= 0) return rb_fail(err, errlen, "heads must be positive (got %d)", p->heads);
    if (p->seq <= 0) return rb_fail(err, errlen, "seq must be positive (got %d)", p->seq);
    if (p->head_dim <= 0) return rb_fail(err, errlen, "head_dim must be positive (got %d)", p->head_dim);
    if (p->window < 0) return rb_fail(err, errlen, "window must not be negative (got %d)", p->window);
    if (p->clusters < 0) return rb_fail(err, errlen, "clusters must not be negative (got %d)", p->clusters);
    double elems = (double)p->batch * p->heads * p->seq * p->head_dim;
    if (elems > (double)(1ull << 40) || p->seq > (1 << 24))
        return rb_fail(err, errlen, "sizes too large (batch*heads*seq*head_dim = %.3g)", elems);
    if (!(p->decay > 0.0f && p->decay < 1.0f))
        return rb_fail(err, errlen, "decay must be in (0, 1) (got %g)", (double)p->decay);
    return 0;
}

static double mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    double kb = 0;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
        fclose(f);
    }
    if (kb > 0) return kb * 1024.0;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return (pages > 0 && psz > 0) ? (double)pages * (double)psz : 0.0;
}

int attn_memory_check(const attn_backend *be, const attn_params *p, double extra_bytes, char *err, size_t errlen) {
    double need = (double)be->act_bytes(p) + extra_bytes, avail = mem_available_bytes();
    const double gib = 1073741824.0;
    if (avail > 0 && need > avail)
        return rb_fail(err, errlen, "%s at seq %d needs %.2f GiB (%.2f GiB for the backend's activations); "
                       "this machine has %.2f GiB available", be->name, p->seq, need / gib,
                       (double)be->act_bytes(p) / gib, avail / gib);
    return 0;
}

attn *attn_make(const char *name, attn_params *p, char *err, size_t errlen) {
    const attn_backend *be = attn_find(name);
    if (!be) {
        rb_fail(err, errlen, "unknown backend '%s' (known: %s)", name, attn_names());
        return NULL;
    }
    char msg[512];
    if (attn_params_check_sizes(p, msg, sizeof msg) != 0 || be->validate(p, msg, sizeof msg) != 0) {
        rb_fail(err, errlen, "%s: %s", name, msg);
        return NULL;
    }
    if (attn_memory_check(be, p, 0.0, err, errlen) != 0) return NULL;
    attn *a = be->create(p, msg, sizeof msg);
    if (!a) {
        rb_fail(err, errlen, "%s: %s", name, msg);
        return NULL;
    }
    a->be = be; /* attn_free and callers dispatch through it */
    return a;
}

void attn_free(attn *a) {
    if (a) a->be->destroy(a);
}
