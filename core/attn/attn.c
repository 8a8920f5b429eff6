/* attn.c: the backend registry and the parameter helpers shared by all
 * backends. The table itself is variants/registry.c (generated from
 * variants/registry.def), so adding a backend never touches this file. */
#include "attn/attn.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"
#include "util/json.h"
#include "util/params.h"

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

const char *attn_names(char *buf, size_t len) {
    size_t off = 0;
    if (len) buf[0] = 0;
    for (int i = 0; i < attn_count() && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", attn_registry[i]->name);
    return buf;
}

int attn_fail_unknown(const char *name, char *err, size_t errlen) {
    const char *cands[256] = {NULL};
    int n = 0;
    for (int i = 0; i < attn_count() && n < 256; i++) cands[n++] = attn_registry[i]->name;
    const char *sug = rb_closest(name, cands, n);
    char names[1024];
    attn_names(names, sizeof names);
    if (sug) return rb_fail(err, errlen, "unknown backend '%s' (did you mean '%s'? known: %s)", name, sug, names);
    return rb_fail(err, errlen, "unknown backend '%s' (known: %s)", name, names);
}

/* Where each params.def row lives in attn_params (NO_FIELD: not here). */
#define NO_FIELD ((size_t)-1)
#define OFF_W_A(name) offsetof(attn_params, name)
#define OFF_W_AA(name) offsetof(attn_params, name)
#define OFF_W_AT(name) offsetof(attn_params, name)
#define OFF_W_T(name) NO_FIELD
#define OFF_W_SEL(name) NO_FIELD
static const size_t field_off[] = {
#define PARAM(name, type, where, ...) OFF_##where(name),
#define ALIAS(old, name)
#include "util/params.def"
#undef PARAM
#undef ALIAS
};

void *attn_params_field(attn_params *p, const rb_param *d) {
    int i = rb_param_index(d);
    return i >= 0 && field_off[i] != NO_FIELD ? (char *)p + field_off[i] : NULL;
}

const void *attn_params_cfield(const attn_params *p, const rb_param *d) {
    return attn_params_field((attn_params *)p, d);
}

int attn_param_applies(const rb_param *d, unsigned uses) { return d->uses == 0 || (d->uses & uses) != 0; }

void attn_params_default(attn_params *p) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        void *f = attn_params_field(p, d);
        rb_pval v;
        if (f && rb_param_parse_default(d, d->adef, &v) == 0) rb_param_put(d, f, 0, &v);
    }
}

int attn_params_set(attn_params *p, const char *key, const char *text, char *err, size_t errlen) {
    const rb_param *d = rb_param_find(key);
    void *f = d ? attn_params_field(p, d) : NULL;
    if (!f) return rb_fail(err, errlen, "%s: not a parameter of one attention layer", key);
    rb_pval v;
    char msg[300];
    if (rb_param_parse(d, text, &v, msg, sizeof msg) != 0) return rb_fail(err, errlen, "%s: %s", d->name, msg);
    rb_param_put(d, f, 0, &v);
    return 0;
}

void attn_params_json(struct rb_jw *w, const attn_params *p, unsigned uses, int fmt) {
    attn_params def;
    attn_params_default(&def);
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const void *f = attn_params_cfield(p, d);
        if (!f || (d->flags & PF_NOSWEEP) || !attn_param_applies(d, uses)) continue;
        char text[64], dtext[64];
        rb_param_format(d, f, fmt, text, sizeof text);
        rb_param_format(d, attn_params_cfield(&def, d), fmt, dtext, sizeof dtext);
        if (fmt == RB_FMT_KEY && (d->flags & PF_NEWKEY) && strcmp(text, dtext) == 0) continue;
        rb_jw_key(w, d->name);
        if (d->type == PT_ENUM) rb_jw_str(w, text);
        else if (d->type == PT_BOOL && fmt == RB_FMT_TEXT && *(const int *)f >= 0) rb_jw_bool(w, *(const int *)f);
        else if (d->type == PT_BOOL || d->type == PT_INT) rb_jw_int(w, *(const int *)f);
        else rb_jw_raw(w, text);
    }
}

/* Every numeric field within its range (or at its auto value), and sizes
 * that are not absurd; 0, or -1 with e naming the parameter. */
static int check_sizes(const attn_params *p, rb_err *e) {
    if (p->seq <= 0) return rb_err_set(e, RB_EINVAL, "seq", "seq must be positive (got %d)", p->seq);
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const void *f = attn_params_cfield(p, d);
        if (!f || d->type == PT_U64 || d->type == PT_ENUM || d->type == PT_STR) continue;
        double x = d->type == PT_FLOAT ? (double)*(const float *)f : d->type == PT_DOUBLE ? *(const double *)f
                                                                                          : (double)*(const int *)f;
        if ((d->flags & PF_AUTO) && x == (double)d->autoval) continue;
        char text[48], msg[200];
        rb_param_format(d, f, RB_FMT_TEXT, text, sizeof text);
        rb_pval v;
        if (rb_param_parse(d, text, &v, msg, sizeof msg) != 0)
            return rb_err_set(e, RB_EINVAL, d->name, "%s: %s", d->name, msg);
    }
    double elems = (double)p->batch * p->heads * p->seq * p->head_dim;
    if (elems > (double)(1ull << 40))
        return rb_err_set(e, RB_EINVAL, "seq", "sizes too large (batch*heads*seq*head_dim = %.3g)", elems);
    return 0;
}

int attn_params_check_sizes(const attn_params *p, char *err, size_t errlen) {
    rb_err e;
    if (check_sizes(p, &e) == 0) return 0;
    return rb_fail(err, errlen, "%s", e.msg);
}

int attn_validate(const attn_backend *be, attn_params *p, rb_err *e) {
    rb_err_clear(e);
    if (check_sizes(p, e) != 0) return -1;
    if (be->validate(p, e) != 0) {
        if (e->code == RB_OK) e->code = RB_EINVAL;
        return -1;
    }
    return 0;
}

int attn_validate_msg(const attn_backend *be, attn_params *p, char *err, size_t errlen) {
    rb_err e;
    if (attn_validate(be, p, &e) == 0) return 0;
    return rb_fail(err, errlen, "%s", e.msg);
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
        attn_fail_unknown(name, err, errlen);
        return NULL;
    }
    char msg[512];
    if (attn_validate_msg(be, p, msg, sizeof msg) != 0) {
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

int attn_head_groups(const attn_backend *be, const attn_params *p, attn_head_group *out, int max) {
    if (be->head_groups) return be->head_groups(p, out, max);
    if (max > 0) out[0] = (attn_head_group){be, 0, p->heads, *p};
    return 1;
}

const char *attn_describe_heads(const attn_backend *be, const attn_params *p, char *buf, size_t len) {
    attn_head_group g[16];
    int n = attn_head_groups(be, p, g, 16);
    size_t off = 0;
    if (len) buf[0] = 0;
    for (int i = 0; i < n && i < 16 && off < len; i++) {
        const attn_head_group *x = &g[i];
        off += (size_t)snprintf(buf + off, len - off, "%s%s heads %d-%d", i ? ", " : "", x->be->name, x->first,
                                x->first + x->heads - 1);
        if (off < len && (x->be->uses & ATTN_USES_CLUSTERS))
            off += (size_t)snprintf(buf + off, len - off, " (clusters %d, window %d)", x->p.clusters, x->p.window);
        else if (off < len && (x->be->uses & ATTN_USES_WINDOW))
            off += (size_t)snprintf(buf + off, len - off, " (window %d)", x->p.window);
    }
    return buf;
}
