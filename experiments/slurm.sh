#!/usr/bin/env bash
# slurm.sh: run an experiment file on a Slurm cluster as a job array, one
# array task per shard (`routebench run FILE --shard I/N`, each shard writing
# its own database), plus one job that waits for the whole array
# (--dependency=afterany), merges the shards into one database and reports
# every trial that failed or never ran. Rerunning the same command resumes:
# each shard reopens its database and skips the trials already done.
#
# The submission host and the compute nodes must see the same file system
# (the repository, the binary and the output directory); paths are made
# absolute before submission. Run `experiments/slurm.sh --help` for options.
set -u

prog=slurm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")

usage() {
    cat <<EOF
usage: experiments/slurm.sh [options] EXPERIMENT.yaml

Submits EXPERIMENT.yaml as a Slurm job array of N tasks, task I running
  routebench run EXPERIMENT.yaml --shard I/N --threads T --db DIR/shard-I-of-N.db
and a merge job that starts when every task has ended, however it ended
(--dependency=afterany), runs
  routebench merge OUT.db DIR/shard-*-of-N.db
and reports the trials that failed (with their error) or never ran; it exits
non-zero if there are any, and writes the report to DIR/report.txt.

Rerun the same command to resume: each shard skips its trials that are done
and runs the failed, interrupted and missing ones again. Keep N the same
(the shards of another N are refused: see DIR).

options:
  -n, --shards N        array tasks (default 4)
  -t, --threads T       threads per task: --threads T for routebench and
                        --cpus-per-task T for Slurm (default 1)
  -p, --partition P     partition (default: the cluster's default)
  -T, --time LIMIT      time limit of each array task, in sbatch's format
                        (e.g. 30, 2:00:00, 1-00:00:00; default: the partition's)
  -A, --account A       account to charge
      --max-running M   at most M array tasks at once (sbatch --array=...%M)
      --sbatch-arg ARG  one more option for both sbatch calls (repeatable),
                        e.g. --sbatch-arg=--mem=4G --sbatch-arg=--qos=short
  -o, --db PATH         the merged database (default results/NAME.db, NAME
                        being the file name without .yaml)
  -d, --dir DIR         shard databases, logs, job ids and the report
                        (default results/NAME.slurm)
      --rb PATH         the routebench binary (default \$RB, else
                        build/routebench in this repository)
  -w, --wait            stay until the merge job has ended (polling squeue),
                        print the report and exit with the merge job's status
      --dry-run         print the sbatch commands instead of running them
  -h, --help            this text

exit status: 0 submitted (with --wait: every trial done); 1 a trial failed or
never ran (--wait), or a Slurm command failed; 2 bad usage or input.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; echo "(experiments/slurm.sh --help for usage)" >&2; exit 2; }

# ----------------------------------------------------------------------------
# Inside the allocation: one shard. Arguments: RB YAML DIR N THREADS.
# ----------------------------------------------------------------------------
run_shard() {
    local rb=$1 yaml=$2 dir=$3 n=$4 threads=$5
    local i=${SLURM_ARRAY_TASK_ID:?not inside a Slurm array task}
    [ "${SLURM_ARRAY_TASK_COUNT:-$n}" = "$n" ] ||
        { echo "$prog: array has $SLURM_ARRAY_TASK_COUNT tasks, expected $n" >&2; return 2; }
    local base=$dir/shard-$i-of-$n
    rm -f "$base.rc"
    echo "$prog: shard $i/$n on $(hostname) (job ${SLURM_JOB_ID:-?}), $threads thread(s), db $base.db"
    # routebench runs in the background so that a SIGTERM from Slurm (time
    # limit, scancel) reaches it through the trap and the shard still gets to
    # write its status: the trial in flight is then recorded as interrupted.
    "$rb" run "$yaml" --shard "$i/$n" --threads "$threads" --db "$base.db" &
    local pid=$! rc
    trap 'kill -TERM $pid 2>/dev/null' TERM INT
    while :; do
        wait "$pid"; rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT
    echo "$rc" >"$base.rc"
    echo "$prog: shard $i/$n: routebench exited with status $rc"
    return "$rc"
}

# ----------------------------------------------------------------------------
# Inside the allocation: merge and report. Arguments: RB YAML DIR N OUT.
# ----------------------------------------------------------------------------
run_merge() {
    local rb=$1 yaml=$2 dir=$3 n=$4 out=$5
    local report=$dir/report.txt rc
    rm -f "$dir/merge.rc"
    merge_and_report "$rb" "$yaml" "$dir" "$n" "$out" 2>&1 | tee "$report.tmp"
    rc=${PIPESTATUS[0]}
    mv -f "$report.tmp" "$report"
    echo "$rc" >"$dir/merge.rc"
    return "$rc"
}

merge_and_report() {
    local rb=$1 yaml=$2 dir=$3 n=$4 out=$5
    local i shards=() problems=0 rc
    echo "== routebench merge: $n shard(s) of $yaml into $out"
    for ((i = 0; i < n; i++)); do
        local base=$dir/shard-$i-of-$n
        if [ ! -f "$base.rc" ]; then
            echo "shard $i/$n: did not finish (no status: killed, timed out, or never started); see $dir/logs/"
            problems=1
        elif [ "$(cat "$base.rc")" != 0 ]; then
            echo "shard $i/$n: routebench exited with status $(cat "$base.rc"); see $dir/logs/shard-*_$i.out"
            problems=1
        fi
        if [ -f "$base.db" ]; then shards+=("$base.db")
        else echo "shard $i/$n: no database ($base.db): its trials never ran"; problems=1
        fi
    done
    [ ${#shards[@]} -gt 0 ] || { echo "no shard database to merge"; return 1; }
    # Merge into a new file and move it into place: a rerun's merge starts
    # from the shards (which hold every result) and never half-overwrites out.
    rm -f "$out.merging" "$out.merging-wal" "$out.merging-shm"
    "$rb" merge "$out.merging" "${shards[@]}"; rc=$?
    if [ $rc != 0 ]; then
        echo "routebench merge failed (status $rc); $out left as it was"
        rm -f "$out.merging" "$out.merging-wal" "$out.merging-shm"
        return 1
    fi
    rm -f "$out-wal" "$out-shm"
    mv -f "$out.merging" "$out" || { echo "cannot move the merged database to $out"; return 1; }
    report_trials "$rb" "$yaml" "$out" || problems=1
    return $problems
}

# Compare the merged database with the trials the experiment expands to.
# Prints a summary line, then one line per trial not done. 0 when all done.
report_trials() {
    local rb=$1 yaml=$2 db=$3
    command -v sqlite3 >/dev/null || { echo "sqlite3 not found: cannot check $db trial by trial"; return 1; }
    local expected
    expected=$("$rb" run "$yaml" --dry-run --db "$db" 2>/dev/null | awk 'FALSE')
    sqlite3 -separator ' ' "$db" \
        "SELECT status, count(*) FROM trials GROUP BY status ORDER BY status;"
    sqlite3 -separator '  ' "$db" \
        "SELECT status, name, 'seed ' || seed, coalesce(error, '') FROM trials WHERE status != 'done' ORDER BY name, seed;"
    [ -z "$(sqlite3 "$db" "SELECT 1 FROM trials WHERE status != 'done' LIMIT 1;")" ]
}

# ----------------------------------------------------------------------------
# Submission.
# ----------------------------------------------------------------------------
case "${1:-}" in
    --_shard) shift; run_shard "$@"; exit $? ;;
    --_merge) shift; run_merge "$@"; exit $? ;;
esac

shards=4 threads=1 partition= timelimit= account= maxrun= db= dir= wait=0 dry=0
rb=${RB:-}
extra=() yaml=
need() { [ $# -ge 2 ] && [ -n "$2" ] || bad "$1 needs a value"; }
while [ $# -gt 0 ]; do
    opt=$1 val=
    case "$opt" in
        --*=*) val=${opt#*=}; opt=${opt%%=*}; set -- "$opt" "$val" "${@:2}" ;;
    esac
    case "$opt" in
        -n|--shards) need "$@"; shards=$2; shift 2 ;;
        -t|--threads) need "$@"; threads=$2; shift 2 ;;
        -p|--partition) need "$@"; partition=$2; shift 2 ;;
        -T|--time) need "$@"; timelimit=$2; shift 2 ;;
        -A|--account) need "$@"; account=$2; shift 2 ;;
        --max-running) need "$@"; maxrun=$2; shift 2 ;;
        --sbatch-arg) need "$@"; extra+=("$2"); shift 2 ;;
        -o|--db) need "$@"; db=$2; shift 2 ;;
        -d|--dir) need "$@"; dir=$2; shift 2 ;;
        --rb) need "$@"; rb=$2; shift 2 ;;
        -w|--wait) wait=1; shift ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) bad "unknown option '$opt'" ;;
        *) [ -z "$yaml" ] || bad "one experiment file at a time ('$yaml' and '$opt')"; yaml=$opt; shift ;;
    esac
done
[ $# -gt 0 ] && { [ -z "$yaml" ] && [ $# = 1 ] && yaml=$1 || bad "unexpected arguments: $*"; }
[ -n "$yaml" ] || bad "no experiment file given"
[ -f "$yaml" ] && [ -r "$yaml" ] || bad "$yaml: no such readable file"
posint() { [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le "$3" ] || bad "$1 must be an integer from 1 to $3, not '$2'"; }
posint --shards "$shards" 100000
posint --threads "$threads" 4096
[ -z "$maxrun" ] || posint --max-running "$maxrun" 100000

[ -n "$rb" ] || rb=$here/../build/routebench
[ -x "$rb" ] || bad "$rb: no routebench binary there (build it with make, or pass --rb PATH)"
abspath() { local d; d=$(cd "$(dirname "$1")" 2>/dev/null && pwd) || return 1; echo "$d/$(basename "$1")"; }
rb=$(abspath "$rb")
yaml=$(abspath "$yaml")
name=$(basename "$yaml"); name=${name%.yaml}; name=${name%.yml}
[ -n "$db" ] || db=results/$name.db
[ -n "$dir" ] || dir=results/$name.slurm

# The experiment must be valid before anything is queued: the same check
# `routebench run` does, with its file:line:column messages.
if ! "$rb" run "$yaml" --dry-run >/dev/null 2>"${TMPDIR:-/tmp}/rb-slurm-$$.err"; then
    cat "${TMPDIR:-/tmp}/rb-slurm-$$.err" >&2; rm -f "${TMPDIR:-/tmp}/rb-slurm-$$.err"
    bad "$yaml does not validate; nothing submitted"
fi
rm -f "${TMPDIR:-/tmp}/rb-slurm-$$.err"

mkdir -p "$dir/logs" "$(dirname "$db")" || die "cannot make $dir/logs or the directory of $db"
dir=$(abspath "$dir"); db=$(abspath "$db")

# Shards of another N split the trials differently: resuming from them would
# run some trials twice and lose none, but the merge could not tell a missing
# trial from one of the other split. Refuse, and say what to do.
for f in "$dir"/shard-*-of-*.db; do
    [ -e "$f" ] || continue
    other=${f##*-of-}; other=${other%.db}
    [ "$other" = "$shards" ] ||
        bad "$dir holds shards of a $other-way split ($(basename "$f")); resume with --shards $other, or use another --dir"
done

# A second submission while the first is queued or running would have two
# tasks writing one shard database.
if [ -s "$dir/jobs" ] && [ $dry = 0 ]; then
    live=$(squeue -h -o %i -j "$(paste -sd, "$dir/jobs")" 2>/dev/null)
    [ -z "$live" ] || die "jobs of an earlier submission are still queued or running: $(echo $live); wait for them or scancel them first"
fi

common=(--parsable --job-name "rb-$name")
[ -z "$partition" ] || common+=(--partition "$partition")
[ -z "$account" ] || common+=(--account "$account")
common+=("${extra[@]}")
array=0-$((shards - 1)); [ -z "$maxrun" ] || array+=%$maxrun
shard_cmd=(sbatch "${common[@]}" --array "$array" --ntasks 1 --cpus-per-task "$threads")
[ -z "$timelimit" ] || shard_cmd+=(--time "$timelimit")
shard_cmd+=(--output "$dir/logs/shard-%A_%a.out" "$self" --_shard "$rb" "$yaml" "$dir" "$shards" "$threads")
merge_cmd=(sbatch "${common[@]}" --ntasks 1 --cpus-per-task 1 --kill-on-invalid-dep=no
           --output "$dir/logs/merge-%j.out" --dependency "afterany:ARRAY" "$self" --_merge "$rb" "$yaml" "$dir" "$shards" "$db")

if [ $dry = 1 ]; then
    printf '%q ' "${shard_cmd[@]}"; echo
    printf '%q ' "${merge_cmd[@]}"; echo
    exit 0
fi
command -v sbatch >/dev/null || die "sbatch not found: is this a Slurm submission host?"

rm -f "$dir/merge.rc"
out=$("${shard_cmd[@]}") || die "sbatch of the array failed${out:+: $out}"
array_id=${out%%;*}
[[ $array_id =~ ^[0-9]+$ ]] || die "sbatch answered '$out', not a job id"
merge_cmd=("${merge_cmd[@]/afterany:ARRAY/afterany:$array_id}")
if ! out=$("${merge_cmd[@]}"); then
    scancel "$array_id" 2>/dev/null
    die "sbatch of the merge job failed${out:+: $out}; cancelled array $array_id"
fi
merge_id=${out%%;*}
printf '%s\n%s\n' "$array_id" "$merge_id" >"$dir/jobs"
echo "$prog: submitted array $array_id ($shards tasks x $threads thread(s)) and merge job $merge_id"
echo "$prog: shards and logs in $dir; merged database will be $db; report in $dir/report.txt"
echo "$prog: watch with: squeue -j $array_id,$merge_id"
[ $wait = 1 ] || exit 0

# squeue rather than `sbatch --wait`, whose polling backs off to tens of seconds.
delay=0.5 fails=0
while :; do
    if q=$(squeue -h -o %i -j "$array_id,$merge_id" 2>/dev/null); then
        [ -n "$q" ] || break
        fails=0
    elif [ -f "$dir/merge.rc" ]; then
        break # squeue refuses ids that left the queue long ago: done
    else
        fails=$((fails + 1))
        [ $fails -lt 30 ] || die "squeue has failed 30 times in a row; the jobs may still run: squeue -j $array_id,$merge_id"
    fi
    sleep $delay
    delay=$(awk -v d=$delay 'BEGIN { d *= 1.5; print (d > 10 ? 10 : d) }')
done
[ -f "$dir/merge.rc" ] || die "the merge job $merge_id ended without a status (cancelled or failed to start); see $dir/logs/merge-$merge_id.out"
cat "$dir/report.txt"
exit "$(cat "$dir/merge.rc")"
