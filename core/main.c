/* main.c: the routebench command line (stub while the CLI is written). */
#include <stdio.h>
#include <string.h>

#include "attn.h"

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "backends") == 0) {
        for (int i = 0; i < attn_count(); i++) printf("%s\t%s\n", attn_get(i)->name, attn_get(i)->description);
        return 0;
    }
    fprintf(stderr, "usage: routebench backends\n");
    return 2;
}
