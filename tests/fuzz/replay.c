/* replay.c: a main() for a fuzz target, built with the normal compiler and
 * flags (no clang, no libFuzzer): every file named, and every file in every
 * directory named, is handed to LLVMFuzzerTestOneInput once, in name order.
 * A crash, a sanitizer report (in `make sanitize`) or a failed check aborts
 * the process, so tests/fuzz_replay.sh sees a nonzero exit; on success it
 * prints how many inputs were replayed. `-v` names each input before it runs
 * (to find the one that crashes). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int verbose;

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        return -1;
    }
    if (verbose) fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    /* an exact-size copy, so a read past the end is caught under ASan */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) return free(buf), -1;
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    long count = 0;
    int errors = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
            continue;
        }
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += replay_file(argv[i]) != 0;
            count++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "replay: cannot open %s: %s\n", argv[i], strerror(errno));
            errors++;
            continue;
        }
        char **names = NULL;
        size_t nn = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue; /* ., .., and hidden files such as .gitkeep */
            names = realloc(names, (nn + 1) * sizeof *names);
            names[nn++] = strdup(de->d_name);
        }
        closedir(d);
        if (nn) qsort(names, nn, sizeof *names, cmp_name);
        for (size_t k = 0; k < nn; k++) {
            size_t len = strlen(argv[i]) + strlen(names[k]) + 2;
            char *path = malloc(len);
            snprintf(path, len, "%s/%s", argv[i], names[k]);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                errors += replay_file(path) != 0;
                count++;
            }
            free(path);
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld inputs, %d unreadable\n", count, errors);
    return errors ? 1 : 0;
}
