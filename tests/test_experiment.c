/* test_experiment.c: experiment files -> trials. Counts and contents of the
 * expansion (Cartesian product, zip, exclude/only, repeat seeds, clusters:
 * auto, axes a backend does not use), trial keys (seed-free, stable under
 * edits that do not change a trial), and validation messages with their line
 * and column. Expected values are computed here from the sweep, never copied
 * from the code's output. Backends are picked from the registry by what they
 * use, so the test holds for any registered set. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/experiment.h"
#include "util/params.h"
#include "tap.h"

static experiment E;
static exp_errors ERRS;
static int LR;

static int load(const char *yaml) {
    exp_free(&E);
    int r = exp_load_string(&E, yaml, strlen(yaml), "t.yaml", &ERRS);
    if (r) {
        for (int i = 0; i < ERRS.n; i++) diag("  %s", ERRS.msg[i]);
    }
    return r;
}

static int has_err(const char *needle) {
    for (int i = 0; i < ERRS.n; i++)
        if (strstr(ERRS.msg[i], needle)) return 1;
    return 0;
}

static int count_backend(const char *be) {
    int n = 0;
    for (int i = 0; i < E.ntrials; i++) n += strcmp(E.trials[i].backend, be) == 0;
    return n;
}

/* a backend that uses none of the backend-specific parameters, and one that
 * uses clusters and window */
static const char *plain_backend(void) {
    for (int i = 0; i < attn_count(); i++)
        if (attn_get(i)->uses == 0) return attn_get(i)->name;
    return NULL;
}
static const char *cluster_backend(void) {
    for (int i = 0; i < attn_count(); i++) {
        unsigned u = attn_get(i)->uses;
        if ((u & ATTN_USES_CLUSTERS) && (u & ATTN_USES_WINDOW) && !(u & ATTN_USES_LOCAL_HEADS)) return attn_get(i)->name;
    }
    return NULL;
}

int main(void) {
    const char *plain = plain_backend(), *clu = cluster_backend();
    char y[4096];
    if (!plain) {
        skip("no backend without specific parameters registered");
        return tap_done();
    }

    /* ---- Cartesian product ---- */
    snprintf(y, sizeof y,
             "name: prod\n"
             "params: {head_dim: 16}\n"
             "sweep:\n"
             "  seq: [64, 128, 256]\n"
             "  heads: [1, 2]\n"
             "  batch: [1, 3]\n"
             "  backend: [%s]\n",
             plain);
    ok(load(y) == 0, "product sweep loads");
    ok(E.ntrials == 3 * 2 * 2, "product: 3 x 2 x 2 = 12 trials (got %d)", E.ntrials);
    int seen[3][2][2] = {{{0}}}, allok = 1;
    for (int i = 0; i < E.ntrials; i++) {
        const attn_params *p = &E.trials[i].attn;
        int s = p->seq == 64 ? 0 : p->seq == 128 ? 1 : p->seq == 256 ? 2 : -1;
        if (s < 0 || p->heads < 1 || p->heads > 2 || (p->batch != 1 && p->batch != 3) || p->head_dim != 16) {
            allok = 0;
            continue;
        }
        seen[s][p->heads - 1][p->batch == 3]++;
    }
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 2; c++) allok &= seen[a][b][c] == 1;
    ok(allok, "product: every combination exactly once, fixed head_dim applied");
    ok(E.trials[0].attn.seq == 64 && E.trials[E.ntrials - 1].attn.seq == 256, "product: first axis varies slowest");
    int uniq = 1;
    for (int i = 0; i < E.ntrials; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(E.trials[i].key, E.trials[j].key) || !strcmp(E.trials[i].name, E.trials[j].name)) uniq = 0;
    ok(uniq, "product: keys and names are distinct");
    ok(strstr(E.trials[0].name, plain) == E.trials[0].name && strstr(E.trials[0].name, "-n64"), "name reads backend-n64...: %s",
       E.trials[0].name);
    int idx_ok = 1;
    for (int i = 0; i < E.ntrials; i++) idx_ok &= E.trials[i].index == i;
    ok(idx_ok, "trial indices are 0..n-1 in order");

    /* ---- repeat: seeds ---- */
    snprintf(y, sizeof y, "name: rep\nrepeat: 3\nseed: 10\nparams: {backend: %s, head_dim: 8}\nsweep: {seq: [32, 64]}\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 6, "repeat 3 x 2 seqs = 6 trials (got %d)", E.ntrials);
    int seeds_ok = E.ntrials == 6;
    for (int i = 0; i < E.ntrials && seeds_ok; i++) {
        seeds_ok &= E.trials[i].seed == 10 + (uint64_t)(i % 3) && E.trials[i].attn.seed == E.trials[i].seed;
        seeds_ok &= strcmp(E.trials[i].key, E.trials[i - i % 3].key) == 0; /* key does not include the seed */
    }
    ok(seeds_ok, "seeds are seed, seed+1, seed+2 per combination, the key is the same for every seed");

    /* ---- zip ---- */
    snprintf(y, sizeof y,
             "name: z\nparams: {backend: %s}\nsweep:\n  heads: [1, 2]\n  zip:\n    seq: [64, 128, 256]\n    head_dim: [8, 16, 32]\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 6, "zip of 3 with an axis of 2: 6 trials (got %d)", E.ntrials);
    int zip_ok = 1;
    for (int i = 0; i < E.ntrials; i++) {
        const attn_params *p = &E.trials[i].attn;
        zip_ok &= p->head_dim * 8 == p->seq; /* 64<->8, 128<->16, 256<->32 */
    }
    ok(zip_ok, "zip: zipped axes move together");
    snprintf(y, sizeof y,
             "name: z2\nparams: {backend: %s}\nsweep:\n  zip:\n    - {seq: [64, 128], head_dim: [8, 16]}\n    - {heads: [1, 2, 4], batch: [4, 2, 1]}\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 6, "two zip groups (2 and 3) multiply: 6 trials (got %d)", E.ntrials);
    zip_ok = 1;
    for (int i = 0; i < E.ntrials; i++) zip_ok &= E.trials[i].attn.heads * E.trials[i].attn.batch == 4;
    ok(zip_ok, "zip groups: pairs kept within each group");
    snprintf(y, sizeof y, "name: z3\nparams: {backend: %s}\nsweep:\n  zip:\n    seq: [64, 128]\n    head_dim: [8, 16, 32]\n",
             plain);
    ok(load(y) != 0 && has_err("t.yaml:6:15: head_dim: zip"), "zip lists of different lengths are refused at the line of the odd list");
    snprintf(y, sizeof y,
             "name: z4\nparams: {backend: %s}\nsweep:\n  zip:\n    seq: [64, 64, 128]\n    head_dim: [8, 16, 16]\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 3, "zip: a value may repeat in a list when the combinations differ (got %d trials)",
       E.ntrials);
    snprintf(y, sizeof y,
             "name: z5\nparams: {backend: %s}\nsweep:\n  zip:\n    seq: [64, 128, 64]\n    head_dim: [8, 16, 8]\n",
             plain);
    ok(load(y) != 0 && has_err("t.yaml:5:20: seq: zip: combination 3 repeats combination 1"),
       "zip: a repeated combination is refused at its position");

    /* ---- exclude / only ---- */
    snprintf(y, sizeof y,
             "name: f\nparams: {backend: %s, head_dim: 8}\nsweep:\n  seq: [64, 128, 256]\n  heads: [1, 2]\n"
             "  exclude:\n    - {seq: 256, heads: 2}\n    - {seq: 64}\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 6 - 1 - 2, "exclude drops 3 of 6 (got %d)", E.ntrials);
    int fok = 1;
    for (int i = 0; i < E.ntrials; i++) fok &= E.trials[i].attn.seq != 64 && !(E.trials[i].attn.seq == 256 && E.trials[i].attn.heads == 2);
    ok(fok, "exclude: the excluded combinations are gone");
    snprintf(y, sizeof y,
             "name: f2\nparams: {backend: %s, head_dim: 8}\nsweep:\n  seq: [64, 128, 256]\n  heads: [1, 2]\n"
             "  only:\n    - {seq: 128}\n    - {seq: 256, heads: 1}\n  exclude: [{heads: 2}]\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 2, "only keeps matches of any entry, then exclude: 2 trials (got %d)", E.ntrials);
    snprintf(y, sizeof y, "name: f3\nparams: {backend: %s}\nsweep:\n  seq: [64]\n  exclude: [{seq: 64}]\n", plain);
    ok(load(y) != 0 && has_err("no trials"), "excluding everything is an error");
    snprintf(y, sizeof y, "name: f4\nparams: {backend: %s}\nsweep:\n  seq: [64, 128]\n  exclude: [{seq: 99}]\n", plain);
    ok(load(y) != 0 && has_err("t.yaml:5:19: seq: exclude: 99 is not one of"), "a filter value that is not on the axis is refused");

    /* ---- axes a backend does not use; clusters: auto ---- */
    if (clu) {
        snprintf(y, sizeof y,
                 "name: u\nparams: {head_dim: 8}\nsweep:\n  backend: [%s, %s]\n  seq: [64, 256]\n  clusters: [2, 4, auto]\n",
                 plain, clu);
        ok(load(y) == 0, "sweep over clusters with a backend that ignores them loads");
        ok(count_backend(plain) == 2, "%s: clusters axis does not multiply its trials: 2 (got %d)", plain,
           count_backend(plain));
        ok(count_backend(clu) == 2 * 3, "%s: 2 seqs x 3 cluster counts = 6 (got %d)", clu, count_backend(clu));
        int auto_ok = 1, nauto = 0;
        for (int i = 0; i < E.ntrials; i++) {
            const exp_trial *t = &E.trials[i];
            if (strcmp(t->backend, clu)) continue;
            int k = t->attn.clusters;
            if (k != 2 && k != 4) {
                nauto++;
                auto_ok &= k == (int)lround(sqrt((double)t->attn.seq));
            }
        }
        ok(auto_ok && nauto == 2, "clusters: auto resolves per trial to round(sqrt(seq)) (8 for 64, 16 for 256)");
        int named = 0;
        for (int i = 0; i < E.ntrials; i++)
            if (!strcmp(E.trials[i].backend, clu) && E.trials[i].attn.seq == 256 && E.trials[i].attn.clusters == 16) {
                char want[64];
                snprintf(want, sizeof want, "%s-n256-k16-w%d", clu, E.trials[i].attn.window);
                named = strcmp(E.trials[i].name, want) == 0;
                if (!named) diag("name %s, expected %s", E.trials[i].name, want);
            }
        ok(named, "readable name backend-nSEQ-kK-wW");
        /* more clusters than tokens: reported at the offending sweep value's line */
        snprintf(y, sizeof y, "name: bad\nparams: {backend: %s, seq: 64, head_dim: 8}\nsweep:\n  clusters:\n    - 4\n    - 100\n",
                 clu);
        ok(load(y) != 0 && has_err("t.yaml:6:7: clusters:"), "more clusters than tokens: error at line 6 col 7 (the value 100)");
    } else {
        skip("no routing-like backend registered (uses clusters and window)");
    }

    /* ---- keys ---- */
    snprintf(y, sizeof y, "name: k1\nparams: {backend: %s, seq: 64}\n", plain);
    char k1[17], k2[17];
    LR = load(y);
    ok(LR == 0 && E.ntrials == 1, "a file without sweep is one trial");
    snprintf(k1, sizeof k1, "%s", E.trials[0].key);
    snprintf(y, sizeof y, "name: k1\ndescription: other words\nparams: {backend: %s, seq: 64, heads: 1, causal: yes}\n", plain);
    load(y);
    snprintf(k2, sizeof k2, "%s", E.ntrials ? E.trials[0].key : "");
    ok(strcmp(k1, k2) == 0, "writing out default values or changing the description keeps the key (%s %s)", k1, k2);
    snprintf(y, sizeof y, "name: k1\nparams: {backend: %s, seq: 64, heads: 2}\n", plain);
    load(y);
    ok(E.ntrials == 1 && strcmp(k1, E.trials[0].key) != 0, "changing a resolved parameter changes the key");
    snprintf(y, sizeof y, "name: k1\ntiming: {runs: 9}\nparams: {backend: %s, seq: 64}\n", plain);
    load(y);
    ok(E.ntrials == 1 && strcmp(k1, E.trials[0].key) != 0, "changing timing runs changes the key");

    /* ---- validation messages ---- */
    const char *bad =
        "name: v\n"                   /* 1 */
        "params:\n"                   /* 2 */
        "  seqq: 64\n"                /* 3 */
        "  heads: two\n"              /* 4 */
        "  head_dim: -8\n"            /* 5 */
        "sweep:\n"                    /* 6 */
        "  batch: []\n"               /* 7 */
        "  heads: [1]\n"              /* 8 */
        "repaet: 2\n";                /* 9 */
    ok(load(bad) != 0, "a file with several problems is refused");
    ok(ERRS.n >= 6, "all problems are reported together (%d)", ERRS.n);
    ok(has_err("t.yaml:3:3: seqq: unknown parameter") && has_err("did you mean 'seq'"), "unknown key at 3:3 with the closest key suggested");
    ok(has_err("t.yaml:4:10: heads: expected an integer"), "wrong type at 4:10");
    ok(has_err("t.yaml:5:13: head_dim: -8 is out of range"), "negative size at 5:13");
    ok(has_err("t.yaml:7:10: batch: empty list"), "empty list at 7:10");
    ok(has_err("t.yaml:8:3: heads: set twice (also at line 4)"), "a parameter both fixed and swept at 8:3");
    ok(has_err("t.yaml:9:1: repaet: unknown key (did you mean 'repeat'?)"), "unknown top-level key with suggestion");
    ok(load("name: x\nparams: {seq: 64}\nparams: {seq: 32}\n") != 0 && has_err("t.yaml:3:1: params: duplicated key (first at line 2)"),
       "duplicated key");
    ok(load("name: x\nkind: train\nparams: {head_dim: 64}\n") != 0 && has_err("unknown parameter for train"),
       "a bench-attn parameter in a train experiment is refused");
    ok(load("name: x\nparams: &a {seq: 64}\nsweep: *a\n") != 0 && has_err("anchors"), "anchors/aliases refused");
    ok(load("") != 0 && has_err("t.yaml:1:1: empty"), "empty file");
    ok(load("name: x\nparams: {seq: 64, heads: 99999999999999999999}\n") != 0 && has_err("t.yaml:2:26: heads:"),
       "a number too large for its type");

    /* ---- train and bench-model trials use the training keys ---- */
    snprintf(y, sizeof y,
             "name: tr\nkind: train\nparams: {task: copy, d_model: 32, layers: 1, heads: 2, steps: 3, batch: 2}\n"
             "sweep:\n  seq: [32, 64]\n  lr: [1e-3, 3e-3]\n  backend: [%s]\n",
             plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 4, "train sweep: 2 x 2 = 4 trials (got %d)", E.ntrials);
    if (E.ntrials == 4) {
        train_config c;
        char err[256];
        int cok = exp_trial_config(&E, &E.trials[3], &c, err, sizeof err) == 0;
        ok(cok && c.seq == 64 && fabsf(c.lr - 3e-3f) < 1e-9f && c.d_model == 32 && c.steps == 3 && !strcmp(c.task, "copy"),
           "train trial config carries fixed and swept values");
        char json[4096];
        exp_trial_json(&E, &E.trials[3], json, sizeof json);
        ok(strstr(json, "\"lr\":0.003") != NULL, "train key JSON normalises 3e-3 to 0.003: %s", json);
    }
    snprintf(y, sizeof y, "name: bm\nkind: bench\nbench: model\nparams: {d_model: 32, layers: 1, heads: 2, seq: 64, backend: %s}\n", plain);
    LR = load(y);
    ok(LR == 0 && E.ntrials == 1, "bench: model with training keys loads");

    ok(rb_levenshtein("clusers", "clusters") == 1 && rb_levenshtein("abc", "abc") == 0 &&
           rb_levenshtein("kitten", "sitting") == 3,
       "edit distance");
    exp_free(&E);
    return tap_done();
}
