/* test_lsh.c: the lsh backend (Reformer LSH attention).
 *  - hashing: the buckets recomputed here in double from the rotations
 *    (lsh_rotations gives the seeded draws; the projection, argmax over
 *    [xR, -xR], sort by bucket then position, chunks and windows are written
 *    here from the paper) equal the membership routes() reports;
 *  - attention: a reference built from that membership alone (per round a
 *    query's chunk window, causal by position, itself only when nothing else
 *    is visible; rounds together in one softmax, which is what combining
 *    them by their log-sum-exp weights is) recomputed in double
 *    (tests/attn_ref.h) equals out, dq, dk, dv;
 *  - every gradient entry against central differences (routes held), causal
 *    and not, lengths that are and are not multiples of the window, 1 and 2
 *    rounds, shared and unshared; `dense` where equals_dense says so;
 *  - causality: with the routes held no later q, k or v moves output i; with
 *    hashing live, v never does, and how often a later q (or k) does (through
 *    the sort moving chunk boundaries) is measured and printed;
 *  - statistics against the independent hashing; FLOPs against pairs counted
 *    from the membership (exact where the count is, within 5% where it is
 *    an expectation); act_bytes; determinism; refused parameters. */
#include "attn/lsh_hash.h"
#include "sparse_test.h"

static attn_params params(int B, int H, int n, int d, int w, int hashes, int buckets, int share, int causal) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.window = w, p.hashes = hashes, p.buckets = buckets;
    p.share_qk = share, p.causal = causal, p.seed = 7;
    return p;
}

/* ---- the hashing, independently ----------------------------------------- */

typedef struct {
    int b, pos;
} bp;

static int cmp_bp(const void *x, const void *y) {
    const bp *a = x, *b = y;
    return a->b != b->b ? (a->b > b->b) - (a->b < b->b) : (a->pos > b->pos) - (a->pos < b->pos);
}

static int cmp_i(const void *x, const void *y) { return (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y); }

/* Bucket of every row of x (n, d) under R (d, nb2), in double. */
static void ind_buckets(int *bucket, const float *x, int n, int d, const float *R, int nb2) {
    for (int i = 0; i < n; i++) {
        int best = 0;
        double bv = -INFINITY;
        for (int j = 0; j < 2 * nb2; j++) {
            double s = 0;
            for (int e = 0; e < d; e++) s += (double)x[(size_t)i * d + e] * R[(size_t)e * nb2 + j % nb2];
            if (j >= nb2) s = -s;
            if (s > bv) bv = s, best = j;
        }
        bucket[i] = nb2 ? best : 0;
    }
}

/* ord (n): positions by (bucket, position), then each chunk of w ascending. */
static void ind_order(int *ord, const int *bucket, int n, int w) {
    bp *v = mallocCheck(sizeof(bp) * (size_t)n);
    for (int i = 0; i < n; i++) v[i] = (bp){bucket[i], i};
    qsort(v, (size_t)n, sizeof(bp), cmp_bp);
    for (int i = 0; i < n; i++) ord[i] = v[i].pos;
    for (int c = 0; c < n; c += w) qsort(ord + c, (size_t)(n - c < w ? n - c : w), sizeof(int), cmp_i);
    free(v);
}

typedef struct {
    int mism;                  /* chunks whose query or key members differ from routes() */
    double smin, smax, lonely; /* bucket sizes, lonely queries (counted) */
} ind_result;

/* Recompute the buckets of head (b, h) in every round and compare the
 * chunks with routes(); accumulate statistics. */
static void ind_head(const attn *a, const tu_io *io, const float *R, int b, int h, ind_result *res) {
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, w = p->window, nb2 = p->buckets / 2, nck = (n + w - 1) / w, sets = p->share_qk ? 1 : 2;
    size_t off = ((size_t)b * p->heads + h) * n * d;
    int *bk[2], *ord[2], *win = mallocCheck(sizeof(int) * 2 * (size_t)w);
    for (int r = 0; r < p->hashes; r++) {
        const float *Rr = R + ((size_t)h * p->hashes + r) * d * nb2;
        for (int s = 0; s < 2; s++) {
            bk[s] = mallocCheck(sizeof(int) * (size_t)n), ord[s] = mallocCheck(sizeof(int) * (size_t)n);
            ind_buckets(bk[s], (s == 0 || sets == 1 ? io->q : io->k) + off, n, d, Rr, nb2);
            ind_order(ord[s], bk[s], n, w);
        }
        int *cnt = callocCheck((size_t)p->buckets, sizeof(int));
        for (int i = 0; i < n; i++) cnt[bk[0][i]]++;
        for (int bb = 0; bb < p->buckets; bb++) res->smin = fmin(res->smin, cnt[bb]), res->smax = fmax(res->smax, cnt[bb]);
        for (int c = 0; c < nck; c++) {
            int mq = n - c * w < w ? n - c * w : w, lo = c > 0 ? (c - 1) * w : c * w, nw = c * w + mq - lo;
            memcpy(win, ord[1] + lo, sizeof(int) * (size_t)nw);
            qsort(win, (size_t)nw, sizeof(int), cmp_i);
            const int *qm, *km;
            int gq = a->be->routes(a, b, h, r * nck + c, 0, &qm), gk = a->be->routes(a, b, h, r * nck + c, 1, &km);
            res->mism += gq != mq || gk != nw || memcmp(qm, ord[0] + c * w, sizeof(int) * (size_t)mq) ||
                         memcmp(km, win, sizeof(int) * (size_t)nw);
            for (int t = 0; t < mq; t++) { /* a query with no other key of its bucket in its window */
                int i = ord[0][c * w + t], mates = 0;
                for (int j = 0; j < nw; j++) mates += bk[1][win[j]] == bk[0][i] && !(sets == 1 && win[j] == i);
                res->lonely += mates == 0;
            }
        }
        free(cnt);
        for (int s = 0; s < 2; s++) free(bk[s]), free(ord[s]);
    }
    free(win);
}

/* ---- the attention, from the membership --------------------------------- */

/* One term per query: over the rounds, the keys of each chunk window that
 * holds it, visible by position when causal, itself left out (shared) when
 * it sees anything else in that round. */
static ref_pattern *member_patterns(const attn *a) {
    const attn_params *p = &a->p;
    int n = p->seq, cap = 2 * p->window * p->hashes, K = p->clusters;
    int *keys = mallocCheck(sizeof(int) * (size_t)n * cap), *nk = mallocCheck(sizeof(int) * (size_t)n);
    ref_pattern *pats = mallocCheck(sizeof(ref_pattern) * (size_t)p->batch * p->heads);
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->heads; h++) {
            ref_pattern *pt = &pats[b * p->heads + h];
            ref_pattern_init(pt, n);
            pt->shared = p->share_qk == 1;
            memset(nk, 0, sizeof(int) * (size_t)n);
            for (int c = 0; c < K; c++) {
                const int *qm, *km;
                int mq = a->be->routes(a, b, h, c, 0, &qm), mk = a->be->routes(a, b, h, c, 1, &km);
                for (int t = 0; t < mq; t++) {
                    int i = qm[t], *dst = keys + (size_t)i * cap + nk[i], v = 0, self = 0;
                    for (int j = 0; j < mk; j++)
                        if (!p->causal || km[j] <= i) dst[v++] = km[j], self |= km[j] == i;
                    if (pt->shared && self && v > 1) {
                        int u = 0;
                        for (int j = 0; j < v; j++)
                            if (dst[j] != i) dst[u++] = dst[j];
                        v = u;
                    }
                    nk[i] += v;
                }
            }
            for (int i = 0; i < n; i++) ref_add_term(pt, i, keys + (size_t)i * cap, nk[i]);
        }
    free(keys), free(nk);
    return pats;
}

static double stat_of(const attn *a, const char *name) {
    attn_stat st[16];
    int m = a->be->stats(a, st, 16);
    for (int i = 0; i < m; i++)
        if (!strcmp(st[i].name, name)) return st[i].value;
    return NAN;
}

/* Hashing, statistics and attention of one configuration. */
static void test_reference(int B, int H, int n, int d, int w, int hashes, int buckets, int share, int causal) {
    attn_params p = params(B, H, n, d, w, hashes, buckets, share, causal);
    attn *a = tu_make("lsh", &p);
    if (!a) {
        ok(0, "create");
        return;
    }
    tu_io io;
    tu_io_make(&io, &p, 500 + (uint64_t)n + (uint64_t)hashes);
    st_run(a, &io, ATTN_TRAIN);
    char what[160];
    snprintf(what, sizeof what, "n=%d w=%d (%s) hashes=%d buckets=%d %s causal=%d", n, p.window,
             n % p.window ? "not a multiple" : "multiple", hashes, p.buckets, share ? "shared" : "unshared", causal);
    float *R = mallocCheck(sizeof(float) * (size_t)H * hashes * d * (p.buckets / 2) + 1);
    lsh_rotations(R, p.seed, H, hashes, d, p.buckets / 2);
    ind_result res = {0, INFINITY, 0, 0};
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) ind_head(a, &io, R, b, h, &res);
    double queries = (double)B * H * hashes * n;
    ok(res.mism == 0, "%s: routes() = the chunks of the buckets recomputed in double (%d differ)", what, res.mism);
    ok(res.smin == stat_of(a, "bucket_size_min") && res.smax == stat_of(a, "bucket_size_max") &&
           fabs(res.lonely / queries - stat_of(a, "lonely_share")) < 1e-12,
       "%s: statistics: bucket sizes %g..%g, lonely share %.4f (recomputed %g..%g, %.4f)", what,
       stat_of(a, "bucket_size_min"), stat_of(a, "bucket_size_max"), stat_of(a, "lonely_share"), res.smin, res.smax,
       res.lonely / queries);
    ref_pattern *pats = member_patterns(a);
    char detail[200];
    double e = st_vs_pattern(pats, &p, &io, detail, sizeof detail), pairs = 0;
    ok(e <= 3e-5, "%s: out and gradients = the membership's attention in double (%s)", what, detail);
    for (int bh = 0; bh < B * H; bh++) pairs += ref_pairs(&pats[bh]);
    ok(fabs(pairs / queries - stat_of(a, "pairs_per_query")) < 1e-9, "%s: pairs_per_query %.3f = counted %.3f", what,
       stat_of(a, "pairs_per_query"), pairs / queries);
    st_free_patterns(pats, &p);
    free(R);
    tu_io_free(&io);
    attn_free(a);
}

static void test_fd(int n, int w, int hashes, int share, int causal) {
    attn_params p = params(1, 2, n, 4, w, hashes, 0, share, causal);
    int t = 0;
    size_t i = 0;
    double e = st_fd_check("lsh", &p, 78 + (uint64_t)causal, &t, &i);
    ok(e < 5e-3, "every gradient entry matches central differences: n=%d w=%d (%s) buckets=%d hashes=%d %s causal=%d "
       "(worst %.1e at d%c[%zu])", n, w, n % w ? "not a multiple" : "multiple", p.buckets, hashes,
       share ? "shared" : "unshared", causal, e, "qkv"[t], i);
}

static void test_check(int n, int d, int w, int hashes, int causal) {
    attn_params p = params(2, 2, n, d, w, hashes, 0, -1, causal);
    attn_check_result r;
    char err[512];
    int rc = attn_check("lsh", &p, &r, err, sizeof err);
    ok(rc == 0 && r.pass, "attn_check passes: n=%d d=%d w=%d hashes=%d causal=%d (grad rel err %.1e)", n, d, w, hashes,
       causal, rc ? NAN : r.grad_rel_err);
}

static void test_dense(void) {
    const attn_backend *be = attn_find("lsh");
    for (int causal = 0; causal <= 1; causal++) {
        attn_params p = params(2, 3, 90, 16, 90, 1, 1, 0, causal);
        ok(be->equals_dense(&p), "equals_dense: one bucket, one chunk, unshared keys");
        double e = st_vs_dense("lsh", p);
        ok(e < 1e-5, "one bucket, one chunk = seq, unshared: equals dense (causal=%d, max diff %.1e)", causal, e);
        p = params(2, 3, 90, 16, 90, 1, 1, 1, causal);
        ok(!be->equals_dense(&p), "equals_dense is 0 with shared keys (normalised, no self-attention)");
        p = params(2, 3, 90, 16, 45, 1, 1, 0, causal);
        ok(!be->equals_dense(&p), "equals_dense is 0 with two chunks");
    }
}

/* Perturb row pos of q, k or v; count output rows i < pos that move. With
 * the routes held (keep) none may; with hashing live v may not either. */
static void dependence(attn *a, tu_io *io, int keep, long moved[3], long *probes) {
    const attn_params *p = &a->p;
    int n = p->seq, d = p->head_dim, H = p->heads;
    float *base = mallocCheck(io->N * sizeof(float)), *o = mallocCheck(io->N * sizeof(float));
    float *saved = mallocCheck(sizeof(float) * (size_t)H * d);
    a->be->forward(a, base, io->q, io->k, io->v, ATTN_EVAL);
    float *xs[3] = {io->q, io->k, io->v};
    *probes = 0;
    for (int t = 0; t < 3; t++) {
        moved[t] = 0;
        for (int pos = 1; pos < n; pos++) {
            for (int h = 0; h < H; h++)
                for (int e = 0; e < d; e++) {
                    float *x = &xs[t][((size_t)h * n + pos) * d + e];
                    saved[h * d + e] = *x, *x += 1.0f;
                }
            a->be->forward(a, o, io->q, io->k, io->v, keep ? ATTN_KEEP_ROUTES : ATTN_EVAL);
            for (int h = 0; h < H; h++)
                for (int e = 0; e < d; e++) xs[t][((size_t)h * n + pos) * d + e] = saved[h * d + e];
            for (int h = 0; h < H; h++)
                for (int i = 0; i < pos; i++) {
                    size_t r0 = ((size_t)h * n + i) * d;
                    moved[t] += memcmp(base + r0, o + r0, sizeof(float) * (size_t)d) != 0;
                    *probes += t == 0;
                }
        }
    }
    a->be->forward(a, o, io->q, io->k, io->v, ATTN_EVAL); /* routes back to the unperturbed input */
    free(base), free(o), free(saved);
}

static void test_causality(int share) {
    attn_params p = params(1, 2, 96, 8, 16, 2, 0, share, 1);
    attn *a = tu_make("lsh", &p);
    tu_io io;
    tu_io_make(&io, &p, 21);
    long held[3], live[3], probes;
    dependence(a, &io, 1, held, &probes);
    ok(held[0] + held[1] + held[2] == 0, "%s, routes held: a later q, k or v never moves output i (%ld, %ld, %ld moved)",
       share ? "shared" : "unshared", held[0], held[1], held[2]);
    dependence(a, &io, 0, live, &probes);
    ok(live[2] == 0, "%s, hashing live: a later v never moves output i (%ld moved)", share ? "shared" : "unshared",
       live[2]);
    diag("%s, hashing live, n=96 w=16 buckets=%d hashes=2: a later q moved %.1f%% of earlier outputs, a later k "
         "%.1f%% (of %ld pairs): the sort moves chunk boundaries", share ? "shared" : "unshared", p.buckets,
         100.0 * live[0] / probes, 100.0 * live[1] / probes, probes);
    tu_io_free(&io);
    attn_free(a);
}

/* FLOPs against the pairs the membership attends, plus the hashing. */
static void test_flops(int n, int w, int buckets, int share, int causal, double tol) {
    attn_params p = params(2, 2, n, 32, w, 2, buckets, share, causal);
    attn *a = tu_make("lsh", &p);
    tu_io io;
    tu_io_make(&io, &p, 31);
    a->be->forward(a, io.out, io.q, io.k, io.v, ATTN_EVAL);
    ref_pattern *pats = member_patterns(a);
    double pairs = 0;
    for (int bh = 0; bh < 4; bh++) pairs += ref_pairs(&pats[bh]);
    double hash = p.buckets > 1 ? 4.0 * p.hashes * (share ? 1 : 2) * n * p.head_dim * p.buckets : 0;
    double f = a->be->flops(&p, ATTN_PASS_FWD), b = a->be->flops(&p, ATTN_PASS_BWD);
    double ef = fabs(f - (4 * p.head_dim * pairs + hash)) / f, eb = fabs(b - 8 * p.head_dim * pairs) / b;
    ok(ef <= tol && eb <= tol, "n=%d w=%d buckets=%d %s causal=%d: flops within %.0f%% of the attended pairs + hashing "
       "(%.2f%%, %.2f%%)", n, w, p.buckets, share ? "shared" : "unshared", causal, 100 * tol, 100 * ef, 100 * eb);
    ok(a->bytes == a->be->act_bytes(&p), "act_bytes %zu = held %zu", a->be->act_bytes(&p), a->bytes);
    st_free_patterns(pats, &p);
    tu_io_free(&io);
    attn_free(a);
}

static void test_params(void) {
    const attn_backend *be = attn_find("lsh");
    ok(be && be->routes && (be->uses & ATTN_USES_HASH), "lsh is registered, reads hashes and buckets, has routes()");
    if (!be) return;
    rb_err e;
    attn_params p = params(1, 2, 1000, 16, 0, 1, 0, -1, 1);
    ok(attn_validate(be, &p, &e) == 0 && p.window == 64 && p.buckets == 14 && p.share_qk == 1 && p.clusters == 16,
       "defaults: window 64, buckets 1000/64 rounded down to even = 14, shared QK, 16 chunks (got %d %d %d %d)",
       p.window, p.buckets, p.share_qk, p.clusters);
    p = params(1, 2, 100, 16, 64, 1, 0, -1, 1);
    ok(attn_validate(be, &p, &e) == 0 && p.buckets == 1, "seq < 2 windows: one bucket (got %d)", p.buckets);
    p = params(1, 2, 100, 16, 10, 1, 5, -1, 1);
    ok(attn_validate(be, &p, &e) != 0 && !strcmp(e.key, "buckets"), "odd buckets refused: %s", e.msg);
    p = params(1, 2, 100, 16, 10, 1, 102, -1, 1);
    ok(attn_validate(be, &p, &e) != 0 && !strcmp(e.key, "buckets"), "buckets > seq refused: %s", e.msg);
}

int main(void) {
    test_params();
    for (int causal = 0; causal <= 1; causal++)
        for (int share = 1; share >= 0; share--) {
            test_reference(2, 2, 128, 16, 16, 1, 0, share, causal);
            test_reference(1, 2, 100, 16, 16, 2, 0, share, causal); /* short last chunk */
            test_reference(1, 3, 150, 8, 32, 3, 4, share, causal);
            test_reference(1, 2, 200, 16, 100, 1, 2, share, causal); /* chunk > 64 rows: two score tiles */
            test_reference(1, 2, 40, 8, 40, 2, 1, share, causal);    /* one bucket, one chunk */
        }
    for (int causal = 0; causal <= 1; causal++)
        for (int share = 1; share >= 0; share--) {
            test_fd(12, 4, 1, share, causal);
            test_fd(11, 4, 2, share, causal);
        }
    for (int causal = 0; causal <= 1; causal++) {
        test_check(128, 16, 16, 1, causal);
        test_check(100, 32, 16, 2, causal);
    }
    test_dense();
    test_causality(1);
    test_causality(0);
    ok(st_deterministic("lsh", params(2, 2, 1000, 32, 64, 2, 0, -1, 1)), "bit-identical across runs and 1 or 2 threads");
    for (int share = 1; share >= 0; share--)
        for (int causal = 0; causal <= 1; causal++) {
            test_flops(300, 32, 1, share, causal, 1e-12); /* exact */
            test_flops(2048, 64, 0, share, causal, causal ? 0.05 : 1e-12);
        }
    return tap_done();
}
