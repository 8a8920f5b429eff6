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
      --run-arg ARGS    more options for every \`routebench run\`, split at
                        spaces (repeatable), e.g. --run-arg "--filter routing"
                        --run-arg --no-sgemm
  -o, --db PATH         the merged database (default results/NAME.db, NAME
                        being the experiment's name, as for routebench run);
                        if it exists, what it holds is kept and folded in
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

# What `routebench run`'s exit status means (its --help).
status_text() {
    case $1 in
        0) echo "every trial done" ;;
        1) echo "a trial failed" ;;
        2) echo "bad input or database: see its log" ;;
        130) echo "interrupted: time limit, scancel or a signal" ;;
        *) echo "crashed or killed" ;;
    esac
}

# ----------------------------------------------------------------------------
# Inside the allocation: one shard. Arguments: RB YAML DIR N THREADS.
# ----------------------------------------------------------------------------
run_shard() {
    local rb=$1 yaml=$2 dir=$3 n=$4 threads=$5
    shift 5 # the rest: extra `routebench run` options (--run-arg)
    local i=${SLURM_ARRAY_TASK_ID:?not inside a Slurm array task}
    [ "${SLURM_ARRAY_TASK_COUNT:-$n}" = "$n" ] ||
        { echo "$prog: array has $SLURM_ARRAY_TASK_COUNT tasks, expected $n" >&2; return 2; }
    local base=$dir/shard-$i-of-$n
    rm -f "$base.rc"
    echo "$prog: shard $i/$n on $(hostname) (job ${SLURM_JOB_ID:-?}), $threads thread(s), db $base.db"
    # This task is the only writer of its shard database (the submission
    # refuses to overlap an earlier one), so a trial still marked running was
    # left by a killed task, maybe on another node, where routebench cannot
    # tell it from a live run and would skip it: mark it interrupted (rerun).
    if [ -f "$base.db" ] && command -v sqlite3 >/dev/null; then
        local reset
        reset=$(sqlite3 -cmd '.timeout 10000' "$base.db" "UPDATE trials SET status = 'interrupted',
            error = 'left running by a task that was killed (reset by slurm.sh)' WHERE status = 'running';
            SELECT changes();" 2>&1)
        case $reset in
            0) ;;
            [1-9]*) echo "$prog: shard $i/$n: $reset trial(s) left running by a killed task marked interrupted" ;;
            *) echo "$prog: shard $i/$n: could not check $base.db for trials left running: $reset" ;;
        esac
    fi
    # At a time limit or scancel, Slurm sends SIGTERM to every process of the
    # job: routebench marks the trial in flight interrupted and exits 130.
    # This shell must outlive it to record that status, so it runs routebench
    # in the background and only notes the signal (forwarding it would be a
    # second signal, which makes routebench quit without recording).
    "$rb" run "$yaml" --shard "$i/$n" --threads "$threads" --db "$base.db" "$@" &
    local pid=$! rc
    trap ':' TERM INT
    while :; do
        wait "$pid"; rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT
    echo "$rc" >"$base.rc"
    echo "$prog: shard $i/$n: routebench exited with status $rc ($(status_text "$rc"))"
    return "$rc"
}

# ----------------------------------------------------------------------------
# Inside the allocation: merge and report. Arguments: RB YAML DIR N OUT.
# ----------------------------------------------------------------------------
run_merge() {
    local rb=$1 yaml=$2 dir=$3 n=$4 out=$5
    local report=$dir/report.txt rc
    rm -f "$dir/merge.rc"
    merge_and_report "$@" 2>&1 | tee "$report.tmp"
    rc=${PIPESTATUS[0]}
    mv -f "$report.tmp" "$report"
    echo "$rc" >"$dir/merge.rc"
    return "$rc"
}

merge_and_report() {
    local rb=$1 yaml=$2 dir=$3 n=$4 out=$5
    shift 5 # the rest: extra `routebench run` options (--filter matters to the expected list)
    local i dbs=() problems=0 rc
    echo "== routebench merge: $n shard(s) of $yaml into $out"
    for ((i = 0; i < n; i++)); do
        local base=$dir/shard-$i-of-$n
        if [ ! -f "$base.rc" ]; then
            echo "shard $i/$n: did not finish (no status: killed, timed out, or never started); see $dir/logs/"
            problems=1
        elif [ "$(cat "$base.rc")" != 0 ]; then
            echo "shard $i/$n: routebench exited with status $(cat "$base.rc") ($(status_text "$(cat "$base.rc")")); log: $dir/logs/shard-*_$i.out"
            problems=1
        fi
        if [ -f "$base.db" ]; then dbs+=("$base.db")
        else echo "shard $i/$n: no database ($base.db): its trials never ran"; problems=1
        fi
    done
    [ ${#dbs[@]} -gt 0 ] || { echo "no shard database to merge"; return 1; }
    # Merge into a new file and move it into place, so a failed merge leaves
    # out as it was. The shards come first: on a tie (a trial failed again)
    # the fresh record wins. An existing out is folded in last, so what it
    # holds from earlier (a local run of the same file, say) is kept unless a
    # shard has it too; merge refuses an out of another experiment.
    local old=()
    [ -f "$out" ] && old=("$out") && echo "folding in the existing $out"
    rm -f "$out.merging" "$out.merging-wal" "$out.merging-shm"
    "$rb" merge "$out.merging" "${dbs[@]}" "${old[@]}"; rc=$?
    if [ $rc != 0 ]; then
        echo "routebench merge failed (status $rc); $out left as it was"
        rm -f "$out.merging" "$out.merging-wal" "$out.merging-shm"
        return 1
    fi
    rm -f "$out-wal" "$out-shm"
    mv -f "$out.merging" "$out" || { echo "cannot move the merged database to $out"; return 1; }
    report_trials "$rb" "$yaml" "$out" "$n" "$@" || problems=1
    return $problems
}

# Compare the merged database with the trials the experiment expands to (the
# runner's --dry-run list), so that trials no shard recorded are reported as
# well as those recorded failed. One line per trial not done, then a summary.
# Returns 0 when every expected trial is done.
report_trials() {
    local rb=$1 yaml=$2 db=$3 n=$4 tmp rc
    shift 4
    command -v sqlite3 >/dev/null || { echo "sqlite3 not found: cannot check $db trial by trial"; return 1; }
    tmp=$(mktemp -d) || return 1
    if ! "$rb" run "$yaml" --dry-run "$@" >"$tmp/dry" 2>"$tmp/err"; then
        cat "$tmp/err"; echo "routebench run --dry-run failed: cannot list the expected trials"
        rm -rf "$tmp"; return 1
    fi
    expected_trials <"$tmp/dry" >"$tmp/expected"
    sqlite3 -separator $'\t' "$db" \
        "SELECT key, seed, status, name, replace(replace(coalesce(error, ''), char(10), ' '), char(9), ' ') FROM trials;" \
        >"$tmp/have" || { echo "cannot read the trials of $db"; rm -rf "$tmp"; return 1; }
    awk -F'\t' -v n="$n" '
        NR == FNR { st[$1 " " $2] = $3; err[$1 " " $2] = $5; name[$1 " " $2] = $4; next }
        {
            id = $2 " " $3; total++
            if (!(id in st)) { printf "never ran    %s seed %s (shard %d/%d: no record)\n", $4, $3, $1 % n, n; never++; bad++ }
            else if (st[id] == "done") done++
            else if (st[id] == "failed" || st[id] == "unsupported") { printf "%-12s %s seed %s: %s\n", st[id], name[id], $3, err[id]; failed++; bad++ }
            else if (st[id] == "pending") { printf "never ran    %s seed %s (shard %d/%d: left pending)\n", name[id], $3, $1 % n, n; never++; bad++ }
            else { printf "unfinished   %s seed %s (shard %d/%d: left %s)\n", name[id], $3, $1 % n, n, st[id]; never++; bad++ }
            seen[id] = 1
        }
        END {
            for (id in st) if (!(id in seen)) { printf "unexpected   %s (key %s): not in this experiment\n", name[id], id; extra++; bad++ }
            printf "trials: %d expected, %d done, %d failed, %d never ran or unfinished%s\n", total, done, failed, never, extra ? sprintf(", %d unexpected", extra) : ""
            exit bad > 0
        }' "$tmp/have" "$tmp/expected"
    rc=$?
    rm -rf "$tmp"
    return $rc
}

# `routebench run --dry-run` lines ("  INDEX  KEY  seed SEED NAME {json}")
# -> "INDEX KEY SEED NAME", tab-separated. The count line above them has no
# "seed" in third place.
expected_trials() {
    awk '$3 == "seed" && $1 ~ /^[0-9]+$/ { printf "%s\t%s\t%s\t%s\n", $1, $2, $4, $5 }'
}

# ----------------------------------------------------------------------------
# Submission.
# ----------------------------------------------------------------------------
case "${1:-}" in
    --_shard) shift; run_shard "$@"; exit $? ;;
    --_merge) shift; run_merge "$@"; exit $? ;;
esac

shards=4 threads=1 partition='' timelimit='' account='' maxrun='' db='' dir='' wait=0 dry=0
rb=${RB:-}
extra=() runargs=() yaml=
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
        --run-arg) need "$@"; read -r -a words <<<"$2"; runargs+=("${words[@]}"); shift 2 ;;
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

# The experiment must be valid before anything is queued: the same check
# `routebench run` does, with its file:line:column messages. Its first line,
# "NAME: N trials ...", gives the experiment's name for the default paths
# (the database is then the one a local `routebench run` would write).
if ! dry_out=$("$rb" run "$yaml" --dry-run "${runargs[@]}" 2>&1); then
    echo "$dry_out" >&2
    bad "$yaml does not validate; nothing submitted"
fi
name=$(echo "$dry_out" | sed -n '1s/^\([A-Za-z0-9_.-]*\): .*/\1/p')
ntrials=$(echo "$dry_out" | sed -n '1s/^[^:]*: \([0-9]*\) trials.*/\1/p')
[ -n "$name" ] || { name=$(basename "$yaml"); name=${name%.yaml}; name=${name%.yml}; }
[ -n "$db" ] || db=results/$name.db
[ -n "$dir" ] || dir=results/$name.slurm

case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
case "$db" in /*) ;; *) db=$PWD/$db ;; esac

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
shard_cmd+=(--output "$dir/logs/shard-%A_%a.out" "$self" --_shard "$rb" "$yaml" "$dir" "$shards" "$threads" "${runargs[@]}")
merge_cmd=(sbatch "${common[@]}" --ntasks 1 --cpus-per-task 1 --kill-on-invalid-dep=no
           --output "$dir/logs/merge-%j.out" --dependency "afterany:ARRAY" "$self" --_merge "$rb" "$yaml" "$dir" "$shards" "$db" "${runargs[@]}")

if [ $dry = 1 ]; then
    printf '%q ' "${shard_cmd[@]}"; echo
    printf '%q ' "${merge_cmd[@]}"; echo
    exit 0
fi
command -v sbatch >/dev/null || die "sbatch not found: is this a Slurm submission host?"
mkdir -p "$dir/logs" "$(dirname "$db")" || die "cannot make $dir/logs or the directory of $db"

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
echo "$prog: $name: ${ntrials:-?} trials; submitted array $array_id ($shards tasks x $threads thread(s)) and merge job $merge_id"
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
