/* wordfreq: prints the most frequent words of its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "count.h"

int main(int argc, char **argv) {
    size_t top = 10;
    int skip = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            puts("wordfreq 1.0");
            return 0;
        } else if (strcmp(argv[i], "--all-words") == 0) {
            skip = 0;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            top = (size_t)strtoul(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: wordfreq [-n N] [--all-words] < text\n");
            return 2;
        }
    }
    struct counts c = {0};
    counts_read(&c, stdin, skip);
    counts_sort(&c);
    for (size_t i = 0; i < c.len && i < top; i++) printf("%zu %s\n", c.items[i].count, c.items[i].word);
    counts_free(&c);
    return 0;
}
