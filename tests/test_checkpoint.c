/* test_checkpoint.c: 20 steps, save, load, 20 more gives exactly the state of
 * 40 uninterrupted steps (parameters, Adam moments, data stream: the files are
 * byte-identical); truncated, corrupt, foreign and non-checkpoint files are
 * refused with a message and leave the model untouched. The configuration as
 * text (train_config_to_text) reads back to the same hash and fields for
 * several configurations; a version-2 file gives its configuration back
 * (checkpoint_read_config), a cut or damaged configuration section is
 * refused, and a version-1 file (rebuilt here from the documented layout)
 * still loads but says it holds no configuration. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>

#include "model/checkpoint.h"
#include "model/model.h"
#include "tap.h"
#include "util/threads.h"
#include "model/train.h"
#include "testutil.h"

static void small(train_config *c, const char *backend) {
    tu_small_model(c, "copy", 8, 32, 32, 2, 40, backend);
    c->lr = 3e-3f;
    c->eval_batches = 1;
    c->attn.window = 8;
    c->attn.clusters = 4;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

static void round_trip(const char *backend, const char *dir) {
    char pa[400], pb[400], pc[400], err[512];
    snprintf(pa, sizeof pa, "%s/%s-40.ckpt", dir, backend);
    snprintf(pb, sizeof pb, "%s/%s-20.ckpt", dir, backend);
    snprintf(pc, sizeof pc, "%s/%s-20-20.ckpt", dir, backend);
    train_config c;
    train_result r;
    small(&c, backend);
    snprintf(c.save, sizeof c.save, "%s", pa);
    int r1 = train_run(&c, NULL, &r, err, sizeof err);
    small(&c, backend);
    c.stop_after = 20;
    snprintf(c.save, sizeof c.save, "%s", pb);
    int r2 = train_run(&c, NULL, &r, err, sizeof err);
    int done20 = r.steps_done;
    small(&c, backend);
    snprintf(c.load, sizeof c.load, "%s", pb);
    snprintf(c.save, sizeof c.save, "%s", pc);
    int r3 = train_run(&c, NULL, &r, err, sizeof err);
    if (r1 || r2 || r3) {
        ok(0, "%s: runs failed: %s", backend, err);
        return;
    }
    size_t na, nc;
    unsigned char *a = slurp(pa, &na), *cc = slurp(pc, &nc);
    size_t diff = 0;
    for (size_t i = 0; i < na && i < nc; i++) diff += a[i] != cc[i];
    diag("%s: %zu-byte checkpoints, %zu bytes differ", backend, na, diff);
    ok(done20 == 20 && r.steps_done == 40 && na == nc && diff == 0,
       "%s: 20 steps + save + load + 20 steps == 40 steps, bit for bit", backend);
    free(a);
    free(cc);
}


/* ---- the configuration as text ---- */

/* Text of c, applied to a default config: same hash, same text again, and the
 * fields the hash does not cover (optimiser, seed, task knobs) equal too. */
static void text_round_trip(const char *what, const train_config *c) {
    char *t1 = malloc(TRAIN_CONFIG_TEXT_LEN), *t2 = malloc(TRAIN_CONFIG_TEXT_LEN), err[512] = "";
    int n1 = train_config_to_text(c, t1, TRAIN_CONFIG_TEXT_LEN);
    train_config d;
    train_config_default(&d);
    int rc = n1 > 0 ? train_config_from_text(&d, t1, err, sizeof err) : -1;
    int n2 = rc == 0 ? train_config_to_text(&d, t2, TRAIN_CONFIG_TEXT_LEN) : -1;
    /* every key train_config_set accepts is written once, as a line of its own */
    int nk = 0, missing = 0;
    for (int i = 0; i < rb_param_count() && n1 > 0; i++) {
        const rb_param *k = rb_param_at(i);
        if (!rb_param_in_model(k)) continue;
        nk++;
        char pat[80];
        snprintf(pat, sizeof pat, "\n%s=", k->name);
        const char *at = strncmp(t1, pat + 1, strlen(pat + 1)) == 0 ? t1 : strstr(t1, pat);
        const char *again = at ? strstr(at + 1, pat) : NULL;
        if (!at || again) missing++, diag("%s: key %s written %s", what, k->name, at ? "twice" : "never");
    }
    int same = rc == 0 && train_config_hash(&d) == train_config_hash(c) && n2 == n1 && strcmp(t1, t2) == 0 &&
               memcmp(&d.lr, &c->lr, sizeof d.lr) == 0 && memcmp(&d.attn.decay, &c->attn.decay, sizeof(float)) == 0 &&
               memcmp(&d.val_frac, &c->val_frac, sizeof(double)) == 0 && d.seed == c->seed &&
               d.batch == c->batch && d.copy_vocab == c->copy_vocab && strcmp(d.data, c->data) == 0 &&
               strcmp(d.layer_backends, c->layer_backends) == 0;
    ok(n1 > 0 && missing == 0 && same, "config text round trip, %s (%d bytes, %d keys)%s%s", what, n1, nk,
       rc ? ": " : "", err);
    free(t1);
    free(t2);
}

static void config_text_tests(void) {
    char err[512];
    train_config c;
    train_config_default(&c);
    text_round_trip("defaults", &c);
    train_config_check(&c, err, sizeof err);
    text_round_trip("defaults, checked", &c);

    train_config_default(&c);
    c.layers = 4;
    snprintf(c.layer_backends, sizeof c.layer_backends, "local,routing,dense,hybrid");
    c.attn.window = 16, c.attn.clusters = 7, c.attn.local_heads = 1, c.attn.share_qk = 0;
    c.attn.assign = ATTN_ASSIGN_ARGMAX, c.attn.norm = ATTN_NORM_LAYERNORM;
    c.attn.decay = 0.987654321f, c.attn.kmeans_iters = 5, c.commit_beta = 3.3e-5f;
    c.lr = 1.2345678e-3f, c.val_frac = 0.0123456789012345, c.seed = 18446744073709551557ull;
    text_round_trip("per-layer backends and routing parameters", &c);

    train_config_default(&c);
    c.pos = TRAIN_POS_SINUSOIDAL;
    snprintf(c.task, sizeof c.task, "copy");
    snprintf(c.backend, sizeof c.backend, "routing");
    c.copy_vocab = 12, c.seq = 96, c.local_layers = 2, c.batch = 3, c.accum = 2, c.warmup = 7;
    snprintf(c.data, sizeof c.data, "some dir/with=equals.txt");
    snprintf(c.save, sizeof c.save, "out/x.ckpt");
    text_round_trip("sinusoidal positions, copy task, a path with '=' and a space", &c);
    train_config d = c;
    train_config_check(&d, err, sizeof err);
    text_round_trip("the same, checked", &d);

    /* the round trip must be able to fail: one changed key changes the text and the hash */
    char *t1 = malloc(TRAIN_CONFIG_TEXT_LEN), *t2 = malloc(TRAIN_CONFIG_TEXT_LEN);
    train_config_to_text(&c, t1, TRAIN_CONFIG_TEXT_LEN);
    d = c;
    d.attn.decay = nextafterf(c.attn.decay, 1.0f);
    train_config_to_text(&d, t2, TRAIN_CONFIG_TEXT_LEN);
    ok(strcmp(t1, t2) != 0 && train_config_hash(&c) != train_config_hash(&d),
       "a decay one float step away is written differently");

    ok(train_config_to_text(&c, t1, 100) == -1, "a buffer too small is refused");
    snprintf(d.data, sizeof d.data, "two\nlines");
    ok(train_config_to_text(&d, t1, TRAIN_CONFIG_TEXT_LEN) == -1, "a value holding a newline is refused");
    train_config_default(&d);
    ok(train_config_from_text(&d, "d_model=64\nno such=1\n", err, sizeof err) != 0 && strstr(err, "line 2"),
       "an unknown key is refused, naming its line: %s", err);
    ok(train_config_from_text(&d, "d_model 64\n", err, sizeof err) != 0 && strstr(err, "no '='"),
       "a line without '=' is refused: %s", err);
    free(t1);
    free(t2);
}

/* ---- the file layout (header of checkpoint.c) ---- */

enum { H_VERSION = 8, H_HASH = 16, H_CHECKSUM = 56, H_BYTES = 64 };

static uint64_t get64(const unsigned char *b) {
    uint64_t x;
    memcpy(&x, b, 8);
    return x;
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The version-1 file a version-2 file v2 (n bytes) would have been: no config
 * section, the checksum over the arrays only. Written to path; its size returned. */
static size_t write_v1(const char *path, const unsigned char *v2, size_t n) {
    uint64_t tl = get64(v2 + H_BYTES);
    size_t data = H_BYTES + 16 + (size_t)tl;
    unsigned char *b = malloc(n);
    memcpy(b, v2, H_BYTES);
    memcpy(b + H_BYTES, v2 + data, n - data);
    uint32_t one = 1;
    memcpy(b + H_VERSION, &one, 4);
    uint64_t cs = fnv1a(0xcbf29ce484222325ull, b + H_BYTES, n - data);
    memcpy(b + H_CHECKSUM, &cs, 8);
    spit(path, b, H_BYTES + n - data);
    free(b);
    return H_BYTES + n - data;
}

int main(void) {
    rb_set_threads(1);
    char dir[256];
    if (tu_tmpdir(dir, sizeof dir, "ckpt")) return 1;

    config_text_tests();
    round_trip("dense", dir);
    if (attn_find("routing")) round_trip("routing", dir);
    else skip("routing is not registered yet");

    /* refusals, each checked to leave the model as it was */
    char path[400], bad[400], err[512];
    snprintf(path, sizeof path, "%s/dense-40.ckpt", dir);
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    train_config c;
    small(&c, "dense");
    train_config_check(&c, err, sizeof err);
    uint64_t hash = train_config_hash(&c);
    model *m = model_create(&c, err, sizeof err);
    size_t pbytes = m->nparams * sizeof(float);
    float *before = malloc(pbytes);
    memcpy(before, m->params_mem, pbytes);
    rb_rng rng = {123};
    int step = -1;

    size_t n;
    unsigned char *good = slurp(path, &n);
    spit(bad, good, n - 100);
    int rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && strstr(err, "truncated") && memcmp(before, m->params_mem, pbytes) == 0 && step == -1 &&
           rng.s == 123,
       "a truncated checkpoint is refused, model untouched: %s", err);
    spit(bad, good, 20);
    rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && strstr(err, "truncated"), "a checkpoint cut inside its header is refused: %s", err);

    good[n / 2] ^= 0x40;
    spit(bad, good, n);
    good[n / 2] ^= 0x40;
    rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && strstr(err, "corrupt") && memcmp(before, m->params_mem, pbytes) == 0,
       "a flipped bit is caught by the checksum: %s", err);

    {
        unsigned char text[300];
        for (int i = 0; i < 300; i++) text[i] = "In the beginning God created the heaven and the earth.\n"[i % 56];
        spit(bad, text, sizeof text);
    }
    rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && strstr(err, "not a routebench checkpoint"), "a foreign file is refused: %s", err);

    ok(checkpoint_load(path, m, &step, &rng, hash ^ 1, err, sizeof err) != 0 && strstr(err, "another configuration") &&
           memcmp(before, m->params_mem, pbytes) == 0,
       "a checkpoint of another configuration is refused: %s", err);

    /* through train_run: a different model shape refuses to resume */
    train_result r;
    small(&c, "dense");
    c.d_model = 64;
    snprintf(c.load, sizeof c.load, "%s", path);
    rc = train_run(&c, NULL, &r, err, sizeof err);
    ok(rc != 0 && strstr(err, "another configuration"), "train_run refuses to resume another model: %s", err);

    rc = checkpoint_load(path, m, &step, &rng, hash, err, sizeof err);
    ok(rc == 0 && step == 40 && memcmp(before, m->params_mem, pbytes) != 0, "the good checkpoint loads (step %d)",
       step);

    /* version 2: the configuration comes back from the file alone */
    uint32_t version;
    memcpy(&version, good + H_VERSION, 4);
    train_config rc_c;
    memset(&rc_c, 0x5a, sizeof rc_c);
    rc = checkpoint_read_config(path, &rc_c, err, sizeof err);
    ok(version == 2 && rc == 0 && train_config_hash(&rc_c) == hash && get64(good + H_HASH) == hash &&
           rc_c.steps == 40 && rc_c.copy_vocab == 8 && rc_c.lr == 3e-3f && rc_c.batch == 2 &&
           strcmp(rc_c.task, "copy") == 0 && strcmp(rc_c.backend, "dense") == 0 && rc_c.save[0] == 0,
       "a version-2 checkpoint gives back its configuration (hash %016llx, steps %d)%s%s",
       (unsigned long long)train_config_hash(&rc_c), rc_c.steps, rc ? ": " : "", rc ? err : "");
    if (attn_find("routing")) {
        char rpath[400];
        snprintf(rpath, sizeof rpath, "%s/routing-40.ckpt", dir);
        train_config want;
        small(&want, "routing");
        train_config_check(&want, err, sizeof err);
        rc = checkpoint_read_config(rpath, &rc_c, err, sizeof err);
        ok(rc == 0 && train_config_hash(&rc_c) == train_config_hash(&want) && rc_c.attn.clusters == 4 &&
               rc_c.attn.window == 8 && strcmp(train_layer_backend(&rc_c, 1), "routing") == 0,
           "the routing checkpoint gives back its configuration (clusters %d, window %d)%s%s", rc_c.attn.clusters,
           rc_c.attn.window, rc ? ": " : "", rc ? err : "");
    } else {
        skip("routing is not registered yet");
    }
    const char *over[] = {"batch", "5", "eval-batches", "2"};
    rc = checkpoint_config_with(path, &rc_c, over, 2, err, sizeof err);
    ok(rc == 0 && rc_c.batch == 5 && rc_c.eval_batches == 2 && rc_c.steps == 40 && train_config_hash(&rc_c) == hash,
       "options on top of the stored configuration replace single keys, the hash stays");
    const char *wider[] = {"d_model", "64"};
    rc = checkpoint_config_with(path, &rc_c, wider, 1, err, sizeof err);
    ok(rc == 0 && rc_c.d_model == 64 && train_config_hash(&rc_c) != hash &&
           checkpoint_load(path, m, &step, &rng, train_config_hash(&rc_c), err, sizeof err) != 0 &&
           strstr(err, "another configuration"),
       "an option that changes the model is caught by the hash: %s", err);
    const char *bogus[] = {"no_such_key", "1"};
    ok(checkpoint_config_with(path, &rc_c, bogus, 1, err, sizeof err) != 0 && strstr(err, "no_such_key"),
       "an unknown option on top is refused: %s", err);

    /* a cut or damaged configuration section is refused, by both readers */
    size_t tl = (size_t)get64(good + H_BYTES);
    diag("configuration section: %zu bytes of text", tl);
    int refused = 1;
    size_t cuts[] = {H_BYTES + 8, H_BYTES + 16 + tl / 2, H_BYTES + 16 + tl, n - 1};
    for (int i = 0; i < 4; i++) {
        spit(bad, good, cuts[i]);
        int a = checkpoint_read_config(bad, &rc_c, err, sizeof err) != 0 && strstr(err, "truncated");
        if (!a) diag("read_config, cut at %zu: %s", cuts[i], err);
        int b = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err) != 0 && strstr(err, "truncated");
        if (!b) diag("load, cut at %zu: %s", cuts[i], err);
        refused &= a && b;
    }
    ok(refused, "a checkpoint cut inside or after its configuration is refused by read_config and load");
    good[H_BYTES + 16 + tl / 3] ^= 0x01;
    spit(bad, good, n);
    good[H_BYTES + 16 + tl / 3] ^= 0x01;
    rc = checkpoint_read_config(bad, &rc_c, err, sizeof err);
    int lrc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && lrc != 0 && strstr(err, "corrupt"), "a flipped bit in the configuration text is refused: %s", err);
    {
        unsigned char *longer = malloc(n + 1);
        memcpy(longer, good, n);
        longer[n] = 7;
        spit(bad, longer, n + 1);
        free(longer);
    }
    rc = checkpoint_read_config(bad, &rc_c, err, sizeof err);
    ok(rc != 0 && strstr(err, "longer"), "a file longer than its header says is refused by read_config: %s", err);
    rc = checkpoint_read_config(dir, &rc_c, err, sizeof err);
    ok(rc != 0, "a directory is refused: %s", err);

    /* version 1 (hash only), as older routebench wrote it: loads, holds no configuration */
    float *loaded = malloc(pbytes);
    memcpy(loaded, m->params_mem, pbytes);
    write_v1(bad, good, n);
    memset(m->params_mem, 0, pbytes);
    step = -1;
    rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc == 0 && step == 40 && memcmp(loaded, m->params_mem, pbytes) == 0,
       "a version-1 checkpoint still loads, the same parameters (step %d)%s%s", step, rc ? ": " : "", rc ? err : "");
    rc = checkpoint_read_config(bad, &rc_c, err, sizeof err);
    ok(rc == CHECKPOINT_NO_CONFIG && strstr(err, "no configuration") && strstr(err, "--KEY VALUE"),
       "read_config on a version-1 file says it has no configuration: %s", err);
    ok(checkpoint_config_with(bad, &rc_c, NULL, 0, err, sizeof err) != 0 && strstr(err, "no configuration"),
       "version 1 without options: refused with the same message");
    const char *v1opts[] = {"d_model", "32", "task", "copy"};
    rc = checkpoint_config_with(bad, &rc_c, v1opts, 2, err, sizeof err);
    ok(rc == 0 && rc_c.d_model == 32 && rc_c.seq == 256 && strcmp(rc_c.task, "copy") == 0,
       "version 1 with options: the defaults and the options, as before");
    {
        size_t n1;
        unsigned char *v1 = slurp(bad, &n1);
        v1[n1 / 2] ^= 0x40;
        spit(bad, v1, n1);
        free(v1);
    }
    rc = checkpoint_load(bad, m, &step, &rng, hash, err, sizeof err);
    ok(rc != 0 && strstr(err, "corrupt"), "a flipped bit in a version-1 file is still caught: %s", err);
    free(loaded);

    /* saving is atomic: no temporary files are left behind */
    ok(checkpoint_save(path, m, 7, &rng, &c, err, sizeof err) == 0, "save over an existing checkpoint");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp > /dev/null", dir);
    ok(system(cmd) != 0, "no temporary file left in %s", dir);
    /* a temporary of a save killed before its rename (its process gone) is
     * removed by the next save; one of a live process is left alone */
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    char stale[500], live[500];
    snprintf(stale, sizeof stale, "%s.tmp.%ld", path, (long)child);
    snprintf(live, sizeof live, "%s.tmp.%ld", path, (long)getppid());
    fclose(fopen(stale, "w")), fclose(fopen(live, "w"));
    ok(checkpoint_save(path, m, 7, &rng, &c, err, sizeof err) == 0 && access(stale, F_OK) != 0 &&
           access(live, F_OK) == 0,
       "a dead process's temporary is removed at the next save, a live one's kept");
    remove(live);
    snprintf(bad, sizeof bad, "/nonexistent-dir/x.ckpt");
    ok(checkpoint_save(bad, m, 7, &rng, &c, err, sizeof err) != 0 && strstr(err, "cannot write"),
       "an unwritable path is an error: %s", err);

    free(good);
    free(before);
    model_free(m);
    tu_rmtree(dir);
    return tap_done();
}
