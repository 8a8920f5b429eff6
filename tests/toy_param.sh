#!/usr/bin/env bash
# toy_param.sh: a new parameter is one line of core/util/params.def. The
# table has a test-only line `toy` behind #ifdef RB_TOY_PARAM; this builds
# routebench with it (in build/toy, nothing else edited) and checks that the
# one line made it a flag with help, an experiment-file key with validation,
# a part of trial keys and names, a database column and a report column.
. "$(dirname "$0")/tap.bash"
cd "$TOP" || exit 1
B=${BUILD:-build}/toy
NORMAL=${RB:-build/routebench}
if ! make -s BUILD=$B EXTRA_CFLAGS=-DRB_TOY_PARAM $B/routebench >$B.log 2>&1; then
  echo "not ok 1 - build with -DRB_TOY_PARAM"; cat $B.log; echo "1..1"; exit 1
fi
RB=$B/routebench
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

$RB attn --help | grep -q -- "--toy N"; ok $? "attn --help lists --toy"
$RB attn --backend dense --seq 32 --toy 7 --repeat 1 --json >"$tmp/j" 2>&1; rc=$?
[ $rc = 0 ] && grep -q '"toy":7' "$tmp/j"; ok $? "attn --toy 7 is accepted and reported in --json (rc $rc)"
$RB attn --backend dense --seq 32 --toy 5000 >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "toy: 5000 is out of range" "$tmp/o"; ok $? "attn --toy 5000 refused with the table's range (rc $rc)"

cat >"$tmp/t.yaml" <<'YAML'
name: toy
timing: {runs: 1, warmup: 0}
params: {backend: dense, seq: 32}
sweep:
  toy: [0, 3]
YAML
$RB run "$tmp/t.yaml" --dry-run >"$tmp/d" 2>&1; rc=$?
[ $rc = 0 ] && grep -q '"toy":3' "$tmp/d" && ! grep -q '"toy":0' "$tmp/d" && grep -q -- "-toy=3" "$tmp/d"
ok $? "a toy axis: 2 trials, toy in the key JSON only when not at its default, in the name (rc $rc)"
printf 'name: toy\nparams: {backend: dense, seq: 32}\nsweep:\n  toy: [1, 1001]\n' >"$tmp/bad.yaml"
$RB run "$tmp/bad.yaml" --dry-run >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "bad.yaml:4:12: toy: 1001 is out of range" "$tmp/o"; ok $? "YAML validation of toy at its line and column (rc $rc)"

$RB run "$tmp/t.yaml" --db "$tmp/t.db" --no-sgemm --quiet >/dev/null 2>&1; rc=$?
ok $rc "the toy sweep runs"
[ "$(sqlite3 "$tmp/t.db" "SELECT group_concat(toy) FROM (SELECT toy FROM trials ORDER BY toy)")" = "0,3" ]
ok $? "the trials table has a toy column with each trial's value"
$RB report "$tmp/t.db" --format csv >"$tmp/r" 2>&1
head -1 "$tmp/r" | grep -q "toy"; ok $? "report shows toy as a column: $(head -1 "$tmp/r")"
# the normal build knows no such parameter
"$NORMAL" attn --backend dense --seq 32 --toy 1 >/dev/null 2>&1; [ $? = 2 ]
ok $? "without the line, --toy is an unknown option"
tap_end
