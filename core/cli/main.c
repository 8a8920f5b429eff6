/* main.c: the routebench command line: a table of subcommands. Each is a
 * cmd_x function in core/cli/cmd_*.c (several related commands may share a
 * file); adding one is a line here and one in commands.h. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"backends", cmd_backends, "list the registered attention backends"},
    {"attn", cmd_attn, "time (or --check) one attention layer"},
    {"sysinfo", cmd_sysinfo, "CPU, threads, BLAS and the measured sgemm GFLOP/s"},
    {"train", cmd_train, "train one model (flags), print its evaluation and step timing"},
    {"run", cmd_run, "run an experiment file (YAML sweep) into SQLite; resumable"},
    {"merge", cmd_merge, "fold shard databases of one experiment into one"},
    {"report", cmd_report, "tables (md/csv/tex) of a results database: mean ± std over seeds"},
    {"plot", cmd_plot, "gnuplot figures of a results database (scaling, memory, curves, heatmap, tradeoff)"},
    {"compare", cmd_compare, "compare a results database with a baseline; exit 1 on a regression"},
    {"export", cmd_export, "write a checkpoint's parameters as .npy files (for NumPy/PyTorch)"},
    {"import", cmd_import, "make a checkpoint from .npy parameter files"},
    {"analyze", cmd_analyze, "what a checkpoint's attention heads do: entropy, kept dense mass, JSD table"},
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: routebench COMMAND [options]   (routebench COMMAND --help for its options)\n\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "routebench: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
