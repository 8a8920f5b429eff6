/* model_npy.c: a model's parameters exported to and imported from a
 * directory of .npy files with a JSON manifest (`routebench export/import`),
 * so a trained model can be read by NumPy/PyTorch and handed back. Names
 * follow the model's structure, PyTorch style; the manifest's "config" holds
 * the configuration (the parameter table's names), which import reads. */
#include "model/model_npy.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/model.h"
#include "model/tasks.h"
#include "util/common.h"
#include "util/fsutil.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/params.h"

/* One exported array: a slice of the parameter block (or a layer's
 * centroids). Names follow the model's structure, PyTorch style; weights of
 * linear maps are (out, in) like nn.Linear; qkv stacks q, k, v rows (C each),
 * heads contiguous inside each. */
typedef struct {
    char name[64];
    int ndim, shape[3];
    float *data;
    size_t n;
} param_entry;

/* Every array of m, in a fixed order; returns how many (<= max). */
static int model_entries(model *m, param_entry *e, int max, int with_centroids) {
    int n = 0, C = m->C, F = m->F, V = m->V, T = m->T;
    model_tensors *t = &m->params;
#define ADD(nm, ptr, nd, d0, d1)                                                                                  \
    do {                                                                                                          \
        if (n < max) {                                                                                            \
            snprintf(e[n].name, sizeof e[n].name, "%s", nm);                                                      \
            e[n].ndim = nd, e[n].shape[0] = d0, e[n].shape[1] = d1, e[n].data = ptr;                              \
            e[n].n = (size_t)(d0) * ((nd) > 1 ? (size_t)(d1) : 1);                                                \
        }                                                                                                         \
        n++;                                                                                                      \
    } while (0)
    ADD("wte.weight", t->wte, 2, V, C);
    if (m->sizes[1]) ADD("wpe.weight", t->wpe, 2, T, C);
    char nm[64];
    for (int l = 0; l < m->L; l++) {
        struct {
            const char *suffix;
            float *base;
            int nd, d0, d1;
        } per[] = {
            {"ln_1.weight", t->ln1w, 1, C, 0},           {"ln_1.bias", t->ln1b, 1, C, 0},
            {"attn.qkv.weight", t->qkvw, 2, 3 * C, C},   {"attn.qkv.bias", t->qkvb, 1, 3 * C, 0},
            {"attn.proj.weight", t->attprojw, 2, C, C},  {"attn.proj.bias", t->attprojb, 1, C, 0},
            {"ln_2.weight", t->ln2w, 1, C, 0},           {"ln_2.bias", t->ln2b, 1, C, 0},
            {"mlp.fc.weight", t->fcw, 2, F, C},          {"mlp.fc.bias", t->fcb, 1, F, 0},
            {"mlp.proj.weight", t->fcprojw, 2, C, F},    {"mlp.proj.bias", t->fcprojb, 1, C, 0},
        };
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            size_t per_layer = (size_t)per[i].d0 * (per[i].nd > 1 ? (size_t)per[i].d1 : 1);
            snprintf(nm, sizeof nm, "h.%d.%s", l, per[i].suffix);
            ADD(nm, per[i].base + (size_t)l * per_layer, per[i].nd, per[i].d0, per[i].d1);
        }
    }
    ADD("ln_f.weight", t->lnfw, 1, C, 0);
    ADD("ln_f.bias", t->lnfb, 1, C, 0);
#undef ADD
    /* k-means centroids are state, not parameters, but the model does not
     * compute the same without them */
    for (int l = 0; with_centroids && l < m->L; l++) {
        attn *a = m->att[l];
        const attn_backend *be = attn_find(train_layer_backend(&m->c, l));
        if (!be || !be->centroids || a->p.clusters <= 0) continue;
        if (n < max) {
            snprintf(e[n].name, sizeof e[n].name, "h.%d.attn.centroids", l);
            e[n].ndim = 3, e[n].shape[0] = a->p.heads, e[n].shape[1] = a->p.clusters, e[n].shape[2] = a->p.head_dim;
            e[n].data = be->centroids(a);
            e[n].n = (size_t)a->p.heads * a->p.clusters * a->p.head_dim;
        }
        n++;
    }
    return n;
}

/* The model's configuration as the manifest's "config" object: every
 * parameter of params.def a model has but the per-run ones (load, save, ...),
 * under the names train_config_set reads; the per-layer backends written
 * out, so the manifest says what each layer is. */
static void json_config(rb_jw *w, const train_config *c) {
    char text[TRAIN_PATH_LEN + 64], lb[TRAIN_NAME_LEN * TRAIN_MAX_LAYERS];
    size_t off = 0;
    lb[0] = 0;
    for (int l = 0; l < c->layers && off < sizeof lb; l++)
        off += (size_t)snprintf(lb + off, sizeof lb - off, "%s%s", l ? "," : "", train_layer_backend(c, l));
    rb_jw_key(w, "config");
    rb_jw_obj(w);
    for (int i = 0; i < rb_param_count(); i++) {
        const rb_param *d = rb_param_at(i);
        const void *f = train_config_field((train_config *)c, d, NULL);
        if (!f || ((d->flags & PF_NOSWEEP) && strcmp(d->name, "seed") != 0)) continue;
        rb_param_format(d, f, RB_FMT_TEXT, text, sizeof text);
        rb_jw_key(w, d->name);
        if (d->type == PT_BACKENDS) rb_jw_str(w, lb);
        else if (d->type == PT_BOOL && strcmp(text, "auto") != 0) rb_jw_bool(w, *(const int *)f);
        else if (rb_param_numeric(d) && strcmp(text, "auto") != 0) rb_jw_raw(w, text);
        else rb_jw_str(w, text);
    }
    rb_jw_obj_end(w);
}

static int write_model_manifest(const char *path, const char *ckpt, int step, const model *m, const train_config *c,
                                const npy_list *L, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) return rb_fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
    rb_jw w;
    rb_jw_init_file(&w, f);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "what", "routebench model parameters");
    rb_jw_kstr(&w, "checkpoint", ckpt), rb_jw_kint(&w, "step", step), rb_jw_kint(&w, "parameters", (long long)m->nparams);
    rb_jw_kstr(&w, "layout", "linear weights are (out, in) as in torch.nn.Linear: y = x @ W.T + b; attn.qkv rows are "
                             "q, k, v (d_model each), heads contiguous (head_dim rows each); wte is also the output "
                             "projection; attn.centroids (routing) are [heads, clusters, head_dim]");
    json_config(&w, c);
    rb_jw_key(&w, "layer_heads"); /* which heads of each layer are which backend, with their windows */
    rb_jw_arr(&w);
    for (int l = 0; l < m->L; l++) {
        char text[512];
        rb_jw_str(&w, attn_describe_heads(m->att[l]->be, &m->att[l]->p, text, sizeof text));
    }
    rb_jw_arr_end(&w);
    npy_list_json(&w, L);
    rb_jw_obj_end(&w);
    fprintf(f, "\n");
    if (ferror(f) | (fclose(f) != 0)) return rb_fail(err, errlen, "cannot write %s", path);
    return 0;
}

#define MAX_PARAM_ENTRIES (16 + 13 * TRAIN_MAX_LAYERS)

int npy_export_model(const char *ckpt, const char *dir, const train_config *cin, int *narrays, char *err,
                     size_t errlen) {
    if (narrays) *narrays = 0;
    train_config c = *cin;
    char path[4096];
    int step = 0;
    model *m = checkpoint_model(&c, ckpt, &step, "options given to export must not change the model", err, errlen);
    if (!m) return -1;
    if (rb_mkdir_p(dir, err, errlen) != 0) {
        model_free(m);
        return -1;
    }
    param_entry *e = mallocCheck(MAX_PARAM_ENTRIES * sizeof *e);
    int ne = model_entries(m, e, MAX_PARAM_ENTRIES, 1);
    size_t total = 0;
    for (int i = 0; i < ne; i++) total += strncmp(e[i].name + strlen(e[i].name) - 9, "centroids", 9) ? e[i].n : 0;
    assert(ne <= MAX_PARAM_ENTRIES && total == m->nparams); /* every parameter exported exactly once */
    npy_list *L = callocCheck(1, sizeof *L);
    int rc = 0;
    for (int i = 0; i < ne && rc == 0; i++)
        rc = npy_list_put(L, dir, e[i].name, "<f4", e[i].shape, e[i].ndim, e[i].data, err, errlen);
    if (rc == 0) rc = write_model_manifest(rb_path_join(path, sizeof path, dir, "manifest.json"), ckpt, step, m, &c, L,
                                           err, errlen);
    if (narrays) *narrays = L->n;
    free(L), free(e);
    model_free(m);
    return rc;
}

/* The manifest at path into c (npy_model_config_json). */
static int config_from_manifest(train_config *c, const char *path, char *err, size_t errlen) {
    size_t len;
    char msg[512], *buf = rb_read_file(path, 1 << 24, &len, msg, sizeof msg);
    if (!buf) return rb_fail(err, errlen, "%s", msg);
    int rc = npy_model_config_json(c, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

int npy_model_config_json(train_config *c, const char *text, size_t len, const char *path, char *err,
                          size_t errlen) {
    char msg[512];
    rb_json *j = rb_json_parse(text, len, msg, sizeof msg);
    if (!j) return rb_fail(err, errlen, "%s: bad JSON at %s", path, msg);
    const rb_json *cfg = rb_json_get(j, "config");
    int rc = 0;
    if (!cfg || cfg->type != RB_JSON_OBJ)
        rc = rb_fail(err, errlen, "%s: no \"config\" object (the model's configuration)", path);
    for (int i = 0; rc == 0 && i < cfg->n; i++) {
        const rb_json *v = cfg->items[i];
        const char *val = v->type == RB_JSON_BOOL ? (v->b ? "true" : "false") : v->s;
        if (v->type != RB_JSON_STR && v->type != RB_JSON_NUM && v->type != RB_JSON_BOOL)
            rc = rb_fail(err, errlen, "%s: config: %s: expected a string, number or boolean, got %s", path,
                         cfg->keys[i], rb_json_type_name(v->type));
        else if (train_config_set(c, cfg->keys[i], val, msg, sizeof msg) != 0)
            rc = rb_fail(err, errlen, "%s: config: %s", path, msg);
    }
    rb_json_free(j);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int npy_import_model(const char *dir, const char *ckpt, int *narrays, char *err, size_t errlen) {
    if (narrays) *narrays = 0;
    char path[4096], msg[1024];
    train_config c;
    train_config_default(&c);
    if (config_from_manifest(&c, rb_path_join(path, sizeof path, dir, "manifest.json"), err, errlen) != 0) return -1;
    if (train_config_check(&c, msg, sizeof msg) != 0)
        return rb_fail(err, errlen, "%s: configuration: %s", path, msg);
    model *m = model_create(&c, msg, sizeof msg);
    if (!m) return rb_fail(err, errlen, "%s", msg);
    param_entry *e = mallocCheck(MAX_PARAM_ENTRIES * sizeof *e);
    int ne = model_entries(m, e, MAX_PARAM_ENTRIES, 1);
    assert(ne <= MAX_PARAM_ENTRIES);

    /* Every problem at once: missing, extra and mis-shaped arrays. */
    char missing[2048] = "", extra[2048] = "", bad[2048] = "";
    int nmissing = 0, nextra = 0, nbad = 0;
    for (int i = 0; i < ne; i++) {
        char file[96];
        snprintf(file, sizeof file, "%s.npy", e[i].name);
        if (!rb_exists(rb_path_join(path, sizeof path, dir, file))) {
            size_t o = strlen(missing);
            snprintf(missing + o, sizeof missing - o, "%s%s", nmissing++ ? ", " : "", file);
        } else if (npy_read_into(path, "<f4", e[i].shape, e[i].ndim, e[i].data, msg, sizeof msg) != 0) {
            size_t o = strlen(bad);
            const char *why = strstr(msg, ".npy: ") ? strstr(msg, ".npy: ") + 6 : msg;
            snprintf(bad + o, sizeof bad - o, "%s%s (%s)", nbad++ ? "; " : "", file, why);
        }
    }
    /* files that are not one of the model's arrays */
    char **names = NULL;
    int nn = 0;
    {
        char cmd_dir[4096];
        snprintf(cmd_dir, sizeof cmd_dir, "%s", dir);
        DIR *d = opendir(cmd_dir);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l < 5 || strcmp(de->d_name + l - 4, ".npy") != 0) continue;
                int known = 0;
                for (int i = 0; i < ne && !known; i++)
                    known = strncmp(de->d_name, e[i].name, l - 4) == 0 && e[i].name[l - 4] == '\0';
                if (!known) {
                    names = realloc(names, (size_t)(nn + 1) * sizeof *names);
                    names[nn++] = strdup(de->d_name);
                }
            }
            closedir(d);
        }
        if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str); /* readdir order is the file system's */
        for (int i = 0; i < nn; i++) {
            size_t o = strlen(extra);
            snprintf(extra + o, sizeof extra - o, "%s%s", nextra++ ? ", " : "", names[i]);
            free(names[i]);
        }
        free(names);
    }
    int rc = 0;
    if (nmissing || nextra || nbad) {
        char all[6400];
        snprintf(all, sizeof all, "%s: not this model's arrays (configuration from manifest.json):%s%s%s%s%s%s", dir,
                 nmissing ? " missing: " : "", missing, nextra ? (nmissing ? "; unexpected: " : " unexpected: ") : "",
                 extra, nbad ? ((nmissing || nextra) ? "; wrong: " : " wrong: ") : "", bad);
        rc = rb_fail(err, errlen, "%s", all);
    } else {
        /* a fresh start from these weights: step 0, zero moments, the data
         * stream where a new training run would begin it */
        rb_rng rng;
        rb_rng_seed(&rng, task_stream_seed(c.seed, TASK_TRAIN, 0));
        rc = checkpoint_save(ckpt, m, 0, &rng, &c, err, errlen);
        if (narrays && rc == 0) *narrays = ne;
    }
    free(e);
    model_free(m);
    return rc;
}
