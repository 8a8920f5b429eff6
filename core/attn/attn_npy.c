/* attn_npy.c: one attention pass dumped to (or its inputs taken from) .npy
 * files with a JSON manifest: what `routebench attn --save/--load` do, so a
 * pass can be checked against someone's own implementation. Everything goes
 * through the interface's optional centroids()/routes() methods, so no
 * backend is named here. */
#include "attn/attn_npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/fsutil.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/threads.h"

/* What the manifest of one pass says. */
typedef struct {
    const char *backend;
    const attn_params *p;
    int flags;
    const char *load_dir;
    int has_cen, cen_loaded, width, width_k;
    const attn_stat *stats;
    int nstats;
    const npy_list *arrays;
    const attn *a; /* the instance (its head groups) */
} pass_manifest;

/* "head_groups": which heads each backend computed, with its parameters
 * (one group of every head for backends without head_groups()). */
static void write_head_groups(rb_jw *w, const attn *a) {
    attn_head_group g[16];
    int n = attn_head_groups(a->be, &a->p, g, 16);
    rb_jw_key(w, "head_groups");
    rb_jw_arr(w);
    for (int i = 0; i < n && i < 16; i++) {
        rb_jw_obj(w);
        rb_jw_kstr(w, "backend", g[i].be->name);
        rb_jw_kint(w, "first_head", g[i].first);
        rb_jw_kint(w, "heads", g[i].heads);
        rb_jw_key(w, "params");
        rb_jw_obj(w);
        attn_params_json(w, &g[i].p, g[i].be->uses, RB_FMT_TEXT);
        rb_jw_obj_end(w);
        rb_jw_obj_end(w);
    }
    rb_jw_arr_end(w);
}

static int write_manifest(const char *path, const pass_manifest *m, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) return rb_fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
    char text[160];
    rb_jw w;
    rb_jw_init_file(&w, f);
    rb_jw_obj(&w);
    rb_jw_kstr(&w, "what", "one forward and backward pass of routebench attention");
    rb_jw_kstr(&w, "backend", m->backend), rb_jw_kstr(&w, "mode", (m->flags & ATTN_TRAIN) ? "train" : "eval");
    rb_jw_key(&w, "params");
    rb_jw_obj(&w);
    attn_params_json(&w, m->p, ~0u, RB_FMT_TEXT);
    rb_jw_key(&w, "seed"), rb_jw_u64(&w, m->p->seed);
    rb_jw_obj_end(&w);
    if (m->a) write_head_groups(&w, m->a);
    rb_jw_kint(&w, "threads", rb_threads());
    rb_jw_kstr(&w, "layout", "q, k, v, dout, out, dq, dk, dv: float32 [batch, heads, seq, head_dim], C order");
    rb_jw_kreal(&w, "scale", 1.0 / sqrt((double)m->p->head_dim));
    rb_jw_kstr(&w, "inputs", m->load_dir ? m->load_dir : "drawn from N(0,1) with the seed, in the order q, k, v, dout");
    rb_jw_kstr(&w, "centroids_before", !m->has_cen ? "none" : m->cen_loaded ? "loaded" : "initialised from the data");
    for (int k = 0; k < 2; k++) {
        int width = k ? m->width_k : m->width;
        if (width <= 0) continue;
        snprintf(text, sizeof text, "int32 [batch, heads, clusters, %d]: %s positions of each cluster, ascending, "
                 "padded with -1", width, k ? "key" : "query");
        rb_jw_kstr(&w, k ? "members_k" : "members", text);
    }
    rb_jw_key(&w, "stats");
    rb_jw_obj(&w);
    for (int i = 0; i < m->nstats; i++) rb_jw_kreal(&w, m->stats[i].name, m->stats[i].value);
    rb_jw_obj_end(&w);
    npy_list_json(&w, m->arrays);
    rb_jw_obj_end(&w);
    fprintf(f, "\n");
    if (ferror(f) | (fclose(f) != 0)) return rb_fail(err, errlen, "cannot write %s", path);
    return 0;
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

/* With --load and no --seq, q.npy decides the sizes. */
static int sizes_from_q(const char *load_dir, attn_params *p, char *err, size_t errlen) {
    char path[4096], msg[1024];
    void *d = NULL;
    int sh[NPY_MAX_DIMS], nd;
    if (npy_read(rb_path_join(path, sizeof path, load_dir, "q.npy"), "<f4", NULL, 4, &d, sh, &nd, msg, sizeof msg) != 0)
        return rb_fail(err, errlen, "%s (q must be [batch, heads, seq, head_dim])", msg);
    free(d);
    p->batch = sh[0], p->heads = sh[1], p->seq = sh[2], p->head_dim = sh[3];
    return 0;
}

static const char *const in_names[4] = {"q", "k", "v", "dout"};

/* The eight tensors, the inputs read from load_dir or drawn exactly as
 * `routebench attn` draws them (bench.c: N(0,1) from the seed, q, k, v, dout). */
static int pass_inputs(pass_bufs *B, const attn_params *p, const char *load_dir, char *err, size_t errlen) {
    size_t n = (size_t)p->batch * p->heads * p->seq * p->head_dim;
    float **all[] = {&B->q, &B->k, &B->v, &B->dout, &B->out, &B->dq, &B->dk, &B->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (!(*all[i] = rb_aligned_alloc(n * sizeof(float))))
            return rb_fail(err, errlen, "out of memory: 8 tensors of %zu bytes", n * sizeof(float));
        memset(*all[i], 0, n * sizeof(float));
    }
    float *ins[4] = {B->q, B->k, B->v, B->dout};
    int shape[4] = {p->batch, p->heads, p->seq, p->head_dim};
    if (!load_dir) {
        rb_rng r;
        rb_rng_seed(&r, p->seed);
        for (int t = 0; t < 4; t++)
            for (size_t i = 0; i < n; i++) ins[t][i] = rb_rng_normal(&r);
        return 0;
    }
    for (int t = 0; t < 4; t++) {
        char file[32], path[4096], msg[1024];
        snprintf(file, sizeof file, "%s.npy", in_names[t]);
        if (npy_read_into(rb_path_join(path, sizeof path, load_dir, file), "<f4", shape, 4, ins[t], msg, sizeof msg))
            return rb_fail(err, errlen, "%s (inputs are [batch, heads, seq, head_dim] = [%d, %d, %d, %d])", msg,
                           p->batch, p->heads, p->seq, p->head_dim);
    }
    return 0;
}

/* The centroids the pass starts from: load_dir/centroids_before.npy when
 * there (*loaded = 1), else initialised from the data by an evaluation pass,
 * which does not move them, so loading them back reproduces the pass. */
static int pass_centroids(pass_bufs *B, const attn_backend *be, attn *a, const char *load_dir, int *loaded, char *err,
                          size_t errlen) {
    const attn_params *p = &a->p;
    char path[4096], msg[1024];
    int cshape[3] = {p->heads, p->clusters, p->head_dim};
    size_t ncen = (size_t)p->heads * p->clusters * p->head_dim;
    B->cen_before = mallocCheck(ncen * sizeof(float));
    B->cen_after = mallocCheck(ncen * sizeof(float));
    *loaded = 0;
    if (load_dir && rb_exists(rb_path_join(path, sizeof path, load_dir, "centroids_before.npy"))) {
        if (npy_read_into(path, "<f4", cshape, 3, B->cen_before, msg, sizeof msg) != 0)
            return rb_fail(err, errlen, "%s (centroids are [heads, clusters, head_dim] = [%d, %d, %d])", msg,
                           cshape[0], cshape[1], cshape[2]);
        memcpy(be->centroids(a), B->cen_before, ncen * sizeof(float));
        *loaded = 1;
        return 0;
    }
    be->forward(a, B->out, B->q, B->k, B->v, ATTN_EVAL);
    memcpy(B->cen_before, be->centroids(a), ncen * sizeof(float));
    return 0;
}

/* Every array of the pass into out_dir (the inputs too unless they came from
 * there), then the manifest. */
static int pass_write(const pass_bufs *B, pass_manifest *m, const char *out_dir, char *err, size_t errlen) {
    const attn_params *p = m->p;
    npy_list *L = (npy_list *)m->arrays;
    char path[4096];
    int shape[4] = {p->batch, p->heads, p->seq, p->head_dim}, cshape[3] = {p->heads, p->clusters, p->head_dim};
    int rc = 0, same_dir = m->load_dir && strcmp(m->load_dir, out_dir) == 0;
    const float *arrays[8] = {B->q, B->k, B->v, B->dout, B->out, B->dq, B->dk, B->dv};
    static const char *const names[8] = {"q", "k", "v", "dout", "out", "dq", "dk", "dv"};
    for (int t = same_dir ? 4 : 0; t < 8 && rc == 0; t++)
        rc = npy_list_put(L, out_dir, names[t], "<f4", shape, 4, arrays[t], err, errlen);
    if (m->has_cen && rc == 0 && !(same_dir && m->cen_loaded))
        rc = npy_list_put(L, out_dir, "centroids_before", "<f4", cshape, 3, B->cen_before, err, errlen);
    if (m->has_cen && rc == 0) rc = npy_list_put(L, out_dir, "centroids_after", "<f4", cshape, 3, B->cen_after, err, errlen);
    int mshape[4] = {p->batch, p->heads, p->clusters, m->width};
    if (m->width > 0 && rc == 0) rc = npy_list_put(L, out_dir, "members", "<i4", mshape, 4, B->members, err, errlen);
    mshape[3] = m->width_k;
    if (m->width_k > 0 && rc == 0) rc = npy_list_put(L, out_dir, "members_k", "<i4", mshape, 4, B->members_k, err, errlen);
    if (rc == 0) rc = write_manifest(rb_path_join(path, sizeof path, out_dir, "manifest.json"), m, err, errlen);
    return rc;
}

int attn_npy_pass(const char *backend, attn_params *p, int flags, const char *load_dir, const char *out_dir,
                  int *narrays, char *err, size_t errlen) {
    char msg[1024];
    if (narrays) *narrays = 0;
    if (!out_dir) out_dir = load_dir;
    if (!out_dir) return rb_fail(err, errlen, "no directory to write to");
    const attn_backend *be = attn_find(backend);
    if (!be) return attn_fail_unknown(backend, err, errlen);
    if (load_dir && p->seq == 0 && sizes_from_q(load_dir, p, err, errlen) != 0) return -1;
    if (attn_validate_msg(be, p, msg, sizeof msg) != 0) return rb_fail(err, errlen, "%s: %s", backend, msg);
    if (rb_mkdir_p(out_dir, err, errlen) != 0) return -1;
    pass_bufs B;
    memset(&B, 0, sizeof B);
    attn *a = NULL;
    npy_list *L = callocCheck(1, sizeof *L);
    attn_stat stats[64];
    pass_manifest m = {backend, p, flags, load_dir, be->centroids && p->clusters > 0, 0, 0, 0, stats, 0, L, NULL};
    int rc = pass_inputs(&B, p, load_dir, err, errlen);
    if (rc == 0 && !(a = be->create(p, msg, sizeof msg))) rc = rb_fail(err, errlen, "%s: %s", backend, msg);
    if (rc == 0 && m.has_cen) rc = pass_centroids(&B, be, a, load_dir, &m.cen_loaded, err, errlen);
    char path[4096];
    if (rc == 0 && !m.has_cen && load_dir && rb_exists(rb_path_join(path, sizeof path, load_dir, "centroids_before.npy")))
        fprintf(stderr, "routebench: note: %s has no centroids; %s ignored\n", backend, path);
    if (rc == 0) {
        be->forward(a, B.out, B.q, B.k, B.v, flags & ATTN_TRAIN);
        be->backward(a, B.dq, B.dk, B.dv, B.dout, B.q, B.k, B.v, B.out);
        if (m.has_cen) memcpy(B.cen_after, be->centroids(a), (size_t)p->heads * p->clusters * p->head_dim * sizeof(float));
        if (be->routes) m.width = gather_routes(be, a, 0, &B.members);
        if (be->routes && p->share_qk != 1) m.width_k = gather_routes(be, a, 1, &B.members_k);
        m.nstats = be->stats ? be->stats(a, stats, 64) : 0;
        m.a = a;
        rc = pass_write(&B, &m, out_dir, err, errlen);
    }
    if (narrays) *narrays = L->n;
    free(L);
    if (a) be->destroy(a);
    pass_free(&B);
    return rc;
}
