#!/usr/bin/env bash
# slurm_sweep.sh: experiments/slurm.sh against a real (one-node, private)
# Slurm cluster started on this machine by tests/slurm/start.sh.
#
# A small experiment (tests/slurm/sweep.yaml: ten tiny whole-model trials, one
# of which passes validation but fails at run time on purpose) is run
# unsharded as the reference, then submitted as a 3-task array with shard 1
# sabotaged (its database path is a directory): the merge job must report
# that shard and every one of its trials as never run, and the failing trial
# as failed with its error, and slurm.sh --wait must exit 1. The sabotage is
# removed (and one done trial of shard 0 made to look left `running` by a
# task killed elsewhere) and the same command is rerun: shards 0 and 2 must
# skip their done trials, the stale one must run again, and the merged
# database must hold exactly the reference's trials, once each, all done but
# the failing one, which is failed with the reference's error.
#
# The script's option handling is checked everywhere; the cluster part is
# skipped where Slurm (slurmctld, slurmd, munged) is not installed or we are
# not root (`make slurm-check` sets RB_SLURM_REQUIRED=1, which makes that a
# failure instead). The daemons this test starts are stopped by their
# recorded pids on every exit path. The cluster's ports are fixed, so one
# such test runs on a machine at a time: a lock serialises concurrent runs.
. "$(dirname "$0")/tap.bash"
BUILD=${BUILD:-build}
top=$TOP
script=$top/experiments/slurm.sh
yaml=$top/tests/slurm/sweep.yaml
diag() { sed 's/^/# /'; }

# --- the script's own checks: run anywhere, no cluster needed ---
"$script" --help >/dev/null 2>&1; ok $? "slurm.sh --help exits 0"
"$script" >/dev/null 2>&1; [ $? = 2 ]; ok $? "no experiment file: exit 2"
"$script" --bogus "$yaml" >/dev/null 2>&1; [ $? = 2 ]; ok $? "unknown option: exit 2"
for bad in "-n 0" "-n x" "-t 0" "--threads -1" "--max-running 0"; do
    "$script" $bad --rb "$RB" "$yaml" >/dev/null 2>&1; [ $? = 2 ]; ok $? "'$bad' refused with exit 2"
done
"$script" --rb "$RB" /nonexistent.yaml >/dev/null 2>&1; [ $? = 2 ]; ok $? "missing experiment file: exit 2"

tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
printf 'name: broken\nkind: bench\nbogus_key: 1\n' >"$tmp/broken.yaml"
(cd "$tmp" && "$script" --rb "$RB" --dry-run broken.yaml >"$tmp/o" 2>&1); rc=$?
[ $rc = 2 ] && grep -q 'broken.yaml:3' "$tmp/o" && [ ! -e "$tmp/results" ]
ok $? "an invalid experiment is refused with its file:line before anything is made (exit $rc)"

(cd "$tmp" && "$script" --rb "$RB" --dry-run -n 3 -t 2 -p short -T 10:00 "$yaml" >"$tmp/o" 2>&1); rc=$?
[ $rc = 0 ] && grep -q -- '--array 0-2 ' "$tmp/o" && grep -q -- '--cpus-per-task 2 ' "$tmp/o" &&
    grep -q -- '--partition short ' "$tmp/o" && grep -q -- '--time 10:00 ' "$tmp/o" &&
    grep -q -- '--dependency afterany:' "$tmp/o" && grep -q -- "--_shard .* 3 2 *$" "$tmp/o"
ok $? "--dry-run: array 0-2, --cpus-per-task 2, partition, time, afterany merge, threads 2 passed to the shards"

# --- the cluster ---
skip_rest() {
    if [ "${RB_SLURM_REQUIRED:-0}" = 1 ]; then
        ok 1 "Slurm cluster needed (RB_SLURM_REQUIRED=1): $1"
        echo "1..$n"; exit 1
    fi
    echo "ok $((n+1)) # SKIP $1"; n=$((n+1))
    echo "1..$n"; exit $fail
}
PATH=$PATH:/usr/sbin:/sbin
for b in slurmctld slurmd sbatch squeue munged; do
    [ -x "$(command -v $b)" ] || skip_rest "slurm not installed ($b not found; make slurm-check installs it)"
done
[ "$(id -u)" = 0 ] || skip_rest "not root: cannot start a private Slurm cluster"
exec 9>"${TMPDIR:-/tmp}/routebench-slurm-test.lock"
flock -w 300 9 || skip_rest "another slurm test held the cluster lock for 5 minutes"

state=$top/$BUILD/slurm-test
case "$BUILD" in /*) state=$BUILD/slurm-test ;; esac
cleanup() {
    "$top/tests/slurm/stop.sh" "$state" >&2 || echo "# could not stop every daemon recorded in $state" >&2
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t0=$(date +%s)
"$top/tests/slurm/start.sh" "$state" >"$tmp/start" 2>&1; rc=$?
diag <"$tmp/start"
[ $rc = 3 ] && skip_rest "$(tail -n1 "$tmp/start")"
ok $rc "one-node cluster started (state in $state)"
[ $rc = 0 ] || { echo "1..$n"; exit 1; }
# shellcheck disable=SC1091
. "$state/env.sh"
sinfo -h -N -o '%N %T %c' | diag

w=$tmp/w; mkdir -p "$w"
q() { sqlite3 -separator ' ' "$@"; }

# Reference: the same experiment, unsharded, on this machine.
"$RB" run "$yaml" --db "$w/ref.db" --threads 1 --no-sgemm >"$w/ref.out" 2>&1; rc=$?
ntr=$(q "$w/ref.db" "SELECT count(*) FROM trials;" 2>/dev/null)
nfail=$(q "$w/ref.db" "SELECT count(*) FROM trials WHERE status = 'failed' AND error != '';" 2>/dev/null)
ndone=$(q "$w/ref.db" "SELECT count(*) FROM trials WHERE status = 'done';" 2>/dev/null)
[ "${ntr:-0}" -ge 6 ] && [ "$nfail" = 1 ] && [ $((ndone + 1)) = "$ntr" ]
ok $? "reference run: $ntr trials, $ndone done, $nfail failed with an error (routebench exit $rc)"
failname=$(q "$w/ref.db" "SELECT name FROM trials WHERE status = 'failed';")
q "$w/ref.db" "SELECT name, error FROM trials WHERE status = 'failed';" | diag
rows() { q "$1" "SELECT key, seed, name, status FROM trials ORDER BY key, seed;"; }

# Round 1: shard 1 cannot open its database.
d=$w/sweep
mkdir -p "$d/shard-1-of-3.db"
t=$(date +%s.%N)
(cd "$w" && "$script" --rb "$RB" -n 3 -t 1 --run-arg=--no-sgemm --dir "$d" --db "$w/merged.db" --wait "$yaml") >"$w/r1" 2>&1; rc=$?
echo "round 1 (shard 1 sabotaged) took $(awk -v t=$t -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-t}') s" | diag
diag <"$w/r1"
[ $rc = 1 ]; ok $? "with shard 1 broken, slurm.sh --wait exits 1 (got $rc)"
grep -q 'shard 1/3' "$w/r1"; ok $? "the report names the failed shard 1/3"
merge_log=$(ls "$d"/logs/merge-*.out 2>/dev/null | head -n1)
[ -n "$merge_log" ] && grep -q 'shard 1/3' "$merge_log"; ok $? "the merge job's own log reports it too"
# Every trial of shard 1 (index % 3 == 1) must be listed as never run.
"$RB" run "$yaml" --dry-run --shard 1/3 >"$w/s1" 2>&1
missing=0; listed=0
for name in $(awk '$3 == "seed" { print $5 }' "$w/s1"); do
    listed=$((listed + 1))
    grep -q "never ran.*$name\|$name.*never ran" "$w/r1" || { missing=$((missing + 1)); echo "not reported: $name" | diag; }
done
[ $listed -gt 0 ] && [ $missing = 0 ]; ok $? "all $listed trials of shard 1 are reported as never run"
n1=$(q "$w/merged.db" "SELECT count(*) FROM trials;" 2>/dev/null)
[ "$n1" = $((ntr - listed)) ]; ok $? "round 1 merged the other shards' $n1 trials"
for i in 0 2; do q "$d/shard-$i-of-3.db" "SELECT key, seed, started_at FROM trials WHERE status = 'done' ORDER BY key, seed;" >"$w/done-$i"; done

# Round 2: the same command, sabotage removed: resumes. One done trial of
# shard 0 is made to look left `running` by a task killed on another node:
# it must run again rather than be skipped as someone else's.
rmdir "$d/shard-1-of-3.db"
stale=$(head -n1 "$w/done-0" | cut -d' ' -f1)
q "$d/shard-0-of-3.db" "UPDATE trials SET status = 'running', runner = 'node-gone:4242' WHERE key = '$stale';"
grep -v "^$stale " "$w/done-0" >"$w/done-0.kept"; mv "$w/done-0.kept" "$w/done-0"
t=$(date +%s.%N)
(cd "$w" && "$script" --rb "$RB" -n 3 -t 1 --run-arg=--no-sgemm --dir "$d" --db "$w/merged.db" --wait "$yaml") >"$w/r2" 2>&1; rc=$?
echo "round 2 (resume) took $(awk -v t=$t -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-t}') s" | diag
diag <"$w/r2"
[ $rc = 1 ]; ok $? "rerun exits 1: the diverging trial is still failed (got $rc)"
for i in 0 2; do
    q "$d/shard-$i-of-3.db" "SELECT key, seed, started_at FROM trials WHERE status = 'done' ORDER BY key, seed;" >"$w/after-$i"
    [ -s "$w/done-$i" ] && [ -z "$(comm -23 "$w/done-$i" "$w/after-$i")" ]
    ok $? "shard $i/3 kept its $(wc -l <"$w/done-$i") done trials untouched on resume"
done
st=$(q "$d/shard-0-of-3.db" "SELECT status FROM trials WHERE key = '$stale';")
[ "$st" = "done" ]; ok $? "a trial left running by a killed task was run again (status $st)"
rows "$w/ref.db" >"$w/ref.rows"; rows "$w/merged.db" >"$w/merged.rows"
diff "$w/ref.rows" "$w/merged.rows" >"$w/diff"; rc=$?
diag <"$w/diff"
ok $rc "merged database holds exactly the reference's $ntr trials (key, seed, name, status)"
dup=$(q "$w/merged.db" "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT key, seed FROM trials)) FROM trials;")
[ "$dup" = 0 ]; ok $? "no trial twice in the merged database ($dup duplicates)"
err=$(q "$w/merged.db" "SELECT error FROM trials WHERE status = 'failed';")
[ -n "$err" ] && [ "$err" = "$(q "$w/ref.db" "SELECT error FROM trials WHERE status = 'failed';")" ]
ok $? "the diverging trial is failed in the merged database with the reference's error: $err"
merge_log=$(ls -t "$d"/logs/merge-*.out | head -n1)
grep "^failed" "$merge_log" | grep -F "$failname" | grep -qF "$err"
ok $? "the merge job's log names the failed trial and its error"
grep "^failed" "$w/r2" | grep -F "$failname" | grep -qF "$err"; ok $? "so does slurm.sh --wait"
! grep -q "^never ran\|did not finish\|no database" "$w/r2"; ok $? "after the resume nothing is reported missing"

echo "cluster part took $(( $(date +%s) - t0 )) s" | diag
tap_end
