/* test_checkpoint.c: 20 steps, save, load, 20 more gives exactly the state of
 * 40 uninterrupted steps (parameters, Adam moments, data stream: the files are
 * byte-identical); truncated, corrupt, foreign and non-checkpoint files are
 * refused with a message and leave the model untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "tap.h"
#include "threads.h"
#include "train.h"

static void small(train_config *c, const char *backend) {
    train_config_default(c);
    snprintf(c->task, sizeof c->task, "copy");
    c->copy_vocab = 8;
    c->d_model = 32;
    c->layers = 2;
    c->heads = 2;
    c->seq = 32;
    c->batch = 2;
    c->steps = 40;
    c->lr = 3e-3f;
    c->eval_batches = 1;
    c->attn.window = 8;
    c->attn.clusters = 4;
    snprintf(c->backend, sizeof c->backend, "%s", backend);
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

int main(void) {
    rb_set_threads(1);
    char dir[] = "/tmp/rb_ckpt_XXXXXX";
    if (!mkdtemp(dir)) return 1;

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

    /* saving is atomic: no temporary files are left behind */
    ok(checkpoint_save(path, m, 7, &rng, hash, err, sizeof err) == 0, "save over an existing checkpoint");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp > /dev/null", dir);
    ok(system(cmd) != 0, "no temporary file left in %s", dir);
    snprintf(bad, sizeof bad, "/nonexistent-dir/x.ckpt");
    ok(checkpoint_save(bad, m, 7, &rng, hash, err, sizeof err) != 0 && strstr(err, "cannot write"),
       "an unwritable path is an error: %s", err);

    free(good);
    free(before);
    model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) diag("could not remove %s", dir);
    return tap_done();
}
