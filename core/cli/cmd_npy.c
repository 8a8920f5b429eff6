/* cmd_npy.c: `routebench export CHECKPOINT DIR` and `routebench import DIR
 * CHECKPOINT` (core/model/model_npy.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/checkpoint.h"
#include "model/model_npy.h"
#include "model/train.h"
#include "util/status.h"
#include "util/threads.h"

static const char export_about[] =
    "Writes every parameter of the model in CHECKPOINT as DIR/<name>.npy (float32, C order;\n"
    "names like wte.weight, h.0.attn.qkv.weight, h.0.attn.centroids, ln_f.bias) and\n"
    "DIR/manifest.json with the configuration, which is read from the checkpoint. Parameters\n"
    "(those of `routebench train`) given on top replace single keys; ones that change the model\n"
    "are refused by the checkpoint's configuration hash. A checkpoint of format version 1\n"
    "(written before checkpoints held their configuration) needs the same options `routebench\n"
    "train` was given (--d-model 128 --layers 2 --backend routing ...).";

int cmd_export(int argc, char **argv) {
    cli_kv o;
    cli_kv_init(&o, argc);
    const char *pos[2];
    int threads = 0;
    const cli_flag flags[] = {
        {"--threads", NULL, FL_INT, &threads, "N", 1, 4096, NULL, "threads (default: all cores)"},
    };
    const cli_spec spec = {.cmd = "export", .synopsis = "CHECKPOINT DIR [--KEY VALUE ...]", .about = export_about,
                           .flags = flags, .nflags = 1, .params = CLI_PARAMS_MODEL, .set_param = cli_kv_remember,
                           .target = &o, .positional = "CHECKPOINT DIR", .min_pos = 2, .max_pos = 2};
    int rc = cli_parse(&spec, argc, argv, pos, NULL);
    char err[2048];
    train_config c;
    train_config_default(&c);
    if (rc == CLI_OK && checkpoint_config_with(pos[0], &c, o.kv, o.n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench export: %s\n", err);
        rc = CLI_BAD;
    }
    cli_kv_free(&o);
    if (rc != CLI_OK) return cli_exit(rc);
    rb_set_threads(threads);
    int n;
    if (npy_export_model(pos[0], pos[1], &c, &n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench export: %s\n", err);
        return RB_EXIT_USAGE;
    }
    printf("wrote %d arrays and manifest.json to %s\n", n, pos[1]);
    return RB_EXIT_OK;
}

int cmd_import(int argc, char **argv) {
    const char *pos[2];
    const cli_spec spec = {.cmd = "import", .synopsis = "DIR CHECKPOINT",
                           .about = "The reverse of export: reads the configuration from DIR/manifest.json (its\n"
                                    "\"config\" object) and every parameter from DIR/<name>.npy, and writes CHECKPOINT\n"
                                    "at step 0 with zero optimiser moments, so `routebench train --load CHECKPOINT`\n"
                                    "starts from those weights. Missing, unexpected or mis-shaped arrays are refused,\n"
                                    "each named.",
                           .positional = "DIR CHECKPOINT", .min_pos = 2, .max_pos = 2};
    int rc = cli_parse(&spec, argc, argv, pos, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    char err[8192];
    int n;
    if (npy_import_model(pos[0], pos[1], &n, err, sizeof err) != 0) {
        fprintf(stderr, "routebench import: %s\n", err);
        return RB_EXIT_USAGE;
    }
    printf("read %d arrays from %s, wrote %s\n", n, pos[0], pos[1]);
    return RB_EXIT_OK;
}
