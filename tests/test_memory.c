/* test_memory.c: every backend's act_bytes is what its instance really
 * holds. For each registered backend, at two sizes, the heap growth that
 * creating an instance causes (glibc's mallinfo2: bytes in use in every
 * arena plus mmapped blocks; under AddressSanitizer its allocator's count)
 * must be within 5% of act_bytes(p) and equal to
 * the instance's own `bytes`; a forward and backward pass afterwards must
 * not grow the heap (instances own every buffer they use). A buffer added to
 * a backend without being counted moves the measured growth away from the
 * analytic figure and fails here. */
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "tap.h"
#include "util/common.h"
#include "util/threads.h"

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer replaces malloc and mallinfo2 reads zeros: its own
 * allocator counts the bytes in use instead. */
size_t __sanitizer_get_current_allocated_bytes(void); /* libasan's (gcc has no header for it) */
static double heap_bytes(void) { return (double)__sanitizer_get_current_allocated_bytes(); }
#else
static double heap_bytes(void) {
    struct mallinfo2 m = mallinfo2();
    return (double)m.uordblks + (double)m.hblkhd;
}
#endif

static void make_params(attn_params *p, int seq) {
    attn_params_default(p);
    p->batch = 1, p->heads = 2, p->head_dim = 32, p->seq = seq;
}

/* One forward and backward of a, on inputs of its size. */
static void one_pass(attn *a, float **buf, size_t N) {
    rb_rng r;
    rb_rng_seed(&r, 5);
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; j < N; j++) buf[i][j] = (float)rb_rng_uniform(&r) - 0.5f;
    a->be->forward(a, buf[3], buf[0], buf[1], buf[2], ATTN_TRAIN);
    a->be->backward(a, buf[5], buf[6], buf[7], buf[4], buf[0], buf[1], buf[2], buf[3]);
}

static void check_size(const attn_backend *be, int seq) {
    attn_params p;
    make_params(&p, seq);
    char err[512];
    if (attn_validate_msg(be, &p, err, sizeof err) != 0) {
        skip("%s at seq %d: %s", be->name, seq, err);
        return;
    }
    size_t N = (size_t)p.batch * p.heads * p.seq * p.head_dim;
    float *buf[8];
    for (int i = 0; i < 8; i++) buf[i] = mallocCheck(N * sizeof(float));
    /* a first instance warms the runtime (OpenMP team, BLAS buffers) */
    attn *warm = be->create(&p, err, sizeof err);
    if (warm) one_pass(warm, buf, N), be->destroy(warm);

    double before = heap_bytes();
    attn *a = be->create(&p, err, sizeof err);
    double grown = heap_bytes() - before, want = (double)be->act_bytes(&p);
    ok(a != NULL, "%s seq %d: created (%s)", be->name, seq, a ? "ok" : err);
    if (!a) goto done;
    ok(fabs(grown - want) <= 0.05 * want,
       "%s seq %d: act_bytes %.0f within 5%% of the heap an instance takes, %.0f (%.2f%%)", be->name, seq, want,
       grown, 100.0 * (grown - want) / want);
    ok(a->bytes == be->act_bytes(&p), "%s seq %d: the instance's bytes (%zu) equal act_bytes (%zu)", be->name, seq,
       a->bytes, be->act_bytes(&p));
    double mid = heap_bytes();
    one_pass(a, buf, N);
    double pass = heap_bytes() - mid;
    ok(fabs(pass) <= 0.01 * want + 4096, "%s seq %d: a forward and backward take no heap (%.0f bytes)", be->name, seq,
       pass);
    be->destroy(a);
done:
    for (int i = 0; i < 8; i++) free(buf[i]);
}

int main(void) {
    rb_set_threads(2);
    for (int i = 0; i < attn_count(); i++) {
        const attn_backend *be = attn_get(i);
        check_size(be, 1024);
        check_size(be, 3000);
    }
    return tap_done();
}
