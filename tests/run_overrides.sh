#!/usr/bin/env bash
# run_overrides.sh: `routebench run FILE --set KEY=VALUE` overrides the file
# without editing it: a parameter fixed or made an axis, timing and repeat;
# each override checked as a line of the file would be and reported as
# "--set N"; recorded with the run; a database keeps to one set of overrides
# unless --new-overrides says otherwise.
. "$(dirname "$0")/tap.bash"
rb_abs
X=$TOP/experiments/example.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
count() { "$RB" run "$X" --dry-run "$@" | head -1 | sed -n 's/^[^:]*: \([0-9]*\) trials.*/\1/p'; }

[ "$(count)" = 11 ]; ok $? "the file alone: 11 trials"
"$RB" run "$X" --dry-run --set seq=512 | tail -n +2 >o
[ "$(wc -l <o)" = 4 ] && ! grep -v '"seq":512' o | grep -q .; ok $? "--set seq=512 fixes seq: every trial at 512 (the exclude on seq 64 no longer applies): $(wc -l <o)"
[ "$(count --set seq=64)" = 3 ]; ok $? "--set seq=64: the exclude {backend: local, seq: 64} still drops local ($(count --set seq=64))"
"$RB" run "$X" --dry-run --set 'sweep.seq=[32, 48]' --set timing.runs=2 --set repeat=2 | tail -n +2 >o
[ "$(wc -l <o)" = 16 ] && grep -q '"runs":2' o && grep -q '"seq":48' o && grep -q 'seed 2' o
ok $? "--set sweep.seq=[32, 48] timing.runs=2 repeat=2: a new axis, the timing, two seeds ($(wc -l <o) trials)"
"$RB" run "$X" --dry-run --set seq=abc --set 'sweep.window=[x]' --set bogus=1 --set noequals >o 2>&1; rc=$?
[ $rc = 2 ] && grep -q "example.yaml: --set 1: seq: expected an integer, got 'abc'" o &&
  grep -q -- "--set 2: window: expected an integer or auto, got 'x'" o && grep -q -- "--set 3: bogus: unknown parameter" o &&
  grep -q -- "--set 4: expected KEY=VALUE" o
ok $? "bad overrides: each reported as --set N with its key, exit 2 (rc $rc)"

"$RB" run "$X" --db o.db --threads 1 --no-sgemm --quiet --set seq=64 --set clusters=4 >/dev/null 2>&1; rc=$?
[ $rc = 0 ] && [ "$(sqlite3 o.db "SELECT overrides FROM experiments")" = "seq=64; clusters=4" ]
ok $? "a run with overrides records them (rc $rc)"
"$RB" run "$X" --db o.db --threads 1 --no-sgemm --quiet --set seq=128 >o 2>&1; rc=$?
[ $rc = 2 ] && grep -q "new-overrides" o && [ "$(sqlite3 o.db "SELECT count(*) FROM experiments")" = 1 ]
ok $? "other overrides on that database are refused, nothing recorded (rc $rc)"
"$RB" run "$X" --db o.db --threads 1 --no-sgemm --quiet --set seq=128 --new-overrides >/dev/null 2>&1; rc=$?
[ $rc = 0 ] && [ "$(sqlite3 o.db "SELECT count(*) FROM experiments")" = 2 ]; ok $? "--new-overrides runs them (rc $rc)"
tap_end
