#!/usr/bin/env bash
# fuzz_replay.sh: the fuzz targets of tests/fuzz/ replayed with this build
# (no clang: $BUILD/fuzz/replay_TARGET, made by `make tests`): every input
# that ever crashed a target (tests/fuzz/crashes/TARGET/, kept as regression
# tests) and the seed corpus (tests/fuzz/corpus/TARGET/) go through the
# target without a crash, a failed check or (under `make sanitize`) a
# sanitizer report, and every file is replayed. The driver itself must
# refuse an input it cannot read.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
n=0; fail=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

for t in experiment train_config npy checkpoint manifest flags; do
  bin=$BUILD/fuzz/replay_$t
  if [ ! -x "$bin" ]; then ok 1 "$t: $bin is missing (make tests builds it)"; continue; fi
  for kind in crashes corpus; do
    dir=tests/fuzz/$kind/$t
    files=$(find "$dir" -maxdepth 1 -type f ! -name '.*' 2>/dev/null | wc -l)
    if [ "$kind" = corpus ] && [ "$files" = 0 ]; then ok 1 "$t: no seed corpus in $dir (tests/fuzz/make_seeds.sh)"; continue; fi
    [ "$files" = 0 ] && { ok 0 "$t: no kept crashes"; continue; }
    timeout 300 "$bin" -v "$dir" >"$tmp/out" 2>"$tmp/err"; rc=$?
    last=$(grep '^replay: ' "$tmp/err" | tail -1)
    [ $rc = 0 ] && grep -qx "replayed $files inputs, 0 unreadable" "$tmp/out"
    ok $? "$t: $files $kind inputs replayed, exit $rc$([ $rc = 0 ] || echo " at: $last: $(grep -m1 -E 'ERROR|runtime error|check failed' "$tmp/err")")"
  done
done

"$BUILD/fuzz/replay_npy" "$tmp/no-such-input" >/dev/null 2>&1; rc=$?
[ $rc != 0 ]; ok $? "an input the driver cannot read fails the replay (exit $rc)"

echo "1..$n"
exit $fail
