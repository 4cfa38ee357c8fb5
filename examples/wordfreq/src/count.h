#ifndef COUNT_H
#define COUNT_H

#include <stddef.h>
#include <stdio.h>

struct word_count {
    char *word;
    size_t count;
};

struct counts {
    struct word_count *items;
    size_t len, cap;
};

int is_stopword(const char *word);
void counts_add(struct counts *c, const char *word);
void counts_read(struct counts *c, FILE *in, int skip_stopwords);
void counts_sort(struct counts *c);
void counts_free(struct counts *c);

#endif
