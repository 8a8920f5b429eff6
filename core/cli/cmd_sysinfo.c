/* cmd_sysinfo.c: `routebench sysinfo`, the machine and its sgemm ceiling. */
#include <stdio.h>
#include <string.h>

#include "cli/flags.h"
#include "cli/commands.h"
#include "util/sysinfo.h"
#include "util/threads.h"

int cmd_sysinfo(int argc, char **argv) {
    int json = 0, threads = 0;
    const cli_flag flags[] = {
        {"--threads", NULL, FL_INT, &threads, "T", 1, 4096, NULL, "threads (default: all cores)"},
        {"--json", NULL, FL_SWITCH, &json, NULL, 0, 0, NULL, "print one JSON object"},
    };
    const cli_spec spec = {.cmd = "sysinfo", .synopsis = "[--threads T] [--json]",
                           .about = "CPU model, cores, threads in use, BLAS and its threading, the SIMD of our kernels\n"
                                    "and of OpenBLAS's, and the sgemm GFLOP/s (2048-cube product: runs until their\n"
                                    "IQR is within 5% of the median, at most 3 s) with that thread count: the\n"
                                    "ceiling every benchmark is compared with. Where OpenBLAS runs narrower kernels\n"
                                    "than ours (OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU), shares of it can pass 1.\n"
                                    "Warns when the measurement is noisy (a wide spread, or other processes using\n"
                                    "the cores it needs).",
                           .flags = flags, .nflags = 2};
    int rc = cli_parse(&spec, argc, argv, NULL, NULL);
    if (rc != CLI_OK) return cli_exit(rc);
    rb_set_threads(threads);
    rb_sysinfo s;
    rb_sysinfo_read(&s, 1);
    if (json) {
        printf("{\"cpu\": \"%s\", \"host\": \"%s\", \"cores\": %d, \"threads\": %d, \"blas\": \"%s\", \"kernels\": \"%s\", "
               "\"sgemm_n\": %d, \"sgemm_gflops\": %.2f, \"sgemm_gflops_iqr\": %.2f, \"sgemm_runs\": %d, "
               "\"noisy\": %s, \"noise\": \"%s\"}\n",
               s.cpu, s.host, s.cores, s.threads, s.blas, s.kernels, RB_SGEMM_N, s.sgemm_gflops, s.sgemm.gflops_iqr, s.sgemm.runs,
               s.sgemm.noisy ? "true" : "false", s.sgemm.noise);
    } else {
        printf("cpu           %s\nhost          %s\ncores         %d\nthreads       %d\nblas          %s\nkernels       %s\n"
               "sgemm         %.1f GFLOP/s (IQR %.1f; %d^3, median of %d runs, %d threads)%s\n",
               s.cpu, s.host, s.cores, s.threads, s.blas, s.kernels, s.sgemm_gflops, s.sgemm.gflops_iqr, RB_SGEMM_N, s.sgemm.runs,
               s.threads, s.sgemm.noisy ? " *noisy*" : "");
    }
    if (s.sgemm.noisy) fprintf(stderr, "routebench sysinfo: warning: noisy measurement: %s\n", s.sgemm.noise);
    return 0;
}
