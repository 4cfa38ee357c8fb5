#!/bin/sh
# Runs every tests/*.in through the program and compares with tests/*.expected. Under strata
# (or RWX) it also writes a JUnit report into $RWX_TEST_RESULTS, which the run summary reads.
set -e
bin=$1
failed=0
cases=""
for input in tests/*.in; do
    expected=${input%.in}.expected
    name=$(basename "$input" .in)
    if "$bin" -n 3 < "$input" | diff -u "$expected" -; then
        echo "ok   $input"
        cases="$cases<testcase classname=\"wordfreq\" name=\"$name\"/>"
    else
        echo "FAIL $input"
        cases="$cases<testcase classname=\"wordfreq\" name=\"$name\"><failure message=\"output differs from $expected\"/></testcase>"
        failed=1
    fi
done
if [ -n "$RWX_TEST_RESULTS" ]; then
    echo "<testsuites><testsuite name=\"golden\">$cases</testsuite></testsuites>" > "$RWX_TEST_RESULTS/golden.xml"
fi
exit $failed
