#!/usr/bin/env bash
# stop.sh: stop the daemons tests/slurm/start.sh started, by the process ids
# it recorded in STATE_DIR (never by name), after cancelling any job still in
# that private cluster. Safe to call twice, or when nothing was started.
#
#   tests/slurm/stop.sh STATE_DIR
set -u
[ $# = 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
dir=$1
[ -d "$dir" ] || exit 0
export SLURM_CONF=$dir/slurm.conf

alive() { # PID NAME
    [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# Jobs first, while slurmd still runs to clean up their processes.
if [ -s "$dir/slurmctld.pid" ] && alive "$(cat "$dir/slurmctld.pid")" slurmctld &&
   [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    # shellcheck disable=SC2046 # one job id per word
    scancel --full --quiet $(squeue -h -o %i 2>/dev/null | sort -u) 2>/dev/null
    for _ in $(seq 50); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

status=0
# slurmd before slurmctld; munged last (only if this state dir started it).
for name in slurmd slurmctld munged; do
    f=$dir/$name.pid
    [ -s "$f" ] || { rm -f "$f"; continue; }
    pid=$(cat "$f")
    if alive "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do
            alive "$pid" "$name" || break
            sleep 0.1
        done
        if alive "$pid" "$name"; then
            echo "slurm/stop: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
        fi
        alive "$pid" "$name" && { echo "slurm/stop: $name ($pid) still running" >&2; status=1; continue; }
    fi
    rm -f "$f"
done
exit $status
