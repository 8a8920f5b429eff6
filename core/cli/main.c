/* main.c: the routebench command line: a table of subcommands. Each is a
 * cmd_x function in core/cli/cmd_*.c (several related commands may share a
 * file); adding one is a line in commands.def. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
#define RB_COMMAND(name, help) {#name, cmd_##name, help},
#include "cli/commands.def"
#undef RB_COMMAND
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
