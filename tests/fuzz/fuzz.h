/* fuzz.h: what the fuzz targets of tests/fuzz/ share. Each fuzz_NAME.c
 * defines LLVMFuzzerTestOneInput for one parser of untrusted input; it is
 * linked either with libFuzzer (clang -fsanitize=fuzzer, `make fuzz`) or with
 * tests/fuzz/replay.c (any compiler, `make check` replays the kept crashes
 * and the seed corpus). A target must not write to the disk: inputs that a
 * parser only reads from a path go through an anonymous memory file
 * (memfd_create) named by its /proc/self/fd path. */
#ifndef RB_FUZZ_H
#define RB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/threads.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One memory file per slot, reused: its content replaced by data[0..size).
 * Returns a path any fopen() reads it through. Aborts when the kernel has no
 * memfd (a broken harness, not a finding). */
static inline const char *fuzz_memfile(int slot, const void *data, size_t size) {
    static int fds[4] = {-1, -1, -1, -1};
    static char paths[4][64];
    if (slot < 0 || slot > 3) abort();
    if (fds[slot] < 0) {
        fds[slot] = memfd_create("rb-fuzz", 0);
        if (fds[slot] < 0) {
            perror("fuzz: memfd_create");
            abort();
        }
        snprintf(paths[slot], sizeof paths[slot], "/proc/self/fd/%d", fds[slot]);
    }
    if (ftruncate(fds[slot], 0) != 0) abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fds[slot], (const char *)data + off, size - off, (off_t)off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    return paths[slot];
}

/* Once per process: one thread (a fuzz run is one core's work; the OpenMP
 * teams of a model would only add noise). */
static inline void fuzz_once(void) {
    static int done;
    if (done) return;
    done = 1;
    rb_set_threads(1);
}

/* A NUL-terminated copy of data (parsers that take C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* A property the target checks (a round trip, an invariant): a failure is a
 * finding, reported like a crash. */
#define FUZZ_CHECK(cond)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                   \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

#endif
