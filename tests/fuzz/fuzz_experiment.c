/* fuzz_experiment.c: the experiment-file loader and validator
 * (exp_load_string_sets: libyaml, the tree, the keys, the --set overrides,
 * the expansion into trials). The input is the file's text, optionally
 * followed by NUL-separated --set overrides ("yaml\0seq=64\0sweep.window=[8]").
 * Out: a validated experiment or messages; nothing is written anywhere.
 * Checked beside "no crash": a refusal says where (every message has a line
 * and column, or names its --set), a loaded experiment has trials and
 * each trial's parameters can be rebuilt as `run` rebuilds them. */
#include "fuzz.h"

#include "harness/experiment.h"
#include "model/train.h"

#define MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    /* the text up to the first NUL, then the overrides */
    const uint8_t *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - data) : size;
    char *copy = fuzz_cstr(data, size);
    const char *sets[MAX_SETS];
    int nsets = 0;
    for (size_t off = ylen + 1; nul && off <= size && nsets < MAX_SETS;) {
        sets[nsets++] = copy + off;
        off += strlen(copy + off) + 1;
    }
    experiment *e = calloc(1, sizeof *e);
    exp_errors *errs = calloc(1, sizeof *errs);
    if (!e || !errs) abort();
    int rc = exp_load_string_sets(e, copy, ylen, "fuzz.yaml", nsets ? sets : NULL, nsets, errs);
    if (rc != 0) {
        FUZZ_CHECK(errs->n > 0); /* a refusal always says why */
        /* every problem has a place: line:col in the text (> 0), or its --set (line < 0) */
        for (int i = 0; i < errs->n && i < EXP_MAX_ERRORS; i++)
            FUZZ_CHECK(strlen(errs->msg[i]) > 0 && (errs->line[i] < 0 || (errs->line[i] > 0 && errs->col[i] > 0)));
    } else {
        FUZZ_CHECK(errs->n == 0 && e->ntrials > 0 && e->ntrials <= EXP_MAX_TRIALS);
        /* what `run` does with each trial before running it (the first few) */
        train_config *c = malloc(sizeof *c);
        if (!c) abort();
        for (int i = 0; i < e->ntrials && i < 16; i++) {
            char json[4096], err[1024]; /* print_trials's size */
            FUZZ_CHECK(exp_trial_json(e, &e->trials[i], json, sizeof json) == 0);
            if (e->kind != EXP_KIND_BENCH || e->bench == EXP_BENCH_MODEL)
                (void)exp_trial_config(e, &e->trials[i], c, err, sizeof err);
        }
        free(c);
        exp_free(e);
    }
    free(errs);
    free(e);
    free(copy);
    return 0;
}
