/* cmd_npy.c: routebench's side of "check it against your own code": one
 * attention pass dumped to (or its inputs taken from) .npy files with a JSON
 * manifest (`routebench attn --save/--load`, cmd_npy.h), and the model's
 * parameters exported to and imported from a directory of .npy files
 * (`routebench export/import`). Everything goes through the attention
 * interface's optional centroids()/routes() methods, so no backend is named
 * here. The manifest is for people and their scripts (json.load); routebench
 * itself reads only the .npy files, except import, which takes the model's
 * configuration from the manifest's flat "config" object. */
#include "cli/cmd_npy.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "util/common.h"
#include "model/model.h"
#include "util/npy.h"
#include "model/tasks.h"
#include "util/threads.h"
#include "model/train.h"

/* ---- small helpers ------------------------------------------------------ */

int npy_mkdirs(const char *dir, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return rb_fail(err, errlen, "path too long: %s", dir);
    for (char *s = buf + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return rb_fail(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return rb_fail(err, errlen, "%s is not a directory", dir);
    return 0;
}

static const char *join(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.9g", x);
    else fprintf(f, "null");
}

/* A float parameter as the shortest text that reads back as the same float
 * (0.999, not 0.999000013), so people can read it and import gets it exact. */
static void json_float(FILE *f, float x) {
    char buf[32];
    if (!isfinite(x)) {
        fprintf(f, "null");
        return;
    }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    fputs(buf, f);
}

/* The list of arrays written, for the manifest. */
#define MAX_ARRAYS 4096
typedef struct {
    int n;
    struct {
        char name[96];
        char dtype[4];
        int ndim;
        int shape[NPY_MAX_DIMS];
    } a[MAX_ARRAYS];
} array_list;

static int put_array(array_list *l, const char *dir, const char *name, const char *dtype, const int *shape, int ndim,
                     const void *data, char *err, size_t errlen) {
    char path[4096], file[128];
    snprintf(file, sizeof file, "%s.npy", name);
    if (npy_write(join(path, sizeof path, dir, file), dtype, shape, ndim, data, err, errlen) != 0) return -1;
    if (l->n < MAX_ARRAYS) {
        snprintf(l->a[l->n].name, sizeof l->a[l->n].name, "%s", name);
        memcpy(l->a[l->n].dtype, dtype, 4);
        l->a[l->n].ndim = ndim;
        memcpy(l->a[l->n].shape, shape, (size_t)ndim * sizeof(int));
        l->n++;
    }
    return 0;
}

static void json_arrays(FILE *f, const array_list *l) {
    fprintf(f, "  \"arrays\": {");
    for (int i = 0; i < l->n; i++) {
        fprintf(f, "%s\n    ", i ? "," : "");
        json_str(f, l->a[i].name);
        fprintf(f, ": {\"file\": ");
        char file[128];
        snprintf(file, sizeof file, "%s.npy", l->a[i].name);
        json_str(f, file);
        fprintf(f, ", \"dtype\": \"%s\", \"shape\": [", l->a[i].dtype);
        for (int d = 0; d < l->a[i].ndim; d++) fprintf(f, "%s%d", d ? ", " : "", l->a[i].shape[d]);
        fprintf(f, "]}");
    }
    fprintf(f, "\n  }");
}

/* ---- one attention pass ------------------------------------------------- */

static void json_attn_params(FILE *f, const char *backend, const attn_params *p, int flags) {
    fprintf(f, "  \"backend\": ");
    json_str(f, backend);
    fprintf(f,
            ",\n  \"mode\": \"%s\",\n  \"params\": {\"batch\": %d, \"heads\": %d, \"seq\": %d, \"head_dim\": %d, "
            "\"causal\": %s, \"window\": %d, \"clusters\": %d, \"local_heads\": %d, \"share_qk\": %d, "
            "\"assign\": \"%s\", \"norm\": \"%s\", \"decay\": ",
            (flags & ATTN_TRAIN) ? "train" : "eval", p->batch, p->heads, p->seq, p->head_dim,
            p->causal ? "true" : "false", p->window, p->clusters, p->local_heads, p->share_qk,
            p->assign == ATTN_ASSIGN_ARGMAX ? "argmax" : "topk", p->norm == ATTN_NORM_LAYERNORM ? "layernorm" : "l2");
    json_float(f, p->decay);
    fprintf(f, ", \"commit_weight\": ");
    json_float(f, p->commit_weight);
    fprintf(f, ", \"kmeans_iters\": %d, \"seed\": %llu}", p->kmeans_iters, (unsigned long long)p->seed);
}

typedef struct {
    float *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    float *cen_before, *cen_after;
    int *members, *members_k;
} pass_bufs;

static void pass_free(pass_bufs *b) {
    free(b->q), free(b->k), free(b->v), free(b->dout), free(b->out), free(b->dq), free(b->dk), free(b->dv);
    free(b->cen_before), free(b->cen_after), free(b->members), free(b->members_k);
}

/* Membership of every (batch, head, cluster) as a rectangle padded with -1.
 * Returns the rectangle's width (0 when the backend gave no routes for any
 * head), *out a new buffer [batch, heads, clusters, width]. */
static int gather_routes(const attn_backend *be, const attn *a, int keys, int **out) {
    const attn_params *p = &a->p;
    int K = p->clusters, width = 0;
    *out = NULL;
    if (K <= 0) return 0;
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->heads; h++)
            for (int c = 0; c < K; c++) {
                const int *m;
                int n = be->routes(a, b, h, c, keys, &m);
                width = RB_MAX(width, n);
            }
    if (width <= 0) return 0;
    size_t total = (size_t)p->batch * p->heads * K * width;
    int *r = mallocCheck(total * sizeof(int));
    for (size_t i = 0; i < total; i++) r[i] = -1;
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->heads; h++)
            for (int c = 0; c < K; c++) {
                const int *m;
                int n = be->routes(a, b, h, c, keys, &m);
                int *row = r + (((size_t)b * p->heads + h) * K + c) * width;
                for (int i = 0; i < n; i++) row[i] = m[i];
            }
    *out = r;
    return width;
}

int attn_npy_pass(const char *backend, attn_params *p, int flags, const char *load_dir, const char *out_dir,
                  int *narrays, char *err, size_t errlen) {
    char path[4096], msg[1024];
    if (narrays) *narrays = 0;
    if (!out_dir) out_dir = load_dir;
    if (!out_dir) return rb_fail(err, errlen, "no directory to write to");
    const attn_backend *be = attn_find(backend);
    if (!be) return attn_fail_unknown(backend, err, errlen);

    /* With --load and no --seq, q.npy decides the sizes. */
    if (load_dir && p->seq == 0) {
        void *d = NULL;
        int sh[NPY_MAX_DIMS], nd;
        if (npy_read(join(path, sizeof path, load_dir, "q.npy"), "<f4", NULL, 4, &d, sh, &nd, msg, sizeof msg) != 0)
            return rb_fail(err, errlen, "%s (q must be [batch, heads, seq, head_dim])", msg);
        free(d);
        p->batch = sh[0], p->heads = sh[1], p->seq = sh[2], p->head_dim = sh[3];
    }
    if (attn_validate_msg(be, p, msg, sizeof msg) != 0)
        return rb_fail(err, errlen, "%s: %s", backend, msg);
    if (npy_mkdirs(out_dir, err, errlen) != 0) return -1;

    size_t n = (size_t)p->batch * p->heads * p->seq * p->head_dim;
    pass_bufs B;
    memset(&B, 0, sizeof B);
    float **all[] = {&B.q, &B.k, &B.v, &B.dout, &B.out, &B.dq, &B.dk, &B.dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        *all[i] = rb_aligned_alloc(n * sizeof(float));
        if (!*all[i]) {
            pass_free(&B);
            return rb_fail(err, errlen, "out of memory: 8 tensors of %zu bytes", n * sizeof(float));
        }
        memset(*all[i], 0, n * sizeof(float));
    }
    int shape[4] = {p->batch, p->heads, p->seq, p->head_dim};
    const char *in_names[4] = {"q", "k", "v", "dout"};
    float *ins[4] = {B.q, B.k, B.v, B.dout};
    if (load_dir) {
        for (int t = 0; t < 4; t++) {
            char file[32];
            snprintf(file, sizeof file, "%s.npy", in_names[t]);
            if (npy_read_into(join(path, sizeof path, load_dir, file), "<f4", shape, 4, ins[t], msg, sizeof msg) != 0) {
                pass_free(&B);
                return rb_fail(err, errlen, "%s (inputs are [batch, heads, seq, head_dim] = [%d, %d, %d, %d])", msg,
                               p->batch, p->heads, p->seq, p->head_dim);
            }
        }
    } else {
        /* the same draws, in the same order, as `routebench attn` (bench.c) */
        rb_rng r;
        rb_rng_seed(&r, p->seed);
        for (int t = 0; t < 4; t++)
            for (size_t i = 0; i < n; i++) ins[t][i] = rb_rng_normal(&r);
    }

    attn *a = be->create(p, msg, sizeof msg);
    if (!a) {
        pass_free(&B);
        return rb_fail(err, errlen, "%s: %s", backend, msg);
    }
    int cshape[3] = {p->heads, p->clusters, p->head_dim};
    size_t ncen = (size_t)p->heads * (p->clusters > 0 ? p->clusters : 0) * p->head_dim;
    int has_cen = be->centroids != NULL && ncen > 0;
    int cen_loaded = 0;
    if (has_cen) {
        B.cen_before = mallocCheck(ncen * sizeof(float));
        B.cen_after = mallocCheck(ncen * sizeof(float));
        if (load_dir && file_exists(join(path, sizeof path, load_dir, "centroids_before.npy"))) {
            if (npy_read_into(path, "<f4", cshape, 3, B.cen_before, msg, sizeof msg) != 0) {
                be->destroy(a), pass_free(&B);
                return rb_fail(err, errlen, "%s (centroids are [heads, clusters, head_dim] = [%d, %d, %d])", msg,
                               cshape[0], cshape[1], cshape[2]);
            }
            memcpy(be->centroids(a), B.cen_before, ncen * sizeof(float));
            cen_loaded = 1;
        } else {
            /* An evaluation pass initialises the centroids from the data
             * without moving them: those are the centroids the pass starts
             * from, and loading them back reproduces the pass. */
            be->forward(a, B.out, B.q, B.k, B.v, ATTN_EVAL);
            memcpy(B.cen_before, be->centroids(a), ncen * sizeof(float));
        }
    } else if (load_dir && file_exists(join(path, sizeof path, load_dir, "centroids_before.npy"))) {
        fprintf(stderr, "routebench: note: %s has no centroids; %s ignored\n", backend, path);
    }

    be->forward(a, B.out, B.q, B.k, B.v, flags & ATTN_TRAIN);
    be->backward(a, B.dq, B.dk, B.dv, B.dout, B.q, B.k, B.v, B.out);
    if (has_cen) memcpy(B.cen_after, be->centroids(a), ncen * sizeof(float));
    int width = 0, width_k = 0;
    if (be->routes) {
        width = gather_routes(be, a, 0, &B.members);
        int share = p->share_qk == 1;
        if (!share) width_k = gather_routes(be, a, 1, &B.members_k);
    }
    attn_stat stats[64];
    int nstats = be->stats ? be->stats(a, stats, 64) : 0;

    array_list *L = callocCheck(1, sizeof *L);
    int rc = 0, same_dir = load_dir && strcmp(load_dir, out_dir) == 0;
    if (!same_dir)
        for (int t = 0; t < 4 && rc == 0; t++) rc = put_array(L, out_dir, in_names[t], "<f4", shape, 4, ins[t], err, errlen);
    const char *out_names[4] = {"out", "dq", "dk", "dv"};
    float *outs[4] = {B.out, B.dq, B.dk, B.dv};
    for (int t = 0; t < 4 && rc == 0; t++) rc = put_array(L, out_dir, out_names[t], "<f4", shape, 4, outs[t], err, errlen);
    if (has_cen && rc == 0 && !(same_dir && cen_loaded))
        rc = put_array(L, out_dir, "centroids_before", "<f4", cshape, 3, B.cen_before, err, errlen);
    if (has_cen && rc == 0) rc = put_array(L, out_dir, "centroids_after", "<f4", cshape, 3, B.cen_after, err, errlen);
    int mshape[4] = {p->batch, p->heads, p->clusters, width};
    if (width > 0 && rc == 0) rc = put_array(L, out_dir, "members", "<i4", mshape, 4, B.members, err, errlen);
    mshape[3] = width_k;
    if (width_k > 0 && rc == 0) rc = put_array(L, out_dir, "members_k", "<i4", mshape, 4, B.members_k, err, errlen);

    if (rc == 0) {
        FILE *f = fopen(join(path, sizeof path, out_dir, "manifest.json"), "w");
        if (!f) rc = rb_fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
        else {
            fprintf(f, "{\n  \"what\": \"one forward and backward pass of routebench attention\",\n");
            json_attn_params(f, backend, p, flags);
            fprintf(f, ",\n  \"threads\": %d,\n  \"layout\": \"q, k, v, dout, out, dq, dk, dv: float32 [batch, heads, "
                       "seq, head_dim], C order\",\n  \"scale\": ",
                    rb_threads());
            json_num(f, 1.0 / sqrt((double)p->head_dim));
            fprintf(f, ",\n  \"inputs\": ");
            if (load_dir) json_str(f, load_dir);
            else fprintf(f, "\"drawn from N(0,1) with the seed, in the order q, k, v, dout\"");
            fprintf(f, ",\n  \"centroids_before\": \"%s\"", !has_cen ? "none" : cen_loaded ? "loaded" : "initialised from the data");
            if (width > 0)
                fprintf(f, ",\n  \"members\": \"int32 [batch, heads, clusters, %d]: query positions of each cluster, "
                           "ascending, padded with -1\"", width);
            if (width_k > 0)
                fprintf(f, ",\n  \"members_k\": \"int32 [batch, heads, clusters, %d]: key positions of each cluster, "
                           "ascending, padded with -1\"", width_k);
            fprintf(f, ",\n  \"stats\": {");
            for (int i = 0; i < nstats; i++) {
                fprintf(f, "%s", i ? ", " : "");
                json_str(f, stats[i].name);
                fprintf(f, ": ");
                json_num(f, stats[i].value);
            }
            fprintf(f, "},\n");
            json_arrays(f, L);
            fprintf(f, "\n}\n");
            if (ferror(f) | (fclose(f) != 0)) rc = rb_fail(err, errlen, "cannot write %s", path);
        }
    }
    if (narrays) *narrays = L->n;
    free(L);
    be->destroy(a);
    pass_free(&B);
    return rc;
}

/* ---- model parameters: export / import ----------------------------------- */

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

/* The configuration keys that define the model (everything its hash covers,
 * plus the seed and the task's own knobs), as train_config_set reads them. */
static void json_config(FILE *f, const train_config *c) {
    char lb[TRAIN_NAME_LEN * TRAIN_MAX_LAYERS];
    size_t off = 0;
    lb[0] = '\0';
    for (int l = 0; l < c->layers && off < sizeof lb; l++)
        off += (size_t)snprintf(lb + off, sizeof lb - off, "%s%s", l ? "," : "", train_layer_backend(c, l));
    fprintf(f, "  \"config\": {\"vocab\": %d, \"d_model\": %d, \"layers\": %d, \"heads\": %d, \"mlp_mult\": %d, "
               "\"seq\": %d, \"pos\": \"%s\", \"backend\": ",
            c->vocab, c->d_model, c->layers, c->heads, c->mlp_mult, c->seq,
            c->pos == TRAIN_POS_SINUSOIDAL ? "sinusoidal" : "learned");
    json_str(f, c->backend);
    fprintf(f, ", \"layer_backends\": ");
    json_str(f, lb);
    fprintf(f, ", \"window\": %d, \"clusters\": ", c->attn.window);
    if (c->attn.clusters > 0) fprintf(f, "%d", c->attn.clusters);
    else fprintf(f, "\"auto\"");
    fprintf(f, ", \"local_heads\": %d, \"share_qk\": %d, \"assign\": \"%s\", \"norm\": \"%s\", \"decay\": ",
            c->attn.local_heads, c->attn.share_qk, c->attn.assign == ATTN_ASSIGN_ARGMAX ? "argmax" : "topk",
            c->attn.norm == ATTN_NORM_LAYERNORM ? "layernorm" : "l2");
    json_float(f, c->attn.decay);
    fprintf(f, ", \"kmeans_iters\": %d, \"commit_beta\": ", c->attn.kmeans_iters);
    json_float(f, c->commit_beta);
    fprintf(f, ", \"task\": ");
    json_str(f, c->task);
    fprintf(f, ", \"data\": ");
    json_str(f, c->data);
    fprintf(f, ", \"copy_vocab\": %d, \"recall_keys\": %d, \"recall_values\": %d, \"random_vocab\": %d, "
               "\"seed\": %llu}",
            c->copy_vocab, c->recall_keys, c->recall_values, c->random_vocab, (unsigned long long)c->seed);
}

#define MAX_PARAM_ENTRIES (16 + 13 * TRAIN_MAX_LAYERS)

int npy_export_model(const char *ckpt, const char *dir, const train_config *cin, int *narrays, char *err,
                     size_t errlen) {
    if (narrays) *narrays = 0;
    train_config c = *cin;
    char msg[1024], path[4096];
    if (train_config_check(&c, msg, sizeof msg) != 0) return rb_fail(err, errlen, "configuration: %s", msg);
    model *m = model_create(&c, msg, sizeof msg);
    if (!m) return rb_fail(err, errlen, "%s", msg);
    int step = 0;
    rb_rng rng;
    rb_rng_seed(&rng, 0);
    if (checkpoint_load(ckpt, m, &step, &rng, train_config_hash(&c), msg, sizeof msg) != 0) {
        model_free(m);
        return rb_fail(err, errlen, "%s (options given to export must not change the model)", msg);
    }
    if (npy_mkdirs(dir, err, errlen) != 0) {
        model_free(m);
        return -1;
    }
    param_entry *e = mallocCheck(MAX_PARAM_ENTRIES * sizeof *e);
    int ne = model_entries(m, e, MAX_PARAM_ENTRIES, 1);
    size_t total = 0;
    for (int i = 0; i < ne; i++) total += strncmp(e[i].name + strlen(e[i].name) - 9, "centroids", 9) ? e[i].n : 0;
    assert(ne <= MAX_PARAM_ENTRIES && total == m->nparams); /* every parameter exported exactly once */
    array_list *L = callocCheck(1, sizeof *L);
    int rc = 0;
    for (int i = 0; i < ne && rc == 0; i++)
        rc = put_array(L, dir, e[i].name, "<f4", e[i].shape, e[i].ndim, e[i].data, err, errlen);
    if (rc == 0) {
        FILE *f = fopen(join(path, sizeof path, dir, "manifest.json"), "w");
        if (!f) rc = rb_fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
        else {
            fprintf(f, "{\n  \"what\": \"routebench model parameters\",\n  \"checkpoint\": ");
            json_str(f, ckpt);
            fprintf(f, ",\n  \"step\": %d,\n  \"parameters\": %zu,\n", step, m->nparams);
            fprintf(f, "  \"layout\": \"linear weights are (out, in) as in torch.nn.Linear: y = x @ W.T + b; "
                       "attn.qkv rows are q, k, v (d_model each), heads contiguous (head_dim rows each); "
                       "wte is also the output projection; attn.centroids (routing) are [heads, clusters, head_dim]\",\n");
            json_config(f, &c);
            fprintf(f, ",\n");
            json_arrays(f, L);
            fprintf(f, "\n}\n");
            if (ferror(f) | (fclose(f) != 0)) rc = rb_fail(err, errlen, "cannot write %s", path);
        }
    }
    if (narrays) *narrays = L->n;
    free(L), free(e);
    model_free(m);
    return rc;
}

/* ---- a small JSON reader: enough to take the flat "config" object out of a
 * manifest (values: strings, numbers, true/false; others skipped) -------- */

typedef struct {
    const char *s;
    char msg[128];
} jp;

static int __attribute__((format(printf, 2, 3))) jp_err(jp *j, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg, sizeof j->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void jp_ws(jp *j) {
    while (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r') j->s++;
}

/* A string into out (escapes \" \\ \/ \n \t handled, \u00XX as a byte). */
static int jp_string(jp *j, char *out, size_t outlen) {
    jp_ws(j);
    if (*j->s != '"') return jp_err(j, "expected a string");
    j->s++;
    size_t n = 0;
    while (*j->s && *j->s != '"') {
        char c = *j->s++;
        if (c == '\\') {
            c = *j->s++;
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            else if (c == 'u') {
                unsigned v = 0;
                if (sscanf(j->s, "%4x", &v) != 1) return jp_err(j, "bad \\u escape");
                j->s += 4, c = (char)v;
            } else if (c == '\0') break;
        }
        if (out && n + 1 < outlen) out[n++] = c;
    }
    if (*j->s != '"') return jp_err(j, "unterminated string");
    j->s++;
    if (out) out[n] = '\0';
    return 0;
}

/* Any value; when out is not NULL a scalar's text is copied there. */
static int jp_value(jp *j, char *out, size_t outlen, int depth) {
    jp_ws(j);
    if (out) out[0] = '\0';
    if (depth > 64) return jp_err(j, "nested too deeply");
    if (*j->s == '"') return jp_string(j, out, outlen);
    if (*j->s == '{' || *j->s == '[') {
        char close = *j->s == '{' ? '}' : ']';
        int obj = close == '}';
        j->s++;
        jp_ws(j);
        if (*j->s == close) return j->s++, 0;
        for (;;) {
            if (obj) {
                if (jp_string(j, NULL, 0)) return -1;
                jp_ws(j);
                if (*j->s != ':') return jp_err(j, "expected ':'");
                j->s++;
            }
            if (jp_value(j, NULL, 0, depth + 1)) return -1;
            jp_ws(j);
            if (*j->s == ',') j->s++;
            else if (*j->s == close) return j->s++, 0;
            else return jp_err(j, "expected ',' or '%c'", close);
        }
    }
    const char *b = j->s;
    while (*j->s && strchr("+-.0123456789eEtrufalsn", *j->s)) j->s++;
    if (j->s == b) return jp_err(j, "unexpected character '%c'", *j->s ? *j->s : '?');
    if (out) snprintf(out, outlen, "%.*s", (int)(j->s - b), b);
    return 0;
}

/* Apply every member of the top-level object's "config" object to c with
 * train_config_set. 0 or -1 with a message. */
static int config_from_manifest(train_config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return rb_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len < 0 || len > (1 << 24)) {
        fclose(f);
        return rb_fail(err, errlen, "%s: not a manifest (size %ld)", path, len);
    }
    char *buf = mallocCheck((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = '\0';
    jp j = {buf, ""};
    int found = 0, rc = 0;
    jp_ws(&j);
    if (*j.s != '{') rc = jp_err(&j, "not a JSON object");
    else j.s++;
    while (rc == 0) {
        jp_ws(&j);
        if (*j.s == '}') break;
        char key[64];
        if (jp_string(&j, key, sizeof key) != 0) {
            rc = -1;
            break;
        }
        jp_ws(&j);
        if (*j.s != ':') {
            rc = jp_err(&j, "expected ':'");
            break;
        }
        j.s++;
        jp_ws(&j);
        if (strcmp(key, "config") == 0 && *j.s == '{') {
            found = 1;
            j.s++;
            jp_ws(&j);
            while (rc == 0 && *j.s != '}') {
                char k[64], v[TRAIN_PATH_LEN], msg[512];
                if (jp_string(&j, k, sizeof k) != 0) {
                    rc = -1;
                    break;
                }
                jp_ws(&j);
                if (*j.s != ':') {
                    rc = jp_err(&j, "expected ':'");
                    break;
                }
                j.s++;
                if (jp_value(&j, v, sizeof v, 1) != 0) {
                    rc = -1;
                    break;
                }
                if (strcmp(v, "true") == 0) snprintf(v, sizeof v, "1");
                else if (strcmp(v, "false") == 0) snprintf(v, sizeof v, "0");
                if (train_config_set(c, k, v, msg, sizeof msg) != 0) {
                    free(buf);
                    return rb_fail(err, errlen, "%s: config: %s", path, msg);
                }
                jp_ws(&j);
                if (*j.s == ',') j.s++, jp_ws(&j);
                else if (*j.s != '}') rc = jp_err(&j, "expected ',' or '}' in config");
            }
            if (rc == 0) j.s++;
        } else if (jp_value(&j, NULL, 0, 1) != 0) rc = -1;
        if (rc) break;
        jp_ws(&j);
        if (*j.s == ',') j.s++;
        else if (*j.s != '}') rc = jp_err(&j, "expected ',' or '}'");
    }
    long at = (long)(j.s - buf);
    free(buf);
    if (rc) return rb_fail(err, errlen, "%s: bad JSON at byte %ld: %s", path, at, j.msg);
    if (!found) return rb_fail(err, errlen, "%s: no \"config\" object (the model's configuration)", path);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int npy_import_model(const char *dir, const char *ckpt, int *narrays, char *err, size_t errlen) {
    if (narrays) *narrays = 0;
    char path[4096], msg[1024];
    train_config c;
    train_config_default(&c);
    if (config_from_manifest(&c, join(path, sizeof path, dir, "manifest.json"), err, errlen) != 0) return -1;
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
        if (!file_exists(join(path, sizeof path, dir, file))) {
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

/* ---- the subcommands ----------------------------------------------------- */

static void export_usage(FILE *f) {
    fprintf(f, "usage: routebench export CHECKPOINT DIR [--KEY VALUE ...]\n"
               "Writes every parameter of the model in CHECKPOINT as DIR/<name>.npy (float32, C order;\n"
               "names like wte.weight, h.0.attn.qkv.weight, h.0.attn.centroids, ln_f.bias) and\n"
               "DIR/manifest.json with the configuration, which is read from the checkpoint. --KEY VALUE\n"
               "options (those of `routebench train`) given on top replace single keys; options that\n"
               "change the model are refused by the checkpoint's configuration hash. A checkpoint of\n"
               "format version 1 (written before checkpoints held their configuration) needs the same\n"
               "options `routebench train` was given (--d-model 128 --layers 2 --backend routing ...).\n");
}

static void import_usage(FILE *f) {
    fprintf(f, "usage: routebench import DIR CHECKPOINT\n"
               "The reverse of export: reads the configuration from DIR/manifest.json (its \"config\"\n"
               "object) and every parameter from DIR/<name>.npy, and writes CHECKPOINT at step 0 with\n"
               "zero optimiser moments, so `routebench train --load CHECKPOINT ...` starts from those\n"
               "weights. Missing, unexpected or mis-shaped arrays are refused, each named.\n");
}

int cmd_export(int argc, char **argv) {
    train_config c;
    train_config_default(&c);
    const char *pos[2] = {NULL, NULL};
    int npos = 0, threads = 0, nkv = 0;
    char err[2048];
    /* the --KEY VALUE options, applied on top of the checkpoint's configuration once it is read */
    const char **kv = mallocCheck((size_t)(argc + 1) * sizeof *kv);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            export_usage(stdout);
            free(kv);
            return 0;
        }
        if (strncmp(f, "--", 2) != 0) {
            if (npos == 2) {
                fprintf(stderr, "routebench export: unexpected argument '%s'\n", f);
                export_usage(stderr);
                free(kv);
                return 2;
            }
            pos[npos++] = f;
            continue;
        }
        if (!val) {
            fprintf(stderr, "routebench export: %s needs a value\n", f);
            free(kv);
            return 2;
        }
        i++;
        if (strcmp(f, "--threads") == 0) {
            if (cli_int(f, val, 1, 4096, &threads)) {
                free(kv);
                return 2;
            }
        } else if (train_config_set(&c, f + 2, val, err, sizeof err) != 0) { /* refused now, not later */
            fprintf(stderr, "routebench export: %s\n", err);
            free(kv);
            return 2;
        } else {
            kv[2 * nkv] = f + 2, kv[2 * nkv + 1] = val, nkv++;
        }
    }
    if (npos != 2) {
        export_usage(stderr);
        free(kv);
        return 2;
    }
    int rcc = checkpoint_config_with(pos[0], &c, kv, nkv, err, sizeof err);
    free(kv);
    if (rcc != 0) {
        fprintf(stderr, "routebench export: %s\n", err);
        return 2;
    }
    rb_set_threads(threads);
    int n;
    if (npy_export_model(pos[0], pos[1], &c, &n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench export: %s\n", err);
        return 2;
    }
    printf("wrote %d arrays and manifest.json to %s\n", n, pos[1]);
    return 0;
}

int cmd_import(int argc, char **argv) {
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        import_usage(stdout);
        return 0;
    }
    if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
        import_usage(stderr);
        return 2;
    }
    char err[8192];
    int n;
    if (npy_import_model(argv[1], argv[2], &n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench import: %s\n", err);
        return 2;
    }
    printf("read %d arrays from %s, wrote %s\n", n, argv[1], argv[2]);
    return 0;
}
