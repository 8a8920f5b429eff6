#!/usr/bin/env bash
# experiments_shipped.sh: every file in experiments/ validates (--dry-run
# exits 0, lists at least one trial, writes no database) and its header
# comment says how long it takes, as the README promises.
. "$(dirname "$0")/tap.bash"
rb_abs
X=$TOP/experiments
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
# text experiments check their corpus at validation: a stand-in for `make data`
mkdir -p data && printf 'In the beginning God created the heaven and the earth.\n' >data/kjv.txt
count=0
for f in "$X"/*.yaml; do
  b=$(basename "$f"); count=$((count+1))
  "$RB" run "$f" --dry-run --db "$tmp/x.db" >"$tmp/o" 2>&1; rc=$?
  trials=$(grep -Eo '^[a-z_0-9]+: [0-9]+ trials' "$tmp/o" | grep -Eo '[0-9]+ trials' | grep -Eo '[0-9]+')
  [ $rc = 0 ] && [ "${trials:-0}" -ge 1 ]
  ok $? "$b: --dry-run exits 0 with ${trials:-no} trials: $(head -c 200 "$tmp/o" | tr '\n' ' ')"
  [ ! -e "$tmp/x.db" ] && [ ! -e "$tmp/results" ]; ok $? "$b: the dry run wrote no database"
  grep -qiE '^#.*(duration|minutes|seconds|[0-9] ?h\b|hours)' "$f"; ok $? "$b: the header says how long it takes"
done
[ $count -ge 8 ]; ok $? "found the shipped experiment files ($count)"
tap_end
