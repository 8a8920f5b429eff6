/* cli.h: helpers the subcommands share for reading flags: strict number
 * parsing (the whole argument must be a number in range) and the
 * attention-parameter flags that `attn`, `train` and friends all accept. */
#ifndef RB_CLI_H
#define RB_CLI_H

#include "attn/attn.h"

/* Parse val as an integer in [min, max] / a float; print "routebench: FLAG:
 * ..." to stderr and return -1 on error. */
int cli_int(const char *flag, const char *val, long min, long max, int *out);
int cli_u64(const char *flag, const char *val, unsigned long long *out);
int cli_float(const char *flag, const char *val, float *out);

/* If argv[*i] is one of the attention-parameter flags (--seq, --heads,
 * --head-dim, --batch, --no-causal, --causal, --window, --clusters N|auto,
 * --local-heads, --share-qk 0|1, --assign topk|argmax, --norm l2|layernorm,
 * --decay, --commit-weight, --kmeans-iters, --seed), consume it (and its
 * value, advancing *i) into p and return 1; 0 if it is not one of them; -1
 * on a bad value (message printed). */
int cli_attn_flag(int argc, char **argv, int *i, attn_params *p);

/* Help text for those flags, one per line. */
extern const char cli_attn_flags_help[];

#endif
