#!/bin/sh
# Turns a word list into a sorted C array, for bsearch.
set -e
echo "/* generated from $1 by gen-stopwords.sh */"
echo "static const char *const STOPWORDS[] = {"
sort -u "$1" | sed 's/.*/    "&",/'
echo "};"
