/* checkpoint.c: the file format of checkpoint.h, little-endian as the host:
 *   header  (magic u64, version u32, header bytes u32, config hash u64,
 *            step u64, rng state u64, nparams u64, ncentroid u64, checksum u64)
 *   params, adam m, adam v   (nparams float32 each)
 *   centroids                (ncentroid float32: every layer whose backend has
 *                             the optional centroids() accessor, in order)
 * The checksum is FNV-1a over all the arrays, so a file that was cut or
 * overwritten in the middle is refused even when its size looks right. */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint64_t magic;
    uint32_t version, header_bytes;
    uint64_t config_hash, step, rng, nparams, ncentroid, checksum;
} ckpt_header;

/* Centroid floats of layer l (0 when its backend keeps none). The accessor
 * itself is only called (ptr non-NULL) when the values are read or written,
 * since calling it marks the centroids initialised. */
static size_t layer_centroids(const model *m, int l, float **ptr) {
    attn *a = m->att[l];
    if (!a->be->centroids) return 0;
    if (ptr) *ptr = a->be->centroids(a);
    return (size_t)a->p.heads * a->p.clusters * a->p.head_dim;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int checkpoint_save(const char *path, const model *m, int step, const rb_rng *rng, uint64_t config_hash,
                    char *err, size_t errlen) {
    size_t bytes = m->nparams * sizeof(float);
    ckpt_header h = {CHECKPOINT_MAGIC, CHECKPOINT_VERSION, sizeof(ckpt_header), config_hash, (uint64_t)step,
                     rng->s, m->nparams, 0, 0};
    uint64_t cs = 0xcbf29ce484222325ull;
    cs = fnv(cs, m->params_mem, bytes);
    cs = fnv(cs, m->m_mem, bytes);
    cs = fnv(cs, m->v_mem, bytes);
    for (int l = 0; l < m->L; l++) {
        float *c;
        size_t n = layer_centroids(m, l, &c);
        if (n) cs = fnv(cs, c, n * sizeof(float));
        h.ncentroid += n;
    }
    h.checksum = cs;

    size_t plen = strlen(path) + 32;
    char *tmp = mallocCheck(plen);
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rb_fail(err, errlen, "checkpoint: cannot write '%s' (%s)", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int okw = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(m->params_mem, 1, bytes, f) == bytes &&
              fwrite(m->m_mem, 1, bytes, f) == bytes && fwrite(m->v_mem, 1, bytes, f) == bytes;
    for (int l = 0; l < m->L && okw; l++) {
        float *c;
        size_t n = layer_centroids(m, l, &c);
        if (n) okw = fwrite(c, sizeof(float), n, f) == n;
    }
    okw = (fflush(f) == 0) && okw;
    okw = (fsync(fileno(f)) == 0) && okw;
    okw = (fclose(f) == 0) && okw;
    if (!okw) {
        rb_fail(err, errlen, "checkpoint: writing '%s' failed (%s)", tmp, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        rb_fail(err, errlen, "checkpoint: cannot rename '%s' to '%s' (%s)", tmp, path, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

int checkpoint_load(const char *path, model *m, int *step, rb_rng *rng, uint64_t config_hash, char *err,
                    size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return rb_fail(err, errlen, "checkpoint: cannot open '%s' (%s)", path, strerror(errno));
    ckpt_header h;
    size_t hgot = fread(&h, 1, sizeof h, f);
    if (hgot >= sizeof h.magic && h.magic != CHECKPOINT_MAGIC) {
        fclose(f);
        return rb_fail(err, errlen, "checkpoint: '%s' is not a routebench checkpoint (bad magic)", path);
    }
    if (hgot != sizeof h) {
        fclose(f);
        return rb_fail(err, errlen, "checkpoint: '%s' is truncated (no complete header)", path);
    }
    if (h.version != CHECKPOINT_VERSION || h.header_bytes != sizeof h) {
        fclose(f);
        return rb_fail(err, errlen, "checkpoint: '%s' has format version %u, this build reads %u", path,
                       (unsigned)h.version, CHECKPOINT_VERSION);
    }
    if (h.config_hash != config_hash || h.nparams != m->nparams) {
        fclose(f);
        return rb_fail(err, errlen,
                       "checkpoint: '%s' was written for another configuration (hash %016llx, %llu parameters; "
                       "this run: %016llx, %zu parameters)",
                       path, (unsigned long long)h.config_hash, (unsigned long long)h.nparams,
                       (unsigned long long)config_hash, m->nparams);
    }
    size_t ncent = 0;
    for (int l = 0; l < m->L; l++) ncent += layer_centroids(m, l, NULL);
    if (h.ncentroid != ncent) {
        fclose(f);
        return rb_fail(err, errlen, "checkpoint: '%s' holds %llu centroid values, this model %zu", path,
                       (unsigned long long)h.ncentroid, ncent);
    }
    size_t bytes = m->nparams * sizeof(float), total = 3 * bytes + ncent * sizeof(float);
    float *buf = malloc(total);
    if (!buf) {
        fclose(f);
        return rb_fail(err, errlen, "checkpoint: out of memory reading '%s'", path);
    }
    size_t got = fread(buf, 1, total, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != total) {
        free(buf);
        return rb_fail(err, errlen, "checkpoint: '%s' is truncated (%zu of %zu data bytes)", path, got, total);
    }
    if (extra) {
        free(buf);
        return rb_fail(err, errlen, "checkpoint: '%s' is longer than its header says", path);
    }
    if (fnv(0xcbf29ce484222325ull, buf, total) != h.checksum) {
        free(buf);
        return rb_fail(err, errlen, "checkpoint: '%s' is corrupt (checksum mismatch)", path);
    }
    memcpy(m->params_mem, buf, bytes);
    memcpy(m->m_mem, (char *)buf + bytes, bytes);
    memcpy(m->v_mem, (char *)buf + 2 * bytes, bytes);
    const float *src = (const float *)((char *)buf + 3 * bytes);
    for (int l = 0; l < m->L; l++) {
        float *c;
        size_t n = layer_centroids(m, l, &c);
        if (n) memcpy(c, src, n * sizeof(float));
        src += n;
    }
    free(buf);
    *step = (int)h.step;
    rng->s = h.rng;
    return 0;
}
