/* fuzz_train_config.c: `routebench train --config FILE`, parameters from a
 * YAML mapping (exp_train_config_string), then the configuration check that
 * runs before a model is built (train_config_check) and what --dry-run prints
 * from it (parameter count, FLOPs). Nothing is built, trained or written. */
#include "fuzz.h"
#include "fuzz_config.h"

#include "harness/experiment.h"
#include "model/model.h"
#include "model/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    train_config *c = malloc(sizeof *c);
    exp_errors *errs = calloc(1, sizeof *errs);
    if (!c || !errs) abort();
    train_config_default(c);
    int rc = exp_train_config_string((const char *)data, size, "fuzz.yaml", c, errs);
    if (rc != 0) {
        FUZZ_CHECK(errs->n > 0);
    } else {
        char err[1024];
        if (train_config_check(c, err, sizeof err) == 0) {
            fuzz_check_config_ranges(c);
            (void)model_param_sizes(c, NULL);
            (void)train_flops_per_step(c);
            /* what a checkpoint stores: the text form reads back as the same configuration */
            char *text = malloc(TRAIN_CONFIG_TEXT_LEN);
            if (!text) abort();
            if (train_config_to_text(c, text, TRAIN_CONFIG_TEXT_LEN) >= 0) {
                train_config *back = malloc(sizeof *back);
                if (!back) abort();
                train_config_default(back);
                FUZZ_CHECK(train_config_from_text(back, text, err, sizeof err) == 0);
                FUZZ_CHECK(train_config_hash(back) == train_config_hash(c));
                free(back);
            }
            free(text);
        }
    }
    free(errs);
    free(c);
    return 0;
}
