/* cmd_attn.c: `routebench attn` (time or check one attention layer) and
 * `routebench backends` (list the registry). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/bench.h"
#include "cli/cli.h"
#include "cli/cmd_npy.h"
#include "cli/commands.h"
#include "util/threads.h"

int cmd_backends(int argc, char **argv) {
    int names_only = argc > 1 && (strcmp(argv[1], "-q") == 0 || strcmp(argv[1], "--names") == 0);
    if (argc > 2 || (argc > 1 && !names_only)) {
        fprintf(stderr, "usage: routebench backends [--names]\n"
                        "One registered attention backend per line with a short description;\n"
                        "--names (-q) prints the names alone.\n");
        return 2;
    }
    for (int i = 0; i < attn_count(); i++) {
        const attn_backend *be = attn_get(i);
        if (names_only) printf("%s\n", be->name);
        else printf("%-12s %s\n", be->name, be->description);
    }
    return 0;
}

static void attn_usage(FILE *f) {
    fprintf(f,
            "usage: routebench attn --backend NAME --seq N [options]\n"
            "Times one attention layer: forward, backward and forward+backward, median over\n"
            "--repeat runs after --warmup untimed ones, with GFLOP/s from the backend's analytic\n"
            "count (2 FLOPs per multiply-add, only attended query-key pairs), its activation\n"
            "bytes and the process's peak RSS. With --check it instead checks the backend's\n"
            "gradients against central finite differences and, where the configuration must\n"
            "equal dense attention, its outputs and gradients against `dense`; exit 1 on failure.\n\n"
            "options:\n"
            "  --backend NAME     one of: %s\n"
            "%s"
            "  --threads T        threads for everything (default: all cores)\n"
            "  --repeat R         timed runs (default 5)\n"
            "  --warmup W         untimed runs first (default 1)\n"
            "  --check            check gradients / agreement with dense instead of timing\n"
            "  --json             print one JSON object\n"
            "  --save DIR         instead of timing, run one forward and backward pass and write its\n"
            "                     inputs and results to DIR as .npy (q, k, v, dout, out, dq, dk, dv; routing:\n"
            "                     centroids_before/after, members) with manifest.json\n"
            "  --load DIR         take q, k, v, dout (and centroids_before, if there) from DIR/*.npy;\n"
            "                     without --seq the sizes come from q.npy; results go to DIR unless --save\n"
            "  --eval             with --save/--load: an evaluation pass (routing: centroids stay put)\n",
            attn_names(), cli_attn_flags_help);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

static void json_num(double x) {
    if (isfinite(x)) printf("%.6g", x);
    else printf("null");
}

int cmd_attn(int argc, char **argv) {
    attn_params p;
    attn_params_default(&p);
    const char *backend = NULL;
    int threads = 0, repeat = 5, warmup = 1, json = 0, check = 0, eval = 0;
    const char *save_dir = NULL, *load_dir = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_attn_flag(argc, argv, &i, &p);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(f, "--backend") == 0) {
            if (!val) {
                fprintf(stderr, "routebench attn: --backend needs a value (one of: %s)\n", attn_names());
                return 2;
            }
            backend = val, i++;
        } else if (strcmp(f, "--threads") == 0) {
            if (cli_int(f, val, 1, 4096, &threads)) return 2;
            i++;
        } else if (strcmp(f, "--repeat") == 0) {
            if (cli_int(f, val, 1, 100000, &repeat)) return 2;
            i++;
        } else if (strcmp(f, "--warmup") == 0) {
            if (cli_int(f, val, 0, 100000, &warmup)) return 2;
            i++;
        } else if (strcmp(f, "--json") == 0) json = 1;
        else if (strcmp(f, "--check") == 0) check = 1;
        else if (strcmp(f, "--eval") == 0) eval = 1;
        else if (strcmp(f, "--save") == 0 || strcmp(f, "--load") == 0) {
            if (!val) {
                fprintf(stderr, "routebench attn: %s needs a directory\n", f);
                return 2;
            }
            *(f[2] == 's' ? &save_dir : &load_dir) = val, i++;
        }
        else if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            attn_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "routebench attn: unknown option '%s'\n", f);
            attn_usage(stderr);
            return 2;
        }
    }
    if (!backend) {
        fprintf(stderr, "routebench attn: --backend is required (one of: %s)\n", attn_names());
        return 2;
    }
    if (eval && !save_dir && !load_dir) {
        fprintf(stderr, "routebench attn: --eval applies to --save/--load passes only\n");
        return 2;
    }
    if ((save_dir || load_dir) && check) {
        fprintf(stderr, "routebench attn: --check does not combine with --save/--load\n");
        return 2;
    }
    if (p.seq == 0 && !load_dir) {
        fprintf(stderr, "routebench attn: --seq is required\n");
        return 2;
    }
    rb_set_threads(threads);
    char err[512];
    if (save_dir || load_dir) {
        int narrays;
        if (attn_npy_pass(backend, &p, eval ? ATTN_EVAL : ATTN_TRAIN, load_dir, save_dir, &narrays, err, sizeof err) != 0) {
            fprintf(stderr, "routebench attn: %s\n", err);
            return 2;
        }
        if (!json) printf("%s: wrote %d arrays and manifest.json to %s\n", backend, narrays, save_dir ? save_dir : load_dir);
        else {
            printf("{\"backend\": ");
            json_str(backend);
            printf(", \"dir\": ");
            json_str(save_dir ? save_dir : load_dir);
            printf(", \"arrays\": %d}\n", narrays);
        }
        return 0;
    }
    if (check) {
        attn_check_result r;
        if (attn_check(backend, &p, &r, err, sizeof err) != 0) {
            fprintf(stderr, "routebench attn: %s\n", err);
            return 2;
        }
        if (json) {
            printf("{\"backend\": ");
            json_str(backend);
            printf(", \"seq\": %d, \"heads\": %d, \"head_dim\": %d, \"batch\": %d, \"causal\": %s, "
                   "\"pass\": %s, \"grad_rel_err\": ",
                   p.seq, p.heads, p.head_dim, p.batch, p.causal ? "true" : "false", r.pass ? "true" : "false");
            json_num(r.grad_rel_err);
            printf(", \"dense_max_abs_err\": ");
            json_num(r.compared_dense ? r.dense_max_abs_err : NAN);
            printf(", \"detail\": ");
            json_str(r.detail);
            printf("}\n");
        } else {
            printf("%s: %s\n  gradient vs central differences: worst relative error %.3g (%s)\n", backend,
                   r.pass ? "PASS" : "FAIL", r.grad_rel_err, r.detail);
            if (r.compared_dense) printf("  against dense: max abs difference %.3g\n", r.dense_max_abs_err);
            else printf("  against dense: not applicable for this configuration\n");
        }
        return r.pass ? 0 : 1;
    }
    attn_bench_result r;
    if (attn_bench(backend, &p, repeat, warmup, &r, err, sizeof err) != 0) {
        fprintf(stderr, "routebench attn: %s\n", err);
        return 2;
    }
    if (json) {
        printf("{\"backend\": ");
        json_str(backend);
        printf(", \"seq\": %d, \"heads\": %d, \"head_dim\": %d, \"batch\": %d, \"causal\": %s, \"window\": %d, "
               "\"clusters\": %d, \"threads\": %d, \"repeat\": %d, ",
               p.seq, p.heads, p.head_dim, p.batch, p.causal ? "true" : "false", p.window, p.clusters,
               rb_threads(), r.repeat);
        printf("\"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwdbwd_ms\": %.4f, \"fwd_ms_min\": %.4f, \"fwd_ms_max\": %.4f, "
               "\"fwd_flops\": %.6g, \"bwd_flops\": %.6g, \"fwd_gflops\": %.3f, \"fwdbwd_gflops\": %.3f, "
               "\"act_bytes\": %zu, \"inst_bytes\": %zu, \"base_rss_bytes\": %zu, \"peak_rss_bytes\": %zu",
               r.fwd_ms, r.bwd_ms, r.fwdbwd_ms, r.fwd_ms_min, r.fwd_ms_max, r.fwd_flops, r.bwd_flops, r.fwd_gflops,
               r.fwdbwd_gflops, r.act_bytes, r.inst_bytes, r.base_rss_bytes, r.peak_rss_bytes);
        printf(", \"stats\": {");
        for (int i = 0; i < r.nstats; i++) {
            printf("%s", i ? ", " : "");
            json_str(r.stats[i].name);
            printf(": ");
            json_num(r.stats[i].value);
        }
        printf("}}\n");
    } else {
        printf("%s  seq %d  heads %d  head_dim %d  batch %d  %s", backend, p.seq, p.heads, p.head_dim, p.batch,
               p.causal ? "causal" : "non-causal");
        if (p.window) printf("  window %d", p.window);
        if (p.clusters) printf("  clusters %d", p.clusters);
        printf("  threads %d\n", rb_threads());
        printf("  forward           %9.3f ms  (min %.3f, max %.3f)  %8.2f GFLOP/s\n", r.fwd_ms, r.fwd_ms_min,
               r.fwd_ms_max, r.fwd_gflops);
        printf("  backward          %9.3f ms  (min %.3f, max %.3f)\n", r.bwd_ms, r.bwd_ms_min, r.bwd_ms_max);
        printf("  forward+backward  %9.3f ms  %8.2f GFLOP/s  (median of %d)\n", r.fwdbwd_ms, r.fwdbwd_gflops,
               r.repeat);
        printf("  activation bytes  %zu analytic, %zu held\n", r.act_bytes, r.inst_bytes);
        printf("  peak RSS          %.1f MiB (baseline with inputs %.1f MiB)\n", r.peak_rss_bytes / 1048576.0,
               r.base_rss_bytes / 1048576.0);
        for (int i = 0; i < r.nstats; i++) printf("  %-17s %.6g\n", r.stats[i].name, r.stats[i].value);
    }
    return 0;
}
