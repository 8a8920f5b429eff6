#!/usr/bin/env bash
# run_shard.sh: two shards (--shard 0/2 and 1/2) run as two concurrent
# processes, each into its own database, and `routebench merge` folds them
# into one that holds exactly the trials of an unsharded run (same keys,
# seeds, names, all done, the same metrics per trial). Merge refuses shards
# of another experiment or of an edited file, and merging twice adds nothing.
. "$(dirname "$0")/tap.bash"
Y=$TESTS/yaml
X=$TOP/experiments/example.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
command -v sqlite3 >/dev/null || { echo "1..0 # SKIP sqlite3 not installed"; exit 0; }
q() { sqlite3 -cmd ".timeout 5000" "$1" "$2"; }
run() { "$RB" run "$X" --threads 1 --no-sgemm --quiet "$@"; }

run --shard 0/2 --db "$tmp/s0.db" & p0=$!
run --shard 1/2 --db "$tmp/s1.db" & p1=$!
wait $p0; r0=$?; wait $p1; r1=$?
ok $([ $r0 = 0 ] && [ $r1 = 0 ]; echo $?) "both shards exit 0 ($r0, $r1)"
run --db "$tmp/all.db"; ok $? "the unsharded run exits 0"
n0=$(q "$tmp/s0.db" "SELECT count(*) FROM trials"); n1=$(q "$tmp/s1.db" "SELECT count(*) FROM trials")
na=$(q "$tmp/all.db" "SELECT count(*) FROM trials")
ok $([ $((n0 + n1)) = "$na" ] && [ "$n0" -gt 0 ] && [ "$n1" -gt 0 ]; echo $?) "shards split the trials: $n0 + $n1 = $na"
ok $([ "$(q "$tmp/s0.db" "SELECT count(*) FROM trials WHERE idx % 2 <> 0")" = 0 ]; echo $?) "shard 0/2 holds only even indices"
"$RB" merge "$tmp/m.db" "$tmp/s0.db" "$tmp/s1.db" 2>"$tmp/mlog"; ok $? "merge exits 0: $(cat "$tmp/mlog")"
sel="SELECT key, seed, name, status, idx, backend, seq, clusters, window, params FROM trials ORDER BY key, seed"
q "$tmp/m.db" "$sel" >"$tmp/m.txt"; q "$tmp/all.db" "$sel" >"$tmp/a.txt"
cmp -s "$tmp/m.txt" "$tmp/a.txt"; ok $? "merged trials = unsharded trials ($(wc -l <"$tmp/m.txt") rows; diff: $(diff "$tmp/m.txt" "$tmp/a.txt" | head -3 | tr '\n' ' '))"
msel="SELECT t.key, t.seed, m.name, m.step IS NULL FROM metrics m JOIN trials t ON t.id = m.trial_id ORDER BY 1, 2, 3"
q "$tmp/m.db" "$msel" >"$tmp/mm.txt"; q "$tmp/all.db" "$msel" >"$tmp/am.txt"
cmp -s "$tmp/mm.txt" "$tmp/am.txt"; ok $? "merged metric names per trial = unsharded ($(wc -l <"$tmp/mm.txt") rows)"
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM trials WHERE status <> 'done'")" = 0 ]; echo $?) "all merged trials done"
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM experiments")" = 2 ] && [ "$(q "$tmp/m.db" "SELECT count(DISTINCT shard) FROM experiments")" = 2 ]; echo $?) "both shard runs recorded, with their shard"
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM trials t LEFT JOIN experiments e ON e.id = t.experiment_id WHERE e.id IS NULL")" = 0 ]; echo $?) "every merged trial points at its run"
"$RB" merge "$tmp/m.db" "$tmp/s0.db" "$tmp/s1.db" 2>/dev/null
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM trials")" = "$na" ] && [ "$(q "$tmp/m.db" "SELECT count(*) FROM metrics")" = "$(q "$tmp/all.db" "SELECT count(*) FROM metrics")" ]; echo $?) "merging again adds nothing"
# resuming a merged database: nothing left to run
run --db "$tmp/m.db" 2>/dev/null; ok $? "running the file against the merged database exits 0"
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM trials")" = "$na" ]; echo $?) "and adds no trial"

# two unsharded processes on one database share the work without doing a trial twice
run --db "$tmp/both.db" --filter 'dense-n64' 2>/dev/null   # creates the database first
run --db "$tmp/both.db" & p0=$!
run --db "$tmp/both.db" & p1=$!
wait $p0; r0=$?; wait $p1; r1=$?
ok $([ $r0 = 0 ] && [ $r1 = 0 ]; echo $?) "two processes on one database both exit 0 ($r0, $r1)"
ok $([ "$(q "$tmp/both.db" "SELECT count(*) FROM trials WHERE status='done'")" = "$na" ] && [ "$(q "$tmp/both.db" "SELECT max(attempts) FROM trials")" = 1 ]; echo $?) "every trial done exactly once (max attempts $(q "$tmp/both.db" "SELECT max(attempts) FROM trials"))"
# exit 0 means every selected trial is done, also for the first of two to
# finish: two quick trials and a slow last one, so one process is left with
# nothing to claim while the other still runs the slow trial
printf 'name: race\ntiming: {runs: 40, warmup: 1}\nparams: {backend: dense, heads: 2}\nsweep:\n  seq: [32, 48, 2048]\n' >"$tmp/race.yaml"
"$RB" run "$tmp/race.yaml" --threads 1 --no-sgemm --quiet --db "$tmp/race.db" --filter n32 >/dev/null 2>&1
"$RB" run "$tmp/race.yaml" --threads 1 --no-sgemm --quiet --db "$tmp/race.db" & p0=$!
"$RB" run "$tmp/race.yaml" --threads 1 --no-sgemm --quiet --db "$tmp/race.db" & p1=$!
wait -n $p0 $p1; rfirst=$?
dfirst=$(q "$tmp/race.db" "SELECT count(*) FROM trials WHERE status='done'")
wait $p0 $p1 2>/dev/null
ok $([ $rfirst = 0 ] && [ "$dfirst" = 3 ]; echo $?) "the first of two runs to exit 0 leaves every trial done ($dfirst of 3 at its exit)"

# a run that dies while another waits for its trial: the waiting run takes
# the trial over (the dead run's row says interrupted), runs it and exits 0
printf 'name: takeover\ntiming: {runs: 30, warmup: 1, max_time: 20}\nparams: {backend: dense, heads: 2}\nsweep:\n  seq: [4096]\n' >"$tmp/take.yaml"
"$RB" run "$tmp/take.yaml" --threads 1 --no-sgemm --quiet --db "$tmp/take.db" & pa=$!
for i in $(seq 100); do
  [ "$(q "$tmp/take.db" "SELECT count(*) FROM trials WHERE status = 'running'" 2>/dev/null)" = 1 ] && break; sleep 0.1
done
# a run that never takes over fails at 120 s (the trial stops adding samples at 20 s; under the
# sanitizers a pass of it takes seconds)
timeout 120 "$RB" run "$tmp/take.yaml" --threads 1 --no-sgemm --db "$tmp/take.db" >"$tmp/take.out" 2>&1 & pb=$!
sleep 1.5
pkill -9 -P $pa; kill -9 $pa; wait $pa 2>/dev/null
wait $pb; rb=$?
st=$(q "$tmp/take.db" "SELECT status || ' ' || attempts FROM trials")
ok $([ $rb = 0 ] && [ "$st" = "done 2" ] && grep -q "is being run by" "$tmp/take.out"; echo $?) \
   "a run that dies while another waits: the other takes its trial over and exits 0 (exit $rb, trial $st)"

# refusals: another experiment; the same name but an edited file
"$RB" run "$Y/good_resume.yaml" --threads 1 --no-sgemm --quiet --db "$tmp/other.db" --filter 'dense-n256' >/dev/null 2>&1
before=$(q "$tmp/m.db" "SELECT count(*) FROM trials")
"$RB" merge "$tmp/m.db" "$tmp/other.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "other.db" "$tmp/o" && grep -q "resume" "$tmp/o"; echo $?) "merging another experiment is refused with a message (rc $rc: $(head -c 200 "$tmp/o"))"
ok $([ "$(q "$tmp/m.db" "SELECT count(*) FROM trials")" = "$before" ]; echo $?) "and changes nothing"
sed 's/runs: 3/runs: 2/' "$X" >"$tmp/edited.yaml"
"$RB" run "$tmp/edited.yaml" --threads 1 --no-sgemm --quiet --shard 1/2 --db "$tmp/e1.db" >/dev/null 2>&1
"$RB" merge "$tmp/m2.db" "$tmp/s0.db" "$tmp/e1.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "YAML hash" "$tmp/o" && [ ! -e "$tmp/m2.db" ]; echo $?) "shards of an edited file are refused, no output written (rc $rc)"
"$RB" merge "$tmp/m3.db" "$tmp/nosuch.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "nosuch.db" "$tmp/o"; echo $?) "a missing input is named (rc $rc)"
"$RB" merge "$tmp/m3.db" >/dev/null 2>&1; ok $([ $? = 2 ]; echo $?) "merge without inputs: usage, exit 2"
tap_end
