/* cli.c: see cli.h. */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_int(const char *flag, const char *val, long min, long max, int *out) {
    if (!val) {
        fprintf(stderr, "routebench: %s needs a value\n", flag);
        return -1;
    }
    char *end;
    errno = 0;
    long x = strtol(val, &end, 10);
    if (errno || end == val || *end) {
        fprintf(stderr, "routebench: %s: '%s' is not an integer\n", flag, val);
        return -1;
    }
    if (x < min || x > max) {
        fprintf(stderr, "routebench: %s: %ld is out of range [%ld, %ld]\n", flag, x, min, max);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cli_u64(const char *flag, const char *val, unsigned long long *out) {
    if (!val) {
        fprintf(stderr, "routebench: %s needs a value\n", flag);
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(val, &end, 10);
    if (errno || end == val || *end || val[0] == '-') {
        fprintf(stderr, "routebench: %s: '%s' is not a non-negative integer\n", flag, val);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_float(const char *flag, const char *val, float *out) {
    if (!val) {
        fprintf(stderr, "routebench: %s needs a value\n", flag);
        return -1;
    }
    char *end;
    errno = 0;
    float x = strtof(val, &end);
    if (errno || end == val || *end || !isfinite(x)) {
        fprintf(stderr, "routebench: %s: '%s' is not a number\n", flag, val);
        return -1;
    }
    *out = x;
    return 0;
}

const char cli_attn_flags_help[] =
    "  --seq N            sequence length (required)\n"
    "  --heads H          attention heads (default 1)\n"
    "  --head-dim D       dimension per head (default 64)\n"
    "  --batch B          batch size (default 1)\n"
    "  --no-causal        bidirectional attention (default: causal)\n"
    "  --window W         local: block size (default 256 or seq; a last block shorter than W is\n"
    "                     allowed, no padding); routing: cluster size (default seq/clusters)\n"
    "  --clusters K|auto  routing: centroids per head (default auto = round(sqrt(seq)))\n"
    "  --local-heads L    hybrid: heads that are local, the rest routing (default heads/2)\n"
    "  --share-qk 0|1     routing: keys = queries (default 1 when causal, 0 otherwise)\n"
    "  --assign topk|argmax  routing: balanced top-k clusters (default) or nearest centroid\n"
    "  --norm l2|layernorm   routing vectors' normalisation (default l2)\n"
    "  --decay X          routing: k-means EMA decay (default 0.999)\n"
    "  --commit-weight X  routing: weight of the commitment loss in backward (default 0)\n"
    "  --kmeans-iters N   routing: Lloyd iterations initialising the centroids (default 3)\n"
    "  --seed S           random seed for inputs and centroid initialisation (default 1)\n";

int cli_attn_flag(int argc, char **argv, int *i, attn_params *p) {
    const char *f = argv[*i];
    const char *val = (*i + 1 < argc) ? argv[*i + 1] : NULL;
    int rc;
#define INTFLAG(name, field, lo, hi)                                  \
    if (strcmp(f, name) == 0) {                                       \
        rc = cli_int(f, val, lo, hi, &p->field);                      \
        (*i)++;                                                       \
        return rc ? -1 : 1;                                           \
    }
    INTFLAG("--seq", seq, 1, 1 << 24)
    INTFLAG("--heads", heads, 1, 4096)
    INTFLAG("--head-dim", head_dim, 1, 65536)
    INTFLAG("--batch", batch, 1, 1 << 20)
    INTFLAG("--window", window, 1, 1 << 24)
    INTFLAG("--local-heads", local_heads, 0, 4096)
    INTFLAG("--share-qk", share_qk, 0, 1)
    INTFLAG("--kmeans-iters", kmeans_iters, 0, 1000)
#undef INTFLAG
    if (strcmp(f, "--no-causal") == 0) {
        p->causal = 0;
        return 1;
    }
    if (strcmp(f, "--causal") == 0) {
        p->causal = 1;
        return 1;
    }
    if (strcmp(f, "--clusters") == 0) {
        (*i)++;
        if (val && strcmp(val, "auto") == 0) {
            p->clusters = 0;
            return 1;
        }
        return cli_int(f, val, 1, 1 << 24, &p->clusters) ? -1 : 1;
    }
    if (strcmp(f, "--assign") == 0 || strcmp(f, "--norm") == 0) {
        (*i)++;
        int is_assign = f[2] == 'a';
        const char *a = is_assign ? "topk" : "l2", *b = is_assign ? "argmax" : "layernorm";
        int *field = is_assign ? &p->assign : &p->norm;
        if (val && strcmp(val, a) == 0) *field = 0;
        else if (val && strcmp(val, b) == 0) *field = 1;
        else {
            fprintf(stderr, "routebench: %s must be %s or %s (got '%s')\n", f, a, b, val ? val : "");
            return -1;
        }
        return 1;
    }
    if (strcmp(f, "--decay") == 0 || strcmp(f, "--commit-weight") == 0) {
        (*i)++;
        return cli_float(f, val, f[2] == 'd' ? &p->decay : &p->commit_weight) ? -1 : 1;
    }
    if (strcmp(f, "--seed") == 0) {
        unsigned long long s;
        (*i)++;
        if (cli_u64(f, val, &s)) return -1;
        p->seed = s;
        return 1;
    }
    return 0;
}
