/* fuzz_manifest.c: the JSON reader (core/util/json.c) and the manifest
 * reader of `routebench import` (npy_model_config_json in
 * core/model/model_npy.c: manifest.json's "config" object applied to a
 * configuration, then checked as import checks it). The input is the text of
 * a manifest.json. Checked: a document that parses, written back with the
 * JSON writer (strings escaped by it, numbers as their text), parses again
 * into the same tree. */
#include "fuzz.h"
#include "fuzz_config.h"

#include "model/model.h"
#include "model/model_npy.h"
#include "model/train.h"
#include "util/json.h"

static void emit(rb_jw *w, const rb_json *j) {
    switch (j->type) {
    case RB_JSON_NULL: rb_jw_null(w); break;
    case RB_JSON_BOOL: rb_jw_bool(w, j->b); break;
    case RB_JSON_NUM: rb_jw_raw(w, j->s); break;
    case RB_JSON_STR: rb_jw_str(w, j->s); break;
    case RB_JSON_ARR:
        rb_jw_arr(w);
        for (int i = 0; i < j->n; i++) emit(w, j->items[i]);
        rb_jw_arr_end(w);
        break;
    default:
        rb_jw_obj(w);
        for (int i = 0; i < j->n; i++) rb_jw_key(w, j->keys[i]), emit(w, j->items[i]);
        rb_jw_obj_end(w);
    }
}

static int depth_of(const rb_json *j) {
    int d = 0;
    for (int i = 0; (j->type == RB_JSON_ARR || j->type == RB_JSON_OBJ) && i < j->n; i++) {
        int k = depth_of(j->items[i]);
        if (k > d) d = k;
    }
    return d + (j->type == RB_JSON_ARR || j->type == RB_JSON_OBJ);
}

static int same(const rb_json *a, const rb_json *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case RB_JSON_BOOL: return a->b == b->b;
    case RB_JSON_NUM: return strcmp(a->s, b->s) == 0 && (a->num == b->num || (a->num != a->num && b->num != b->num));
    case RB_JSON_STR: return strcmp(a->s, b->s) == 0;
    case RB_JSON_ARR:
    case RB_JSON_OBJ:
        if (a->n != b->n) return 0;
        for (int i = 0; i < a->n; i++) {
            if (a->type == RB_JSON_OBJ && strcmp(a->keys[i], b->keys[i]) != 0) return 0;
            if (!same(a->items[i], b->items[i])) return 0;
        }
        return 1;
    default: return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    char err[1024];
    rb_json *j = rb_json_parse((const char *)data, size, err, sizeof err);
    if (!j) {
        FUZZ_CHECK(strncmp(err, "line ", 5) == 0);
    } else if (depth_of(j) <= RB_JW_MAX_DEPTH) {
        size_t cap = 6 * size + 64; /* an escape the writer makes is at most 3 times the reader's */
        char *out = malloc(cap);
        if (!out) abort();
        rb_jw w;
        rb_jw_init_buf(&w, out, cap);
        emit(&w, j);
        FUZZ_CHECK(!w.overflow);
        rb_json *k = rb_json_parse(out, strlen(out), err, sizeof err);
        FUZZ_CHECK(k != NULL);
        FUZZ_CHECK(same(j, k));
        rb_json_free(k);
        free(out);
    }
    rb_json_free(j);

    /* import's reading of the manifest */
    train_config *c = malloc(sizeof *c);
    if (!c) abort();
    train_config_default(c);
    if (npy_model_config_json(c, (const char *)data, size, "manifest.json", err, sizeof err) == 0 &&
        train_config_check(c, err, sizeof err) == 0) {
        fuzz_check_config_ranges(c);
        (void)model_param_sizes(c, NULL);
    }
    free(c);
    return 0;
}
