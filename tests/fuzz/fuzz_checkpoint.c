/* fuzz_checkpoint.c: the checkpoint reader (core/model/checkpoint.c) as
 * `train --load`, `analyze` and `export` use it: checkpoint_read_config (the
 * header, the configuration section, its key=value text) and, for a small
 * model, checkpoint_model (the model that configuration makes, and
 * checkpoint_load's size and checksum checks into it).
 *
 * Each input is read twice through a memory file: as it is, and repaired:
 * the checksums and the configuration hash recomputed, the parameter count
 * set to what the stored configuration makes and the arrays cut or padded to
 * that size, as a deliberate forger would (FNV-1a is no signature). Without
 * the repair every mutation of the text would stop at a checksum; with it
 * the fuzzer reaches the configuration parser and the loader. */
#include "fuzz.h"
#include "fuzz_config.h"

#include "model/checkpoint.h"
#include "model/model.h"
#include "model/train.h"
#include "util/hash.h"

/* checkpoint.c's layout */
typedef struct {
    uint64_t magic;
    uint32_t version, header_bytes;
    uint64_t config_hash, step, rng, nparams, ncentroid, checksum;
} ckpt_header;
_Static_assert(sizeof(ckpt_header) == 64, "checkpoint.c's header is 64 bytes");

#define MAX_PARAMS (1u << 18)      /* a model this small is built */
#define MAX_ACT_BYTES (16u << 20)  /* nor more activations than this (a rough bound) */

/* A configuration small enough to build a model from quickly. */
static int small_model(const train_config *cin) {
    train_config *c = malloc(sizeof *c);
    if (!c) abort();
    *c = *cin;
    char err[1024];
    int ok = train_config_check(c, err, sizeof err) == 0;
    if (ok) {
        fuzz_check_config_ranges(c);
        double B = c->batch, T = c->seq, C = c->d_model, L = c->layers, F = (double)c->mlp_mult * c->d_model;
        double act = 4.0 * B * T * (L * (16.0 * C + 2.0 * F + 2.0 * c->heads * T) + 2.0 * c->vocab);
        ok = model_param_sizes(c, NULL) <= MAX_PARAMS && act <= MAX_ACT_BYTES;
    }
    free(c);
    return ok;
}

/* The checks a reader makes, on path. */
static void read_all(const char *path) {
    char err[1024];
    train_config *c = malloc(sizeof *c);
    if (!c) abort();
    int rc = checkpoint_read_config(path, c, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1 || rc == CHECKPOINT_NO_CONFIG);
    if (rc == 0 && small_model(c)) {
        int step = -1;
        model *m = checkpoint_model(c, path, &step, "fuzz", err, sizeof err);
        if (m) {
            FUZZ_CHECK(m->nparams <= MAX_PARAMS);
            model_free(m);
        }
    }
    free(c);
}

/* The input made self-consistent (see the top). Returns a new buffer, *len its size. */
static uint8_t *repair(const uint8_t *data, size_t size, size_t *len) {
    if (size < sizeof(ckpt_header) + 16) return NULL;
    ckpt_header h;
    memcpy(&h, data, sizeof h);
    if (h.version != 2 || h.header_bytes != sizeof h) return NULL;
    uint64_t sec[2];
    memcpy(sec, data + sizeof h, sizeof sec);
    size_t room = size - sizeof h - sizeof sec;
    if (sec[0] > room) sec[0] = room;
    size_t tl = (size_t)sec[0];
    const uint8_t *text = data + sizeof h + sizeof sec;
    sec[1] = rb_fnv1a(RB_FNV_BASIS, text, tl);
    /* the configuration as checkpoint_read_config will read it */
    char *t = fuzz_cstr(text, tl), err[1024];
    train_config *c = malloc(sizeof *c);
    if (!c) abort();
    train_config_default(c);
    size_t arrays = size - sizeof h - sizeof sec - tl;
    if (strlen(t) == tl && train_config_from_text(c, t, err, sizeof err) == 0) {
        h.config_hash = train_config_hash(c);
        if (small_model(c)) {
            train_config *cc = malloc(sizeof *cc);
            if (!cc) abort();
            *cc = *c;
            if (train_config_check(cc, err, sizeof err) == 0) h.nparams = model_param_sizes(cc, NULL);
            free(cc);
        }
    }
    free(c);
    free(t);
    if (h.nparams <= MAX_PARAMS && h.ncentroid <= MAX_PARAMS) arrays = (size_t)(3 * h.nparams + h.ncentroid) * 4;
    *len = sizeof h + sizeof sec + tl + arrays;
    uint8_t *out = calloc(1, *len);
    if (!out) abort();
    size_t have = size - sizeof h - sizeof sec - tl;
    memcpy(out + sizeof h + sizeof sec, text, tl);
    memcpy(out + sizeof h + sizeof sec + tl, text + tl, have < arrays ? have : arrays);
    uint64_t cs = rb_fnv1a(RB_FNV_BASIS, sec, sizeof sec);
    cs = rb_fnv1a(cs, text, tl);
    h.checksum = rb_fnv1a(cs, out + sizeof h + sizeof sec + tl, arrays);
    memcpy(out, &h, sizeof h);
    memcpy(out + sizeof h, sec, sizeof sec);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    read_all(fuzz_memfile(0, data, size));
    size_t len = 0;
    uint8_t *fixed = repair(data, size, &len);
    if (fixed) {
        read_all(fuzz_memfile(0, fixed, len));
        free(fixed);
    }
    return 0;
}
