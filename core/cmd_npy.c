/* cmd_npy.c: routebench's side of "check it against your own code": one
 * attention pass dumped to (or its inputs taken from) .npy files with a JSON
 * manifest (`routebench attn --save/--load`, cmd_npy.h), and the model's
 * parameters exported to and imported from a directory of .npy files
 * (`routebench export/import`). Everything goes through the attention
 * interface's optional centroids()/routes() methods, so no backend is named
 * here. The manifest is for people and their scripts (json.load); routebench
 * itself reads only the .npy files, except import, which takes the model's
 * configuration from the manifest's flat "config" object. */
#include "cmd_npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "npy.h"
#include "threads.h"

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
    fprintf(f, ", \"kmeans_iters\": %d, \"seed\": %llu}", p->kmeans_init_iters, (unsigned long long)p->seed);
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
    if (!be) return rb_fail(err, errlen, "unknown backend '%s' (known: %s)", backend, attn_names());

    /* With --load and no --seq, q.npy decides the sizes. */
    if (load_dir && p->seq == 0) {
        void *d = NULL;
        int sh[NPY_MAX_DIMS], nd;
        if (npy_read(join(path, sizeof path, load_dir, "q.npy"), "<f4", NULL, 4, &d, sh, &nd, msg, sizeof msg) != 0)
            return rb_fail(err, errlen, "%s (q must be [batch, heads, seq, head_dim])", msg);
        free(d);
        p->batch = sh[0], p->heads = sh[1], p->seq = sh[2], p->head_dim = sh[3];
    }
    if (attn_params_check_sizes(p, msg, sizeof msg) != 0 || be->validate(p, msg, sizeof msg) != 0)
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
