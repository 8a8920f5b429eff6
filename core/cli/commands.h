/* commands.h: the subcommands of `routebench`, each `int cmd_x(argc, argv)`
 * with argv[0] the subcommand's name; the return value is the exit status
 * (0 ok, 1 a failed check or run, 2 bad usage or input). commands.def lists
 * them. */
#ifndef RB_COMMANDS_H
#define RB_COMMANDS_H

#define RB_COMMAND(name, help) int cmd_##name(int argc, char **argv);
#include "cli/commands.def"
#undef RB_COMMAND

#endif
