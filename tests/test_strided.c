/* test_strided.c: the strided backend against dense attention under an
 * explicit mask built here from the Sparse Transformer's definition (Child
 * et al. 2019, section 4.2: A(1)_i = {j : max(0, i-l) <= j <= i}, A(2)_i =
 * {j : (i-j) mod l = 0, j <= i}; mirrored when not causal), recomputed in
 * double (tests/attn_ref.h); every gradient entry against central
 * differences, causal and not, at lengths that are and are not multiples of
 * the stride; `dense` where equals_dense says so; which outputs a perturbed
 * input may move (causality); FLOPs from the same definition; determinism;
 * refused parameters. */
#include "sparse_test.h"

static attn_params params(int B, int H, int n, int d, int l, int sh, int causal) {
    attn_params p;
    attn_params_default(&p);
    p.batch = B, p.heads = H, p.seq = n, p.head_dim = d, p.stride = l, p.strided_heads = sh, p.causal = causal;
    return p;
}

/* The definition: may query i of head h attend key j? */
static int def_sees(const attn_params *p, int h, int i, int j) {
    int l = p->stride, strided = h >= p->heads - p->strided_heads;
    if (p->causal && j > i) return 0;
    if (strided) return (i - j) % l == 0;
    return abs(i - j) <= l;
}

/* One term per query: the keys the definition gives it. */
static ref_pattern *def_patterns(const attn_params *p) {
    int n = p->seq, *keys = mallocCheck(sizeof(int) * (size_t)n);
    ref_pattern *pats = mallocCheck(sizeof(ref_pattern) * (size_t)p->batch * p->heads);
    for (int bh = 0; bh < p->batch * p->heads; bh++) {
        ref_pattern_init(&pats[bh], n);
        for (int i = 0; i < n; i++) {
            int nk = 0;
            for (int j = 0; j < n; j++)
                if (def_sees(p, bh % p->heads, i, j)) keys[nk++] = j;
            ref_add_term(&pats[bh], i, keys, nk);
        }
    }
    free(keys);
    return pats;
}

static void test_reference(int B, int H, int n, int d, int l, int sh, int causal) {
    attn_params p = params(B, H, n, d, l, sh, causal);
    attn *a = tu_make("strided", &p);
    if (!a) {
        ok(0, "reference n=%d l=%d: create", n, l);
        return;
    }
    tu_io io;
    tu_io_make(&io, &p, 100 + (uint64_t)n + (uint64_t)l);
    st_run(a, &io, ATTN_TRAIN);
    ref_pattern *pats = def_patterns(&p);
    char detail[200];
    double e = st_vs_pattern(pats, &p, &io, detail, sizeof detail);
    ok(e <= 2e-5, "strided = the paper's masked dense attention in double: n=%d l=%d (%s) %d of %d heads strided, "
       "causal=%d (%s)", n, l, n % l ? "not a multiple" : "multiple", sh, H, causal, detail);
    st_free_patterns(pats, &p);
    tu_io_free(&io);
    attn_free(a);
}

static void test_fd(int n, int l, int causal) {
    attn_params p = params(1, 2, n, 4, l, 1, causal);
    int t = 0;
    size_t i = 0;
    double e = st_fd_check("strided", &p, 77 + (uint64_t)causal, &t, &i);
    ok(e < 5e-3, "every gradient entry matches central differences: n=%d l=%d (%s) causal=%d (worst %.1e at d%c[%zu])",
       n, l, n % l ? "not a multiple" : "multiple", causal, e, "qkv"[t], i);
}

static void test_check(int n, int d, int l, int causal) {
    attn_params p = params(2, 4, n, d, l, -1, causal);
    attn_check_result r;
    char err[512];
    if (attn_check("strided", &p, &r, err, sizeof err) != 0) {
        ok(0, "attn_check: %s", err);
        return;
    }
    ok(r.pass, "attn_check passes: n=%d d=%d l=%d causal=%d (grad rel err %.1e)", n, d, l, causal, r.grad_rel_err);
}

static void test_dense(void) {
    for (int causal = 0; causal <= 1; causal++) {
        attn_params p = params(2, 3, 90, 16, 89, 0, causal);
        const attn_backend *be = attn_find("strided");
        ok(be->equals_dense(&p), "equals_dense: no strided heads and l = seq - 1");
        double e = st_vs_dense("strided", p);
        ok(e < 1e-5, "l >= seq - 1, no strided heads: equals dense (causal=%d, max diff %.1e)", causal, e);
        p = params(2, 3, 90, 16, 1, 3, causal);
        ok(be->equals_dense(&p), "equals_dense: every head strided with l = 1");
        e = st_vs_dense("strided", p);
        ok(e < 1e-5, "l = 1, every head strided: equals dense (causal=%d, max diff %.1e)", causal, e);
        p = params(2, 4, 90, 16, 200, -1, causal);
        ok(!be->equals_dense(&p), "equals_dense is 0 with strided heads and l > seq (they see only themselves)");
        e = st_vs_dense("strided", p);
        ok(e > 1e-2, "... and the outputs do differ from dense (max diff %.2f)", e);
    }
}

/* Perturb row pos of q, k or v in every head: an output row may change
 * only where the definition lets it see pos (a q row only its own), and
 * must change where it does. Causal: a later row never moves output i. */
static void test_dependence(int n, int l, int causal) {
    attn_params p = params(1, 2, n, 8, l, 1, causal);
    attn *a = tu_make("strided", &p);
    tu_io io;
    tu_io_make(&io, &p, 9);
    float *base = mallocCheck(io.N * sizeof(float)), *o = mallocCheck(io.N * sizeof(float));
    a->be->forward(a, base, io.q, io.k, io.v, ATTN_EVAL);
    int leaks = 0, later = 0, missing = 0, d = p.head_dim;
    for (int t = 0; t < 3; t++)
        for (int pos = 0; pos < n; pos++) {
            tu_forward_perturbed(a, &io, t, pos, o);
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < n; i++) {
                    int may = t == 0 ? i == pos : def_sees(&p, h, i, pos);
                    size_t r0 = ((size_t)h * n + i) * d;
                    int changed = memcmp(base + r0, o + r0, sizeof(float) * (size_t)d) != 0;
                    leaks += changed && !may;
                    later += changed && pos > i;
                    /* a row that sees one key outputs its v whatever q and k are */
                    int single = (h == 1 && i < l) || (h == 0 && i == 0 && causal);
                    missing += !changed && may && !(t != 2 && single);
                }
        }
    ok(leaks == 0 && missing == 0, "causal=%d n=%d l=%d: an output moves exactly when the definition lets it see the "
       "perturbed row (%d moved that must not, %d did not that should)", causal, n, l, leaks, missing);
    if (causal) ok(later == 0, "causal: changing q, k or v after position i never changes output i (%d did)", later);
    free(base), free(o);
    tu_io_free(&io);
    attn_free(a);
}

static void test_flops_bytes(void) {
    const int cases[][4] = {{100, 7, 1, 1}, {100, 7, 1, 0}, {64, 8, 2, 1}, {37, 40, 1, 0}, {50, 1, 2, 1}};
    int bad = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        attn_params p = params(2, 3, cases[c][0], 16, cases[c][1], cases[c][2], cases[c][3]);
        attn *a = tu_make("strided", &p);
        ref_pattern *pats = def_patterns(&p);
        double pairs = 0;
        for (int bh = 0; bh < 6; bh++) pairs += ref_pairs(&pats[bh]);
        double f = a->be->flops(&p, ATTN_PASS_FWD), b = a->be->flops(&p, ATTN_PASS_BWD);
        if (f != 4 * p.head_dim * pairs || b != 8 * p.head_dim * pairs || a->bytes != a->be->act_bytes(&p)) {
            diag("n=%d l=%d: flops %.0f/%.0f, pairs %.0f; bytes %zu vs %zu", p.seq, p.stride, f, b, pairs, a->bytes,
                 a->be->act_bytes(&p));
            bad++;
        }
        st_free_patterns(pats, &p);
        attn_free(a);
    }
    ok(bad == 0, "FLOPs are 4d / 8d per pair of the definition; act_bytes is what the instance holds");
}

static void test_params(void) {
    const attn_backend *be = attn_find("strided");
    ok(be && (be->uses & ATTN_USES_STRIDE), "strided is registered and reads stride, strided_heads");
    if (!be) return;
    char err[256] = "";
    attn_params p = params(1, 4, 1000, 16, 0, -1, 1);
    ok(attn_validate_msg(be, &p, err, sizeof err) == 0 && p.stride == 32 && p.strided_heads == 2,
       "defaults: stride round(sqrt(1000)) = 32 (got %d), half the heads strided (got %d)", p.stride, p.strided_heads);
    rb_err e;
    p = params(1, 4, 100, 16, 8, 5, 1);
    ok(attn_validate(be, &p, &e) != 0 && !strcmp(e.key, "strided_heads"), "strided_heads > heads refused: %s", e.msg);
    p = params(1, 4, 100, 16, -2, 1, 1);
    ok(attn_validate(be, &p, &e) != 0 && !strcmp(e.key, "stride"), "negative stride refused: %s", e.msg);
}

int main(void) {
    test_params();
    for (int causal = 0; causal <= 1; causal++) {
        test_reference(2, 4, 64, 16, 8, 2, causal);
        test_reference(1, 4, 70, 8, 8, 2, causal);
        test_reference(1, 2, 37, 8, 5, 1, causal);
        test_reference(1, 3, 300, 16, 20, 1, causal);  /* bands of 64 rows, several tiles */
        test_reference(1, 2, 300, 8, 3, 1, causal);    /* residue classes of 100 rows: two tiles */
        test_reference(1, 2, 200, 16, 100, 1, causal);
        test_reference(1, 2, 30, 8, 1, 1, causal);
        test_reference(1, 2, 30, 8, 45, 1, causal);
        test_reference(1, 3, 50, 8, 6, 0, causal);
        test_reference(1, 3, 50, 8, 6, 3, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_fd(12, 3, causal);
        test_fd(11, 3, causal);
    }
    for (int causal = 0; causal <= 1; causal++) {
        test_check(128, 16, 16, causal);
        test_check(130, 32, 12, causal);
    }
    test_dense();
    for (int causal = 0; causal <= 1; causal++) test_dependence(30, 7, causal);
    ok(st_deterministic("strided", params(2, 4, 1000, 32, 30, -1, 1)), "bit-identical across runs and 1 or 2 threads");
    test_flops_bytes();
    return tap_done();
}
