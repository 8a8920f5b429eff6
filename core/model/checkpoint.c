/* checkpoint.c: the file format of checkpoint.h, little-endian as the host:
 *   header  (magic u64, version u32, header bytes u32, config hash u64,
 *            step u64, rng state u64, nparams u64, ncentroid u64, checksum u64)
 *   config  (version 2 only: text bytes u64, FNV-1a of the text u64, the
 *            text of train_config_to_text without a NUL)
 *   params, adam m, adam v   (nparams float32 each)
 *   centroids                (ncentroid float32: every layer whose backend has
 *                             the optional centroids() accessor, in order)
 * The checksum is FNV-1a over the config section and all the arrays, so a
 * file that was cut or overwritten in the middle is refused even when its
 * size looks right; the config section carries its own checksum too, so
 * checkpoint_read_config can trust the text without reading the arrays. */
#include "model/checkpoint.h"

#include "util/fsutil.h"
#include "util/hash.h"

#include <errno.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint64_t magic;
    uint32_t version, header_bytes;
    uint64_t config_hash, step, rng, nparams, ncentroid, checksum;
} ckpt_header;

#define FNV0 RB_FNV_BASIS
/* No real configuration text comes near this; a bigger length is a foreign file. */
#define CKPT_MAX_TEXT (1u << 20)

/* Centroid floats of layer l (0 when its backend keeps none). The accessor
 * itself is only called (ptr non-NULL) when the values are read or written,
 * since calling it marks the centroids initialised. */
static size_t layer_centroids(const model *m, int l, float **ptr) {
    attn *a = m->att[l];
    if (!a->be->centroids) return 0;
    if (ptr) *ptr = a->be->centroids(a);
    return (size_t)a->p.heads * a->p.clusters * a->p.head_dim;
}

#define fnv rb_fnv1a /* util/hash.h: the project's one hash */

/* PATH.tmp.PID files of processes that are gone: a save killed between
 * writing the temporary and renaming it. Removed before the next save. */
static void remove_stale_temps(const char *path) {
    char dir[4096], prefix[1024];
    rb_dirname(dir, sizeof dir, path);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    size_t pl = strlen(prefix);
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, prefix, pl) != 0) continue;
        char *end;
        long pid = strtol(de->d_name + pl, &end, 10);
        if (*end || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno == EPERM) continue;
        char full[5200];
        rb_path_join(full, sizeof full, dir, de->d_name);
        remove(full);
    }
    closedir(d);
}

int checkpoint_save(const char *path, const model *m, int step, const rb_rng *rng, const train_config *c,
                    char *err, size_t errlen) {
    size_t bytes = m->nparams * sizeof(float);
    /* where the run was loaded from and saved to is the run's, not the
     * model's: left out, so a resumed run writes the same file as an
     * uninterrupted one */
    train_config cs_c = *c;
    cs_c.load[0] = cs_c.save[0] = 0;
    cs_c.save_every = cs_c.stop_after = 0;
    char *text = mallocCheck(TRAIN_CONFIG_TEXT_LEN);
    int tl = train_config_to_text(&cs_c, text, TRAIN_CONFIG_TEXT_LEN);
    if (tl < 0) {
        free(text);
        return rb_fail(err, errlen, "checkpoint: the configuration cannot be written as text (a value with a newline?)");
    }
    uint64_t sec[2] = {(uint64_t)tl, fnv(FNV0, text, (size_t)tl)};
    ckpt_header h = {CHECKPOINT_MAGIC, CHECKPOINT_VERSION, sizeof(ckpt_header), train_config_hash(c),
                     (uint64_t)step, rng->s, m->nparams, 0, 0};
    uint64_t cs = fnv(FNV0, sec, sizeof sec);
    cs = fnv(cs, text, (size_t)tl);
    cs = fnv(cs, m->params_mem, bytes);
    cs = fnv(cs, m->m_mem, bytes);
    cs = fnv(cs, m->v_mem, bytes);
    for (int l = 0; l < m->L; l++) {
        float *cp;
        size_t n = layer_centroids(m, l, &cp);
        if (n) cs = fnv(cs, cp, n * sizeof(float));
        h.ncentroid += n;
    }
    h.checksum = cs;

    size_t plen = strlen(path) + 32;
    remove_stale_temps(path);
    char *tmp = mallocCheck(plen);
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rb_fail(err, errlen, "checkpoint: cannot write '%s' (%s)", tmp, strerror(errno));
        free(tmp);
        free(text);
        return -1;
    }
    int okw = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(sec, sizeof sec, 1, f) == 1 &&
              fwrite(text, 1, (size_t)tl, f) == (size_t)tl && fwrite(m->params_mem, 1, bytes, f) == bytes &&
              fwrite(m->m_mem, 1, bytes, f) == bytes && fwrite(m->v_mem, 1, bytes, f) == bytes;
    for (int l = 0; l < m->L && okw; l++) {
        float *cp;
        size_t n = layer_centroids(m, l, &cp);
        if (n) okw = fwrite(cp, sizeof(float), n, f) == n;
    }
    okw = (fflush(f) == 0) && okw;
    okw = (fsync(fileno(f)) == 0) && okw;
    okw = (fclose(f) == 0) && okw;
    free(text);
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

/* Read and check the header and (version 2) the config section of f. On
 * success *text is the configuration text, NUL-terminated (NULL for version
 * 1; the caller frees it), *cs the checksum so far (over the config section)
 * and *data_off the offset of the arrays. 0, or -1 with a message; f is left
 * open either way. */
static int read_head(FILE *f, const char *path, ckpt_header *h, char **text, uint64_t *cs, uint64_t *data_off,
                     char *err, size_t errlen) {
    *text = NULL;
    *cs = FNV0;
    size_t hgot = fread(h, 1, sizeof *h, f);
    if (hgot == 0 && ferror(f)) return rb_fail(err, errlen, "checkpoint: cannot read '%s' (%s)", path, strerror(errno));
    if (hgot >= sizeof h->magic && h->magic != CHECKPOINT_MAGIC)
        return rb_fail(err, errlen, "checkpoint: '%s' is not a routebench checkpoint (bad magic)", path);
    if (hgot != sizeof *h) return rb_fail(err, errlen, "checkpoint: '%s' is truncated (no complete header)", path);
    if ((h->version != 1 && h->version != 2) || h->header_bytes != sizeof *h)
        return rb_fail(err, errlen, "checkpoint: '%s' has format version %u, this build reads 1 to %u", path,
                       (unsigned)h->version, CHECKPOINT_VERSION);
    /* sizes of a foreign or damaged header must not overflow the size sums below */
    if (h->nparams > (1ull << 40) || h->ncentroid > (1ull << 40))
        return rb_fail(err, errlen, "checkpoint: '%s' has an implausible header (%llu parameters)", path,
                       (unsigned long long)h->nparams);
    *data_off = sizeof *h;
    if (h->version == 1) return 0;
    uint64_t sec[2];
    if (fread(sec, sizeof sec, 1, f) != 1)
        return rb_fail(err, errlen, "checkpoint: '%s' is truncated (no complete configuration section)", path);
    if (sec[0] > CKPT_MAX_TEXT)
        return rb_fail(err, errlen, "checkpoint: '%s' is corrupt (configuration of %llu bytes)", path,
                       (unsigned long long)sec[0]);
    char *t = malloc((size_t)sec[0] + 1);
    if (!t) return rb_fail(err, errlen, "checkpoint: out of memory reading '%s'", path);
    size_t got = fread(t, 1, (size_t)sec[0], f);
    if (got != sec[0]) {
        free(t);
        return rb_fail(err, errlen, "checkpoint: '%s' is truncated (%zu of %llu configuration bytes)", path, got,
                       (unsigned long long)sec[0]);
    }
    t[got] = 0;
    if (fnv(FNV0, t, got) != sec[1] || strlen(t) != got) {
        free(t);
        return rb_fail(err, errlen, "checkpoint: '%s' is corrupt (configuration checksum mismatch)", path);
    }
    *cs = fnv(fnv(FNV0, sec, sizeof sec), t, got);
    *data_off += sizeof sec + got;
    *text = t;
    return 0;
}

/* Opens path and reads its header (read_head); NULL with err set on failure. */
static FILE *open_head(const char *path, ckpt_header *h, char **text, uint64_t *cs, uint64_t *data_off, char *err,
                       size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        rb_fail(err, errlen, "checkpoint: cannot open '%s' (%s)", path, strerror(errno));
        return NULL;
    }
    if (read_head(f, path, h, text, cs, data_off, err, errlen) != 0) {
        fclose(f);
        return NULL;
    }
    return f;
}

int checkpoint_load(const char *path, model *m, int *step, rb_rng *rng, uint64_t config_hash, char *err,
                    size_t errlen) {
    ckpt_header h;
    char *text;
    uint64_t cs, data_off;
    FILE *f = open_head(path, &h, &text, &cs, &data_off, err, errlen);
    if (!f) return -1;
    free(text); /* the caller made m from its own configuration; the hash below compares the two */
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
    if (fnv(cs, buf, total) != h.checksum) {
        free(buf);
        return rb_fail(err, errlen, "checkpoint: '%s' is corrupt (checksum mismatch)", path);
    }
    memcpy(m->params_mem, buf, bytes);
    memcpy(m->m_mem, (char *)buf + bytes, bytes);
    memcpy(m->v_mem, (char *)buf + 2 * bytes, bytes);
    const float *src = (const float *)((char *)buf + 3 * bytes);
    for (int l = 0; l < m->L; l++) {
        float *cp;
        size_t n = layer_centroids(m, l, &cp);
        if (n) memcpy(cp, src, n * sizeof(float));
        src += n;
    }
    free(buf);
    *step = (int)h.step;
    rng->s = h.rng;
    return 0;
}

int checkpoint_read_config(const char *path, train_config *c, char *err, size_t errlen) {
    ckpt_header h;
    char *text;
    uint64_t cs, data_off;
    FILE *f = open_head(path, &h, &text, &cs, &data_off, err, errlen);
    if (!f) return -1;
    if (!text) {
        fclose(f);
        rb_fail(err, errlen,
                "checkpoint: '%s' has format version 1, which holds no configuration (only its hash): give the "
                "--KEY VALUE options `routebench train` was given",
                path);
        return CHECKPOINT_NO_CONFIG;
    }
    /* the arrays are not read here, but a file cut short or grown is refused now */
    uint64_t want = data_off + (3 * h.nparams + h.ncentroid) * sizeof(float);
    int sk = fseeko(f, 0, SEEK_END);
    off_t size = sk == 0 ? ftello(f) : -1;
    fclose(f);
    if (size < 0) {
        free(text);
        return rb_fail(err, errlen, "checkpoint: cannot measure '%s' (%s)", path, strerror(errno));
    }
    if ((uint64_t)size != want) {
        free(text);
        return rb_fail(err, errlen, "checkpoint: '%s' is %s (%lld bytes, its header says %llu)", path,
                       (uint64_t)size < want ? "truncated" : "longer than its header says", (long long)size,
                       (unsigned long long)want);
    }
    train_config_default(c);
    char msg[1024];
    int rc = train_config_from_text(c, text, msg, sizeof msg);
    free(text);
    if (rc != 0) return rb_fail(err, errlen, "checkpoint: '%s': %s", path, msg);
    if (train_config_hash(c) != h.config_hash)
        return rb_fail(err, errlen, "checkpoint: '%s' is corrupt (its configuration does not match its hash)", path);
    return 0;
}

int checkpoint_config_with(const char *path, train_config *c, const char *const *kv, int n, char *err,
                           size_t errlen) {
    int rc = checkpoint_read_config(path, c, err, errlen);
    if (rc == CHECKPOINT_NO_CONFIG && n > 0) train_config_default(c); /* the options say it all, as before */
    else if (rc != 0) return -1;
    for (int i = 0; i < n; i++)
        if (train_config_set(c, kv[2 * i], kv[2 * i + 1], err, errlen) != 0) return -1;
    return 0;
}

model *checkpoint_model(train_config *c, const char *path, int *step, const char *hint, char *err, size_t errlen) {
    char msg[1024];
    if (train_config_check(c, msg, sizeof msg) != 0) return rb_fail(err, errlen, "configuration: %s", msg), NULL;
    model *m = model_create(c, msg, sizeof msg);
    if (!m) return rb_fail(err, errlen, "%s", msg), NULL;
    int st = 0;
    rb_rng rng;
    rb_rng_seed(&rng, 0);
    if (checkpoint_load(path, m, &st, &rng, train_config_hash(c), msg, sizeof msg) != 0) {
        model_free(m);
        return rb_fail(err, errlen, "%s (%s)", msg, hint), NULL;
    }
    if (step) *step = st;
    return m;
}
