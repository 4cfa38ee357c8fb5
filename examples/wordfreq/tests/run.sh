#!/bin/sh
# Runs every tests/*.in through the program and compares with tests/*.expected.
set -e
bin=$1
failed=0
for input in tests/*.in; do
    expected=${input%.in}.expected
    if "$bin" -n 3 < "$input" | diff -u "$expected" -; then
        echo "ok   $input"
    else
        echo "FAIL $input"
        failed=1
    fi
done
exit $failed
