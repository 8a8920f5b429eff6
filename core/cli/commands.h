/* commands.h: the subcommands of `routebench`, each `int cmd_x(argc, argv)`
 * with argv[0] the subcommand's name; the return value is the exit status
 * (0 ok, 1 a failed check or run, 2 bad usage or input). main.c lists them. */
#ifndef RB_COMMANDS_H
#define RB_COMMANDS_H

int cmd_backends(int argc, char **argv);
int cmd_attn(int argc, char **argv);
int cmd_sysinfo(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_analyze(int argc, char **argv);

#endif
