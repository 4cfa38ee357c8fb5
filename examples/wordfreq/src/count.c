#define _POSIX_C_SOURCE 200809L /* strdup */

#include "count.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "gen-stopwords.h"

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int is_stopword(const char *word) {
    return bsearch(&word, STOPWORDS, sizeof STOPWORDS / sizeof *STOPWORDS, sizeof *STOPWORDS,
                   cmp_str) != NULL;
}

void counts_add(struct counts *c, const char *word) {
    for (size_t i = 0; i < c->len; i++) {
        if (strcmp(c->items[i].word, word) == 0) {
            c->items[i].count++;
            return;
        }
    }
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->items = realloc(c->items, c->cap * sizeof *c->items);
        if (!c->items) {
            perror("realloc");
            exit(1);
        }
    }
    c->items[c->len].word = strdup(word);
    c->items[c->len].count = 1;
    c->len++;
}

void counts_read(struct counts *c, FILE *in, int skip_stopwords) {
    char word[256];
    size_t n = 0;
    int ch;
    do {
        ch = fgetc(in);
        if (ch != EOF && isalpha(ch)) {
            if (n < sizeof word - 1) word[n++] = (char)tolower(ch);
        } else if (n > 0) {
            word[n] = '\0';
            if (!skip_stopwords || !is_stopword(word)) counts_add(c, word);
            n = 0;
        }
    } while (ch != EOF);
}

static int cmp_count(const void *a, const void *b) {
    const struct word_count *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

void counts_sort(struct counts *c) { qsort(c->items, c->len, sizeof *c->items, cmp_count); }

void counts_free(struct counts *c) {
    for (size_t i = 0; i < c->len; i++) free(c->items[i].word);
    free(c->items);
}
