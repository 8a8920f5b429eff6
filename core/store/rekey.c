/* rekey.c: a trial's parameter JSON in today's canonical form: the fixed
 * prefix (kind, bench, runs, warmup, backend) first, then the parameters in
 * core/util/params.def order under their current names (old spellings
 * renamed), each value's text kept as written. The trial key is the hash of
 * this text, so a database made before the table was reordered or a
 * parameter renamed is re-keyed with it (schema migration 1 -> 2) and its
 * done trials keep matching the experiment file. */
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/json.h"
#include "util/params.h"

static const char *const prefix[] = {"kind", "bench", "runs", "warmup", "backend"};
#define NPREFIX ((int)(sizeof prefix / sizeof prefix[0]))

static void put_value(rb_jw *w, const rb_json *v) {
    if (v->type == RB_JSON_NUM) rb_jw_raw(w, v->s);
    else if (v->type == RB_JSON_STR) rb_jw_str(w, v->s);
    else if (v->type == RB_JSON_BOOL) rb_jw_bool(w, v->b);
    else rb_jw_null(w); /* parameters are scalars; anything else is kept as null */
}

/* Where key goes: its prefix slot, NPREFIX + its table row, or -1 (kept last). */
static int rank(const char *key) {
    for (int i = 0; i < NPREFIX; i++)
        if (strcmp(key, prefix[i]) == 0) return i;
    const rb_param *d = rb_param_find(key);
    return d ? NPREFIX + rb_param_index(d) : -1;
}

int store_rekey_json(const char *in, char *out, size_t len) {
    rb_json *j = rb_json_parse(in, strlen(in), NULL, 0);
    if (!j || j->type != RB_JSON_OBJ) {
        rb_json_free(j);
        return -1;
    }
    rb_jw w;
    rb_jw_init_buf(&w, out, len);
    rb_jw_obj(&w);
    int top = NPREFIX + rb_param_count();
    for (int r = 0; r <= top; r++) /* every rank in order, then the unknown ones (-1) as they came */
        for (int i = 0; i < j->n; i++) {
            int k = rank(j->keys[i]);
            if (k != (r < top ? r : -1)) continue;
            const rb_param *d = k >= NPREFIX ? rb_param_find(j->keys[i]) : NULL;
            rb_jw_key(&w, d ? d->name : j->keys[i]);
            put_value(&w, j->items[i]);
        }
    rb_jw_obj_end(&w);
    rb_json_free(j);
    return w.overflow ? -1 : 0;
}
