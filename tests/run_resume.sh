#!/usr/bin/env bash
# run_resume.sh: a sweep killed with SIGKILL in the middle and run again ends
# with every trial exactly once, all done, none half-written: the trials done
# before the kill are kept as they were (not rerun), the one in flight is
# found `running` by a dead process, marked interrupted and run again, and no
# metrics belong to a trial that is not done. Then a YAML edit that changes
# one parameter adds new trials without touching the recorded ones, and
# `repeat: 3` runs only the new seed.
. "$(dirname "$0")/tap.bash"
Y=$TESTS/yaml
tmp=$(mktemp -d); trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
command -v sqlite3 >/dev/null || { echo "1..0 # SKIP sqlite3 not installed"; exit 0; }
db=$tmp/r.db
q() { sqlite3 -cmd ".timeout 5000" "$db" "$1"; }

total=$("$RB" run "$Y/good_resume.yaml" --dry-run | head -1 | sed -n 's/^[^:]*: \([0-9]*\) trials.*/\1/p')
ok $([ "$total" = 8 ]; echo $?) "the sweep has 8 trials (got $total)"

"$RB" run "$Y/good_resume.yaml" --db "$db" --threads 1 --no-sgemm 2>"$tmp/log1" &
pid=$!
# wait until two trials are done, then kill without warning
for i in $(seq 1 600); do
  d=$(q "SELECT count(*) FROM trials WHERE status='done'" 2>/dev/null || echo 0)
  [ "${d:-0}" -ge 2 ] && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
done1=$(q "SELECT count(*) FROM trials WHERE status='done'")
running=$(q "SELECT count(*) FROM trials WHERE status='running'")
ok $([ "$done1" -ge 2 ] && [ "$done1" -lt 8 ]; echo $?) "killed in the middle: $done1 of 8 done"
ok $([ "$(q "SELECT count(*) FROM trials")" = 8 ]; echo $?) "all 8 trials registered before running"
ok $([ "$running" -le 1 ]; echo $?) "at most one trial was in flight ($running)"
orphans=$(q "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE t.status <> 'done'")
ok $([ "$orphans" = 0 ]; echo $?) "no metrics of an unfinished trial after the kill ($orphans)"
q "SELECT id, ended_at FROM trials WHERE status='done' ORDER BY id" >"$tmp/before"

"$RB" run "$Y/good_resume.yaml" --db "$db" --threads 1 --no-sgemm 2>"$tmp/log2"; rc=$?
ok $rc "the rerun exits 0"
grep -q "$((8 - done1)) to run" "$tmp/log2"; ok $? "the rerun runs only the $((8 - done1)) trials not done: $(head -1 "$tmp/log2")"
[ "$running" = 0 ] || { grep -q "killed run marked interrupted" "$tmp/log2"; ok $? "the trial in flight was found and marked interrupted"; }
ok $([ "$(q "SELECT count(*) FROM trials")" = 8 ]; echo $?) "8 trials in the database"
ok $([ "$(q "SELECT count(*) FROM (SELECT DISTINCT key, seed FROM trials)")" = 8 ]; echo $?) "each (key, seed) exactly once"
ok $([ "$(q "SELECT count(*) FROM trials WHERE status='done'")" = 8 ]; echo $?) "all done"
per=$(q "SELECT DISTINCT backend || ':' || c FROM (SELECT t.backend, count(m.name) AS c FROM trials t LEFT JOIN metrics m ON m.trial_id = t.id GROUP BY t.id)" | tr '\n' ' ')
least=$(q "SELECT min(c) FROM (SELECT count(m.name) AS c FROM trials t LEFT JOIN metrics m ON m.trial_id = t.id GROUP BY t.id)")
ok $([ "$(echo $per | wc -w)" = 2 ] && [ "$least" -ge 10 ]; echo $?) "every trial of a backend has the same full set of metrics (backend:count $per)"
dups=$(q "SELECT count(*) FROM (SELECT trial_id, name FROM metrics WHERE step IS NULL GROUP BY 1, 2 HAVING count(*) > 1)")
ok $([ "$dups" = 0 ]; echo $?) "no metric recorded twice"
q "SELECT id, ended_at FROM trials WHERE id IN (SELECT id FROM trials) ORDER BY id" | grep -Fxf "$tmp/before" | wc -l >"$tmp/kept"
ok $([ "$(cat "$tmp/kept")" = "$done1" ]; echo $?) "trials done before the kill were not rerun ($(cat "$tmp/kept") of $done1 unchanged)"
ok $([ "$(q "SELECT count(*) FROM trials WHERE attempts = 2")" = "$running" ]; echo $?) "the interrupted trial ran twice, the others once"
ok $([ "$(q "SELECT count(*) FROM experiments")" = 2 ]; echo $?) "both runs recorded in experiments"
ok $([ "$(q "SELECT status FROM experiments ORDER BY id LIMIT 1")" = interrupted ] &&
     [ "$(q "SELECT status FROM experiments ORDER BY id DESC LIMIT 1")" = done ]; echo $?) \
   "the killed run's row says interrupted, the rerun's done ($(q "SELECT group_concat(status) FROM experiments"))"
ok $([ "$(q "SELECT count(*) FROM experiments WHERE git_commit IS NOT NULL AND host IS NOT NULL AND yaml LIKE '%name: resume%'")" = 2 ]; echo $?) "runs carry the YAML, commit and host"
ok $([ "$(q "SELECT count(*) FROM experiments WHERE blas LIKE 'OpenBLAS %; routebench % kernels%'")" = 2 ]; echo $?) "and the BLAS beside the SIMD of our kernels and OpenBLAS's: $(q "SELECT blas FROM experiments LIMIT 1")"

"$RB" run "$Y/good_resume.yaml" --db "$db" --threads 1 --no-sgemm 2>"$tmp/log3"; rc=$?
ok $([ $rc = 0 ] && grep -q " 0 to run" "$tmp/log3"; echo $?) "a third run has nothing to do"

# a changed parameter makes new trials; repeat 3 adds only the third seed
sed -e 's/head_dim: 32/head_dim: 16/' -e 's/runs: 150/runs: 2/' "$Y/good_resume.yaml" >"$tmp/changed.yaml"
"$RB" run "$tmp/changed.yaml" --db "$db" --threads 1 --no-sgemm --quiet; rc=$?
ok $([ $rc = 0 ] && [ "$(q "SELECT count(*) FROM trials")" = 16 ]; echo $?) "a changed head_dim adds 8 new trials, keeps the 8 old"
ok $([ "$(q "SELECT count(*) FROM trials WHERE head_dim=32 AND status='done'")" = 8 ]; echo $?) "old trials untouched"
sed -i 's/repeat: 2/repeat: 3/' "$tmp/changed.yaml"
"$RB" run "$tmp/changed.yaml" --db "$db" --threads 1 --no-sgemm 2>"$tmp/log4"; rc=$?
ok $([ $rc = 0 ] && grep -q "12 trials selected of 12, 4 to run" "$tmp/log4"; echo $?) "repeat 3: only the 4 new seeds run"
tap_end
