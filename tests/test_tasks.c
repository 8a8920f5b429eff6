/* test_tasks.c: the tasks' splits are disjoint (text by byte region, copy and
 * recall by content), the copy task's targets and loss mask are where the
 * Reformer's duplication task puts them, recall's mask sits on the looked-up
 * values, and a missing file, an empty file and a sequence longer than a
 * split are clear errors. */
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "util/common.h"
#include "tap.h"
#include "model/tasks.h"
#include "model/train.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* content key of a sequence's generated part, as text */
static char *key_of(const int *s, int n) {
    char *k = malloc((size_t)n * 8 + 1), *p = k;
    for (int i = 0; i < n; i++) p += sprintf(p, "%d,", s[i]);
    return k;
}

/* Draw `per` sequences from each split and count content keys shared between splits. */
static int shared_between_splits(train_config *c, int per, int key_from, int key_len) {
    char err[512];
    task *t = task_open(c, err, sizeof err);
    if (!t) {
        diag("open: %s", err);
        return -1;
    }
    int T = c->seq, B = 8;
    int *tok = malloc(B * T * sizeof(int)), *tgt = malloc(B * T * sizeof(int));
    float *mask = malloc(B * T * sizeof(float));
    char **keys = malloc(3 * per * sizeof(char *));
    int *split_of = malloc(3 * per * sizeof(int)), nk = 0;
    for (int s = 0; s < 3; s++) {
        rb_rng r;
        rb_rng_seed(&r, task_stream_seed(c->seed, s, 0));
        for (int i = 0; i < per; i += B) {
            if (task_batch(t, s, &r, B, T, tok, tgt, mask, err, sizeof err)) {
                diag("batch: %s", err);
                return -1;
            }
            for (int b = 0; b < B && i + b < per; b++) {
                split_of[nk] = s;
                keys[nk++] = key_of(tok + b * T + key_from, key_len);
            }
        }
    }
    /* sort keys with their split, then look for equal neighbours from different splits */
    char **sorted = malloc(nk * sizeof(char *));
    for (int i = 0; i < nk; i++) {
        sorted[i] = malloc(strlen(keys[i]) + 3);
        sprintf(sorted[i], "%s|%d", keys[i], split_of[i]);
    }
    qsort(sorted, nk, sizeof(char *), cmp_str);
    int shared = 0;
    for (int i = 1; i < nk; i++) {
        char *a = sorted[i - 1], *b = sorted[i];
        size_t la = strrchr(a, '|') - a, lb = strrchr(b, '|') - b;
        if (la == lb && strncmp(a, b, la) == 0 && strcmp(a + la, b + lb) != 0) shared++;
    }
    for (int i = 0; i < nk; i++) free(keys[i]), free(sorted[i]);
    free(keys), free(sorted), free(split_of), free(tok), free(tgt), free(mask);
    task_free(t);
    return shared;
}

/* The defaults with task and seq set. */
static void task_config(train_config *c, const char *task, int seq) {
    train_config_default(c);
    snprintf(c->task, sizeof c->task, "%s", task);
    c->seq = seq;
}

static void test_copy(void) {
    train_config c;
    task_config(&c, "copy", 16);
    c.copy_vocab = 3; /* 2 symbols, w of 7: only 128 distinct w, so overlaps would show */
    char err[512];
    task *t = task_open(&c, err, sizeof err);
    ok(t != NULL, "copy task opens");
    int T = 16, B = 4;
    int tok[64], tgt[64];
    float mask[64];
    rb_rng r;
    rb_rng_seed(&r, 1);
    int rc = task_batch(t, TASK_TRAIN, &r, B, T, tok, tgt, mask, err, sizeof err);
    int good = rc == 0;
    for (int b = 0; b < B; b++) {
        int *s = tok + b * T, *g = tgt + b * T;
        float *m = mask + b * T;
        /* 0 w 0 w with |w| = 7: positions 0 and 8 are separators */
        good &= s[0] == 0 && s[8] == 0;
        for (int i = 1; i <= 7; i++) good &= s[i] >= 1 && s[i] < 3 && s[8 + i] == s[i];
        for (int i = 0; i < T - 1; i++) good &= g[i] == s[i + 1];
        /* loss on the second copy only: inputs 8..14 predict w[0..6] */
        for (int i = 0; i < T; i++) good &= m[i] == ((i >= 8 && i <= 14) ? 1.0f : 0.0f);
        for (int i = 8; i <= 14; i++) good &= g[i] == s[i - 7];
    }
    ok(good, "copy: sequences are 0 w 0 w, targets the next token, mask on the second copy only");
    task_free(t);

    int shared = shared_between_splits(&c, 400, 1, 7);
    ok(shared == 0, "copy: no w appears in two splits (%d shared)", shared);

    c.seq = 17; /* odd lengths fit 0 w 0 w exactly */
    t = task_open(&c, err, sizeof err);
    rc = task_batch(t, TASK_VAL, &r, 1, 17, tok, tgt, mask, err, sizeof err);
    good = rc == 0 && tok[0] == 0 && tok[9] == 0 && tgt[16] == tok[8] && mask[16] == 1 && mask[8] == 0 && mask[9] == 1;
    ok(good, "copy: odd seq 17 holds 0 w 0 w with |w| = 8, last target counted");
    task_free(t);

    c.copy_vocab = 2; /* one symbol: a single w, which cannot be in all three splits */
    c.seq = 8;
    t = task_open(&c, err, sizeof err);
    int bad = 0;
    for (int s = 0; s < 3; s++) bad |= task_batch(t, s, &r, 1, 8, tok, tgt, mask, err, sizeof err) != 0;
    ok(bad && strstr(err, "too few distinct"), "copy: a split with no possible sequence is an error: %s", err);
    task_free(t);
}

static void test_recall(void) {
    train_config c;
    task_config(&c, "recall", 24);
    c.recall_keys = 8;
    c.recall_values = 4;
    char err[512];
    ok(task_vocab(&c, err, sizeof err) == 13, "recall vocabulary is 1 + keys + values");
    task *t = task_open(&c, err, sizeof err);
    int T = 24, B = 4, tok[96], tgt[96];
    float mask[96];
    rb_rng r;
    rb_rng_seed(&r, 5);
    int good = task_batch(t, TASK_TEST, &r, B, T, tok, tgt, mask, err, sizeof err) == 0;
    int counted = 0;
    for (int b = 0; b < B; b++) {
        int *s = tok + b * T, *g = tgt + b * T;
        float *m = mask + b * T;
        /* P = 6 pairs at 0..11, separator at 12, then query/answer pairs */
        good &= s[12] == 0;
        for (int i = 0; i < T; i++) {
            if (m[i] == 0) continue;
            counted++;
            int key = s[i], found = -1;
            for (int j = 0; j < 6; j++)
                if (s[2 * j] == key) found = s[2 * j + 1];
            good &= i > 12 && key >= 1 && key <= 8 && found >= 9 && g[i] == found;
        }
    }
    ok(good && counted == B * 6, "recall: the mask is on the queries and their targets are the stored values (%d)",
       counted);
    task_free(t);
    int shared = shared_between_splits(&c, 400, 0, 12);
    ok(shared == 0, "recall: no key-value set appears in two splits (%d shared)", shared);
}

static void test_text(void) {
    char path[] = "/tmp/rb_tasks_XXXXXX";
    int fd = mkstemp(path);
    /* 2000 bytes: the first 90% 'a', then 5% 'b', then 5% 'c' */
    char buf[2000];
    for (int i = 0; i < 2000; i++) buf[i] = i < 1800 ? 'a' : i < 1900 ? 'b' : 'c';
    ok(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf, "wrote a test corpus");
    close(fd);
    train_config c;
    train_config_default(&c);
    snprintf(c.data, sizeof c.data, "%s", path);
    c.seq = 64;
    char err[512];
    task *t = task_open(&c, err, sizeof err);
    ok(t != NULL, "text task opens %s", path);
    int B = 8, T = 64, tok[512], tgt[512];
    float mask[512];
    const char want[3] = {'a', 'b', 'c'};
    for (int s = 0; s < 3; s++) {
        rb_rng r;
        rb_rng_seed(&r, 9);
        int good = 1;
        for (int k = 0; k < 50; k++) {
            good &= task_batch(t, s, &r, B, T, tok, tgt, mask, err, sizeof err) == 0;
            for (int i = 0; i < B * T; i++) good &= tok[i] == want[s] && tgt[i] == want[s] && mask[i] == 1;
        }
        ok(good, "text: split %d draws only from its own byte region", s);
    }
    task_free(t);

    c.seq = 100; /* validation holds 100 bytes: one sequence needs 101 */
    t = task_open(&c, err, sizeof err);
    ok(!t && strstr(err, "validation split") && strstr(err, "fewer than seq+1"),
       "text: a sequence longer than a split is refused: %s", err);

    snprintf(c.data, sizeof c.data, "/nonexistent/kjv.txt");
    c.seq = 16;
    t = task_open(&c, err, sizeof err);
    ok(!t && strstr(err, "cannot open") && strstr(err, "make data"), "text: a missing file says how to make it: %s",
       err);

    fd = open(path, O_TRUNC | O_WRONLY);
    close(fd);
    snprintf(c.data, sizeof c.data, "%s", path);
    t = task_open(&c, err, sizeof err);
    ok(!t && strstr(err, "empty") && strstr(err, "make data"), "text: an empty file is an error: %s", err);
    unlink(path);

    snprintf(c.task, sizeof c.task, "poetry");
    ok(task_vocab(&c, err, sizeof err) < 0 && strstr(err, "unknown task"), "an unknown task is refused: %s", err);
}

static void test_random(void) {
    train_config c;
    task_config(&c, "random", 32);
    c.random_vocab = 7;
    char err[512];
    task *t = task_open(&c, err, sizeof err);
    int tok[64], tgt[64];
    float mask[64];
    rb_rng r;
    rb_rng_seed(&r, 2);
    int good = task_batch(t, TASK_TRAIN, &r, 2, 32, tok, tgt, mask, err, sizeof err) == 0, seen[7] = {0};
    for (int i = 0; i < 64; i++) {
        good &= tok[i] >= 0 && tok[i] < 7 && mask[i] == 1;
        seen[tok[i]] = 1;
        if (i % 32 != 31) good &= tgt[i] == tok[i + 1];
    }
    int nseen = 0;
    for (int i = 0; i < 7; i++) nseen += seen[i];
    ok(good && nseen == 7, "random: tokens uniform over the vocabulary, targets shifted");
    task_free(t);
}

int main(void) {
    test_copy();
    test_recall();
    test_text();
    test_random();
    return tap_done();
}
