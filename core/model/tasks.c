/* tasks.c: the training tasks of tasks.h. Text is read whole into memory
 * (enwik8's 100 MB is fine) and cut into train/validation/test by byte offset.
 * Generated tasks draw each split from its own random stream and hash every
 * drawn sequence's content into a split, rejecting draws that belong to
 * another one, so no sequence can appear in two splits. */
#include "model/tasks.h"

#include "util/hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { TASK_TEXT, TASK_COPY, TASK_RECALL, TASK_RANDOM };

struct task {
    int kind;
    int vocab, seq;
    double train_frac, val_frac;
    /* text */
    unsigned char *data;
    size_t n, lo[3], hi[3];
    char path[TRAIN_PATH_LEN];
    /* recall */
    int keys, values;
    int *scratch; /* (seq+1) */
};

static const char *split_name[3] = {"training", "validation", "test"};

static int kind_of(const char *name) {
    if (strcmp(name, "text") == 0) return TASK_TEXT;
    if (strcmp(name, "copy") == 0) return TASK_COPY;
    if (strcmp(name, "recall") == 0) return TASK_RECALL;
    if (strcmp(name, "random") == 0) return TASK_RANDOM;
    return -1;
}

int task_vocab(const train_config *c, char *err, size_t errlen) {
    switch (kind_of(c->task)) {
    case TASK_TEXT: return 256;
    case TASK_COPY:
        if (c->copy_vocab < 2) return rb_fail(err, errlen, "copy: copy_vocab must be at least 2 (got %d)", c->copy_vocab);
        return c->copy_vocab;
    case TASK_RECALL:
        if (c->recall_keys < 1 || c->recall_values < 1)
            return rb_fail(err, errlen, "recall: recall_keys and recall_values must be at least 1");
        return 1 + c->recall_keys + c->recall_values;
    case TASK_RANDOM:
        if (c->random_vocab < 1) return rb_fail(err, errlen, "random: random_vocab must be at least 1");
        return c->random_vocab;
    }
    return rb_fail(err, errlen, "unknown task '%s' (text, copy, recall, random)", c->task);
}

uint64_t task_stream_seed(uint64_t seed, int split, int stream) {
    /* splitmix-style mixing so nearby seeds give unrelated streams */
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)split * 0xBF58476D1CE4E5B9ull +
                 (uint64_t)stream * 0x94D049BB133111EBull + 0x5EED;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int task_split_of(const int *seq, int n, double train_frac, double val_frac) {
    uint64_t h = RB_FNV_BASIS; /* FNV-1a over the tokens, each as 4 little-endian bytes */
    for (int i = 0; i < n; i++) {
        uint32_t x = (uint32_t)seq[i];
        unsigned char b[4] = {(unsigned char)x, (unsigned char)(x >> 8), (unsigned char)(x >> 16),
                              (unsigned char)(x >> 24)};
        h = rb_fnv1a(h, b, 4);
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
    return u < train_frac ? TASK_TRAIN : u < train_frac + val_frac ? TASK_VAL : TASK_TEST;
}

task *task_open(const train_config *c, char *err, size_t errlen) {
    int kind = kind_of(c->task);
    int vocab = task_vocab(c, err, errlen);
    if (vocab < 0) return NULL;
    if (c->seq < 1) {
        rb_fail(err, errlen, "seq must be positive");
        return NULL;
    }
    if (!(c->train_frac > 0 && c->val_frac > 0 && c->train_frac + c->val_frac < 1)) {
        rb_fail(err, errlen, "split fractions must be positive and leave a test split (train %g, val %g)",
                c->train_frac, c->val_frac);
        return NULL;
    }
    task *t = callocCheck(1, sizeof(task));
    t->kind = kind;
    t->vocab = vocab;
    t->seq = c->seq;
    t->train_frac = c->train_frac;
    t->val_frac = c->val_frac;
    t->keys = c->recall_keys;
    t->values = c->recall_values;
    t->scratch = mallocCheck(((size_t)c->seq + 1) * sizeof(int));
    snprintf(t->path, sizeof t->path, "%s", c->data);

    if (kind == TASK_COPY && c->seq < 3) {
        rb_fail(err, errlen, "copy: seq must be at least 3 (0 w 0 w with one symbol)");
        task_free(t);
        return NULL;
    }
    if (kind == TASK_RECALL && c->seq < 4) {
        rb_fail(err, errlen, "recall: seq must be at least 4 (one pair, a separator and one query)");
        task_free(t);
        return NULL;
    }
    if (kind != TASK_TEXT) return t;

    const char *hint = "run `make data` to write the default corpus (King James Bible), or pass another file";
    FILE *f = fopen(c->data, "rb");
    if (!f) {
        rb_fail(err, errlen, "text: cannot open '%s' (%s); %s", c->data, strerror(errno), hint);
        task_free(t);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz <= 0) {
        fclose(f);
        rb_fail(err, errlen, "text: '%s' is empty; %s", c->data, hint);
        task_free(t);
        return NULL;
    }
    t->n = (size_t)sz;
    t->data = malloc(t->n);
    if (!t->data || fread(t->data, 1, t->n, f) != t->n) {
        fclose(f);
        rb_fail(err, errlen, "text: cannot read '%s' (%zu bytes)", c->data, t->n);
        task_free(t);
        return NULL;
    }
    fclose(f);
    size_t a = (size_t)((double)t->n * c->train_frac), b = (size_t)((double)t->n * (c->train_frac + c->val_frac));
    t->lo[0] = 0, t->hi[0] = a;
    t->lo[1] = a, t->hi[1] = b;
    t->lo[2] = b, t->hi[2] = t->n;
    for (int s = 0; s < 3; s++)
        if (t->hi[s] - t->lo[s] < (size_t)c->seq + 1) {
            rb_fail(err, errlen,
                    "text: the %s split of '%s' has %zu bytes, fewer than seq+1 = %d: use a shorter --seq or a "
                    "larger file",
                    split_name[s], c->data, t->hi[s] - t->lo[s], c->seq + 1);
            task_free(t);
            return NULL;
        }
    return t;
}

void task_free(task *t) {
    if (!t) return;
    free(t->data);
    free(t->scratch);
    free(t);
}

int task_has_accuracy(const task *t) { return t->kind == TASK_COPY || t->kind == TASK_RECALL; }

/* copy: s = 0 w 0 w (0-padded to T+1); returns the split of w */
static int draw_copy(task *t, rb_rng *rng, int *s, int T) {
    int n = (T + 1) / 2 - 1;
    memset(s, 0, ((size_t)T + 1) * sizeof(int));
    for (int i = 0; i < n; i++) s[1 + i] = 1 + (int)rb_rng_below(rng, (uint32_t)(t->vocab - 1));
    memcpy(s + n + 2, s + 1, n * sizeof(int));
    return task_split_of(s + 1, n, t->train_frac, t->val_frac);
}

static int recall_pairs(int T, int keys) {
    int P = (T + 1) / 4;
    if (P > keys) P = keys;
    return P < 1 ? 1 : P;
}

/* recall: s = k1 v1 ... kP vP 0 q1 a1 ... qQ aQ (0-padded); returns the split of the pairs */
static int draw_recall(task *t, rb_rng *rng, int *s, int T) {
    int P = recall_pairs(T, t->keys);
    int Q = (T - 2 * P) / 2;
    memset(s, 0, ((size_t)T + 1) * sizeof(int));
    for (int i = 0; i < P; i++) {
        int k;
        int dup;
        do { /* distinct keys */
            k = 1 + (int)rb_rng_below(rng, (uint32_t)t->keys);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= s[2 * j] == k;
        } while (dup);
        s[2 * i] = k;
        s[2 * i + 1] = 1 + t->keys + (int)rb_rng_below(rng, (uint32_t)t->values);
    }
    int split = task_split_of(s, 2 * P, t->train_frac, t->val_frac);
    s[2 * P] = 0;
    for (int j = 0; j < Q; j++) {
        int i = (int)rb_rng_below(rng, (uint32_t)P);
        s[2 * P + 1 + 2 * j] = s[2 * i];
        s[2 * P + 2 + 2 * j] = s[2 * i + 1];
    }
    return split;
}

int task_batch(task *t, int split, rb_rng *rng, int B, int T, int *tokens, int *targets, float *mask, char *err,
               size_t errlen) {
    if (T != t->seq) return rb_fail(err, errlen, "task opened for seq %d, asked for %d", t->seq, T);
    int *s = t->scratch;
    for (int b = 0; b < B; b++) {
        int *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
        float *mk = mask + (size_t)b * T;
        switch (t->kind) {
        case TASK_TEXT: {
            size_t span = t->hi[split] - t->lo[split] - (size_t)T; /* >= 1: checked at open */
            size_t off = t->lo[split] + (size_t)(((double)rb_rng_u64(rng) / 18446744073709551616.0) * (double)span);
            if (off + T + 1 > t->hi[split]) off = t->hi[split] - T - 1;
            for (int i = 0; i <= T; i++) s[i] = t->data[off + i];
            for (int i = 0; i < T; i++) mk[i] = 1;
            break;
        }
        case TASK_RANDOM:
            for (int i = 0; i <= T; i++) s[i] = (int)rb_rng_below(rng, (uint32_t)t->vocab);
            for (int i = 0; i < T; i++) mk[i] = 1;
            break;
        case TASK_COPY:
        case TASK_RECALL: {
            int tries = 0;
            while ((t->kind == TASK_COPY ? draw_copy(t, rng, s, T) : draw_recall(t, rng, s, T)) != split)
                if (++tries > 100000)
                    return rb_fail(err, errlen,
                                   "%s: cannot draw a sequence for the %s split: too few distinct sequences "
                                   "(raise the vocabulary or seq)",
                                   t->kind == TASK_COPY ? "copy" : "recall", split_name[split]);
            for (int i = 0; i < T; i++) mk[i] = 0;
            if (t->kind == TASK_COPY) {
                int n = (T + 1) / 2 - 1; /* the second copy is s[n+2 .. 2n+1], targets of inputs n+1 .. 2n */
                for (int i = n + 1; i <= 2 * n; i++) mk[i] = 1;
            } else {
                int P = recall_pairs(T, t->keys), Q = (T - 2 * P) / 2;
                for (int j = 0; j < Q; j++) mk[2 * P + 1 + 2 * j] = 1; /* input q_j predicts a_j */
            }
            break;
        }
        }
        memcpy(tok, s, (size_t)T * sizeof(int));
        memcpy(tgt, s + 1, (size_t)T * sizeof(int));
    }
    return 0;
}
