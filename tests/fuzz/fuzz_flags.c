/* fuzz_flags.c: the command-line parser (core/cli/flags.c: cli_parse with
 * its flag types, the parameter flags of core/util/params.def and their
 * value parsers), then what the commands do with a parse that succeeded
 * before any work: attn validates the layer's parameters, train (and export,
 * analyze through cli_kv) checks the configuration and sizes the model, run
 * reads its durations. Input: a first byte choosing the command's table
 * (0 attn, 1 train, 2 run, by value modulo 3), then the arguments separated
 * by NUL bytes. Help text goes to stdout, complaints to stderr, as in the
 * program; nothing is run. */
#include "fuzz.h"
#include "fuzz_config.h"

#include "attn/attn.h"
#include "cli/flags.h"
#include "model/model.h"
#include "model/train.h"
#include "util/measure.h"

#define MAX_ARGS 64

static int set_attn(void *target, const rb_param *d, const char *text, char *err, size_t errlen) {
    return attn_params_set(target, d->name, text, err, errlen);
}

static void fuzz_attn(int argc, char **argv) {
    attn_params p;
    attn_params_default(&p);
    const char *backend = NULL, *save = NULL, *load = NULL;
    int threads = 0, repeat = 5, warmup = 1, json = 0, check = 0, eval = 0;
    double min_time = 0.25, max_time = 3, tol = 0.05;
    const cli_flag flags[] = {
        {"--backend", NULL, FL_STR, &backend, "NAME", 0, 0, NULL, "a backend"},
        {"--threads", NULL, FL_INT, &threads, "T", 1, 4096, NULL, "threads"},
        {"--repeat", NULL, FL_INT, &repeat, "R", 1, 100000, NULL, "timed runs\nat least"},
        {"--warmup", NULL, FL_INT, &warmup, "W", 0, 100000, NULL, "untimed runs"},
        {"--min-time", NULL, FL_DOUBLE, &min_time, "S", 0, 1e6, NULL, "seconds"},
        {"--max-time", NULL, FL_DOUBLE, &max_time, "S", 0, 1e6, NULL, "seconds"},
        {"--tol", NULL, FL_DOUBLE, &tol, "F", 0, 10, NULL, "IQR / median"},
        {"--check", NULL, FL_SWITCH, &check, NULL, 0, 0, NULL, "check"},
        {"--json", NULL, FL_SWITCH, &json, NULL, 0, 0, NULL, "json"},
        {"--save", NULL, FL_STR, &save, "DIR", 0, 0, NULL, "save"},
        {"--load", NULL, FL_STR, &load, "DIR", 0, 0, NULL, "load"},
        {"--eval", NULL, FL_SWITCH, &eval, NULL, 0, 0, NULL, "eval"},
    };
    const cli_spec spec = {.cmd = "attn", .synopsis = "--backend NAME --seq N [options]", .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .params = CLI_PARAMS_ATTN,
                           .set_param = set_attn, .target = &p};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    FUZZ_CHECK(rc == CLI_OK || rc == CLI_HELP || rc == CLI_BAD);
    if (rc != CLI_OK) return;
    const attn_backend *be = attn_find(backend ? backend : "dense");
    char err[1024];
    if (be && p.seq > 0) (void)attn_validate_msg(be, &p, err, sizeof err);
}

static void fuzz_train(int argc, char **argv) {
    const char *file = NULL;
    int threads = 0, bench = 0, dry = 0, json = 0, log_every = 0;
    cli_kv kv;
    cli_kv_init(&kv, argc);
    const cli_flag flags[] = {
        {"--config", NULL, FL_STR, &file, "FILE", 0, 0, NULL, "a file"},
        {"--threads", NULL, FL_INT, &threads, "N", 1, 4096, NULL, "threads"},
        {"--bench", NULL, FL_INT, &bench, "N", 1, 1 << 20, NULL, "steps"},
        {"--dry-run", NULL, FL_SWITCH, &dry, NULL, 0, 0, NULL, "dry"},
        {"--json", NULL, FL_SWITCH, &json, NULL, 0, 0, NULL, "json"},
        {"--log-every", NULL, FL_INT, &log_every, "N", 1, 1 << 30, NULL, "steps"},
    };
    const cli_spec spec = {.cmd = "train", .flags = flags, .nflags = (int)(sizeof flags / sizeof flags[0]),
                           .params = CLI_PARAMS_MODEL, .set_param = cli_kv_remember, .target = &kv};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    FUZZ_CHECK(rc == CLI_OK || rc == CLI_HELP || rc == CLI_BAD);
    FUZZ_CHECK(kv.n <= argc);
    if (rc == CLI_OK) {
        /* build_config's last step and preflight's check, as train --dry-run */
        train_config *c = malloc(sizeof *c);
        if (!c) abort();
        train_config_default(c);
        char err[1024];
        int bad = 0;
        for (int i = 0; i < kv.n && !bad; i++) bad = train_config_set(c, kv.kv[2 * i], kv.kv[2 * i + 1], err, sizeof err);
        FUZZ_CHECK(!bad); /* cli_kv_remember refused it at once otherwise */
        if (train_config_check(c, err, sizeof err) == 0) {
            fuzz_check_config_ranges(c);
            (void)model_param_sizes(c, NULL);
            (void)train_flops_per_step(c);
        }
        free(c);
    }
    cli_kv_free(&kv);
}

static void fuzz_run(int argc, char **argv) {
    const char *db = NULL, *shard = NULL, *filter = NULL, *timeout = NULL, *ckpt = NULL, *file[1];
    int threads = 0, dry = 0, no_sgemm = 0, in_process = 0, quiet = 0, new_overrides = 0, order = 0, npos = 0;
    cli_multi sets = {{0}, 0};
    const cli_flag flags[] = {
        {"--db", NULL, FL_STR, &db, "PATH", 0, 0, NULL, "database"},
        {"--threads", NULL, FL_INT, &threads, "T", 1, 4096, NULL, "threads"},
        {"--shard", NULL, FL_STR, &shard, "I/N", 0, 0, NULL, "shard"},
        {"--filter", NULL, FL_STR, &filter, "PAT", 0, 0, NULL, "filter"},
        {"--dry-run", NULL, FL_SWITCH, &dry, NULL, 0, 0, NULL, "dry"},
        {"--no-sgemm", NULL, FL_SWITCH, &no_sgemm, NULL, 0, 0, NULL, "no sgemm"},
        {"--timeout", NULL, FL_STR, &timeout, "T", 0, 0, NULL, "a duration"},
        {"--checkpoint-every", NULL, FL_STR, &ckpt, "T", 0, 0, NULL, "a duration"},
        {"--in-process", NULL, FL_SWITCH, &in_process, NULL, 0, 0, NULL, "in process"},
        {"--quiet", "-q", FL_SWITCH, &quiet, NULL, 0, 0, NULL, "quiet"},
        {"--set", NULL, FL_MULTI, &sets, "KEY=VALUE", 0, 0, NULL, "override"},
        {"--new-overrides", NULL, FL_SWITCH, &new_overrides, NULL, 0, 0, NULL, "new overrides"},
        {"--order", NULL, FL_CHOICE, &order, "WHAT", 0, 0, "file|name|seq", "an order"},
        {"--from-last", NULL, FL_SWITCH, &order, NULL, 3, 0, NULL, "a switch with a value"},
    };
    const cli_spec spec = {.cmd = "run", .synopsis = "FILE.yaml [options]", .flags = flags,
                           .nflags = (int)(sizeof flags / sizeof flags[0]), .positional = "FILE.yaml",
                           .min_pos = 1, .max_pos = 1};
    int rc = cli_parse(&spec, argc, argv, file, &npos);
    FUZZ_CHECK(rc == CLI_OK || rc == CLI_HELP || rc == CLI_BAD);
    if (rc != CLI_OK) return;
    FUZZ_CHECK(npos == 1 && file[0] != NULL);
    FUZZ_CHECK(sets.n <= CLI_MULTI_MAX && order >= 0 && order <= 3);
    double s;
    if (timeout && rb_parse_seconds(timeout, &s) == 0) FUZZ_CHECK(s > 0 && s <= 1e7);
    if (ckpt && rb_parse_seconds(ckpt, &s) == 0) FUZZ_CHECK(s > 0 && s <= 1e7);
    char text[1024];
    cli_argv_text(argc, argv, text, sizeof text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    if (size < 1) return 0;
    char *copy = fuzz_cstr(data + 1, size - 1);
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "routebench";
    for (size_t off = 0; off < size - 1 && argc < MAX_ARGS;) {
        argv[argc++] = copy + off;
        off += strlen(copy + off) + 1;
    }
    argv[argc] = NULL;
    switch (data[0] % 3) {
    case 0: fuzz_attn(argc, argv); break;
    case 1: fuzz_train(argc, argv); break;
    default: fuzz_run(argc, argv); break;
    }
    free(copy);
    return 0;
}
