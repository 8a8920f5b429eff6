/* overrides.c: `routebench run FILE --set KEY=VALUE`: the file's tree edited
 * before it is read, so an override goes through exactly the checks a line
 * of the file would (hydra's overrides, for YAML experiment files):
 *   KEY=VALUE or params.KEY=VALUE   a fixed parameter (replacing the file's
 *                                   value or sweep axis of KEY)
 *   sweep.KEY=[V1, V2]              an axis (replacing the file's KEY)
 *   timing.runs=N, timing.warmup=N  the bench timing
 *   repeat=N, seed=S, name=..., description=...   top-level keys
 * VALUE is read as YAML (flow style), so [1024, 2048] is a list. */
#include <stdio.h>
#include <string.h>

#include "harness/exp_internal.h"
#include "util/common.h"

static const char *const top_scalars[] = {"name", "description", "kind", "bench", "repeat", "seed"};

/* Give every node of n line -(idx+1): its problems are the override's. */
static void mark(ynode *n, int idx) {
    n->line = -(idx + 1), n->col = 0;
    for (int i = 0; i < n->n; i++) mark(n->kids[i], idx);
}

/* The mapping under key in root, made when missing (then it is override
 * idx's: a problem with it, such as timing: in a train experiment, names the
 * --set rather than no place at all). */
static ynode *child_map(ynode *root, const char *key, int idx) {
    int i = yt_map_find(root, key);
    if (i >= 0 && root->kids[i + 1]->type == Y_MAP) return root->kids[i + 1];
    if (i >= 0) yt_map_remove(root, i);
    ynode *k = yt_new(Y_SCALAR, key), *m = yt_new(Y_MAP, NULL);
    mark(k, idx), mark(m, idx);
    yt_add(root, k), yt_add(root, m);
    return m;
}

/* A zip group (or list of them) that holds key. */
static int zipped(const ynode *sweep, const char *key) {
    int z = yt_map_find(sweep, "zip");
    if (z < 0) return 0;
    const ynode *v = sweep->kids[z + 1];
    if (v->type == Y_MAP) return yt_map_find(v, key) >= 0;
    for (int i = 0; v->type == Y_SEQ && i < v->n; i++)
        if (yt_map_find(v->kids[i], key) >= 0) return 1;
    return 0;
}

static int among(const ynode *value, const char *text) {
    if (value->type == Y_SCALAR) return strcmp(value->s, text) == 0;
    for (int i = 0; value->type == Y_SEQ && i < value->n; i++)
        if (value->kids[i]->type == Y_SCALAR && strcmp(value->kids[i]->s, text) == 0) return 1;
    return 0;
}

/* key now takes value (a scalar when fixed, a list when an axis): in the
 * sweep's exclude and only entries, a condition on a value key can no longer
 * take drops its entry (it can never match); a fixed key's condition that
 * holds is dropped from its entry (always true). Values compare as written. */
static void fix_filters(ynode *sweep, const char *key, const ynode *value) {
    static const char *const lists[] = {"exclude", "only"};
    for (int l = 0; l < 2; l++) {
        int f = yt_map_find(sweep, lists[l]);
        ynode *list = f >= 0 ? sweep->kids[f + 1] : NULL;
        for (int i = 0; list && list->type == Y_SEQ && i < list->n; i++) {
            ynode *m = list->kids[i];
            int k = yt_map_find(m, key);
            if (k < 0 || m->kids[k + 1]->type != Y_SCALAR) continue;
            int holds = among(value, m->kids[k + 1]->s);
            if (holds && value->type != Y_SCALAR) continue; /* an axis value: the condition stays */
            yt_map_remove(m, k);
            if (holds && m->n > 0) continue;
            yt_free(m); /* never matches (or matches everything it held): gone */
            memmove(list->kids + i, list->kids + i + 1, (size_t)(list->n - i - 1) * sizeof *list->kids);
            list->n--, i--;
        }
        if (list && list->type == Y_SEQ && list->n == 0) yt_map_remove(sweep, f); /* nothing left to filter */
    }
}

/* Put value under where.key, taking key out of params and sweep first. The
 * tree takes value over, or it is freed (-1: refused). */
static int put(ynode *root, const char *where, const char *key, ynode *value, int idx, const char *path,
               exp_errors *errs) {
    int p = yt_map_find(root, "params"), s = yt_map_find(root, "sweep");
    if (s >= 0 && zipped(root->kids[s + 1], key)) {
        yt_free(value); /* not put anywhere: ours to free */
        return exp_add_err(errs, path, -(idx + 1), 0, key,
                           "is zipped with other axes in the file; --set cannot replace one axis of a zip group"),
               -1;
    }
    int i;
    if (p >= 0 && (i = yt_map_find(root->kids[p + 1], key)) >= 0) yt_map_remove(root->kids[p + 1], i);
    if (s >= 0 && (i = yt_map_find(root->kids[s + 1], key)) >= 0) yt_map_remove(root->kids[s + 1], i);
    if (s >= 0) fix_filters(root->kids[s + 1], key, value);
    ynode *m = child_map(root, where, idx);
    ynode *k = yt_new(Y_SCALAR, key);
    mark(k, idx);
    yt_add(m, k), yt_add(m, value);
    return 0;
}

static int apply_one(ynode *root, const char *set, int idx, const char *path, exp_errors *errs) {
    const char *eq = strchr(set, '=');
    char lhs[96];
    if (!eq || eq == set || (size_t)(eq - set) >= sizeof lhs)
        return exp_add_err(errs, path, -(idx + 1), 0, NULL, "expected KEY=VALUE, got '%s'", set), -1;
    snprintf(lhs, sizeof lhs, "%.*s", (int)(eq - set), set);
    int empty = 0;
    ynode *value = yt_read(eq + 1, strlen(eq + 1), path, errs, &empty);
    if (!value) {
        if (empty) return exp_add_err(errs, path, -(idx + 1), 0, lhs, "missing value"), -1;
        return -1; /* the syntax error is reported */
    }
    mark(value, idx);
    const char *dot = strchr(lhs, '.');
    if (dot) {
        char head[64];
        snprintf(head, sizeof head, "%.*s", (int)(dot - lhs), lhs);
        if (!strcmp(head, "sweep") || !strcmp(head, "params")) return put(root, head, dot + 1, value, idx, path, errs);
        if (!strcmp(head, "timing")) {
            ynode *t = child_map(root, "timing", idx);
            int i = yt_map_find(t, dot + 1);
            if (i >= 0) yt_map_remove(t, i);
            ynode *k = yt_new(Y_SCALAR, dot + 1);
            mark(k, idx);
            return yt_add(t, k), yt_add(t, value), 0;
        }
        yt_free(value);
        return exp_add_err(errs, path, -(idx + 1), 0, lhs, "expected KEY, params.KEY, sweep.KEY or timing.KEY"), -1;
    }
    for (size_t t = 0; t < sizeof top_scalars / sizeof top_scalars[0]; t++)
        if (!strcmp(lhs, top_scalars[t])) {
            int i = yt_map_find(root, lhs);
            if (i >= 0) yt_map_remove(root, i);
            ynode *k = yt_new(Y_SCALAR, lhs);
            mark(k, idx);
            return yt_add(root, k), yt_add(root, value), 0;
        }
    return put(root, "params", lhs, value, idx, path, errs);
}

int exp_apply_sets(ynode *root, const char *const *sets, int n, const char *path, exp_errors *errs) {
    if (n > 0 && root->type != Y_MAP) return 0; /* reported when the file is read */
    int rc = 0;
    for (int i = 0; i < n; i++) rc |= apply_one(root, sets[i], i, path, errs);
    return rc;
}
