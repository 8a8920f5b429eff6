#!/usr/bin/env bash
# start.sh: bring up a private one-node Slurm cluster on this machine for the
# tests (munged, slurmctld -D, slurmd -D), so tests/slurm_sweep.sh can submit
# real job arrays without touching any cluster the machine may belong to.
#
#   tests/slurm/start.sh STATE_DIR
#
# Everything it makes lives in STATE_DIR (absolute or relative; made if
# missing): slurm.conf, env.sh (source it: it sets SLURM_CONF), state/,
# spool/, log/, and one *.pid file per daemon it started. Only munged's
# socket is shared with the system (/run/munge), because Slurm's munge plugin
# talks to it there; an already running munged is reused and not recorded, so
# stop.sh leaves it alone. The ports default to 16817/16818 (not Slurm's
# 6817/6818) so a real slurmctld on the same host is not disturbed; set
# RB_SLURM_PORT to move them.
#
# Idempotent: if the daemons recorded in STATE_DIR are alive and the
# controller answers, it says so and exits 0. Exit status: 0 running,
# 1 failed (the message and the daemon log to read are printed),
# 3 cannot run here (not root, or Slurm/munge not installed): callers skip.
set -u
die() { echo "slurm/start: $*" >&2; exit 1; }
cannot() { echo "slurm/start: $*" >&2; exit 3; }

[ $# = 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
for b in munged munge unmunge slurmctld slurmd sinfo scontrol setpriv; do
    [ -x "$(command -v "$b")" ] || PATH=$PATH:/usr/sbin:/sbin
    [ -x "$(command -v "$b")" ] || cannot "$b not found (apt-get install slurmctld slurmd slurm-client munge)"
done
[ "$(id -u)" = 0 ] || cannot "must run as root (slurmd runs jobs as any user; munged as munge)"

mkdir -p "$1" || die "cannot make state directory $1"
dir=$(cd "$1" && pwd)
port=${RB_SLURM_PORT:-16817}
export SLURM_CONF=$dir/slurm.conf

# alive PIDFILE NAME: the recorded process exists and is still that daemon
# (guards against a recycled pid after a reboot or a crash).
alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

if alive "$dir/slurmctld.pid" slurmctld && alive "$dir/slurmd.pid" slurmd &&
   scontrol ping >/dev/null 2>&1; then
    echo "slurm/start: already running (state in $dir)"
    exit 0
fi
# Half a cluster from an earlier run: stop what is recorded, then start afresh.
if ls "$dir"/*.pid >/dev/null 2>&1; then
    "$(dirname "$0")/stop.sh" "$dir" || die "could not stop the leftovers recorded in $dir"
fi

# --- munge: the system's socket, started as the munge user if not running ---
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    key=/etc/munge/munge.key
    if [ ! -s "$key" ]; then
        if command -v mungekey >/dev/null; then
            setpriv --reuid=munge --regid=munge --init-groups mungekey --create --keyfile="$key" ||
                die "mungekey could not create $key"
        else
            create-munge-key -f || die "create-munge-key could not create $key"
        fi
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge || die "cannot make munge's directories"
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    # setsid: leave the caller's process group, so a Ctrl-C in the test does
    # not reach the daemons; setpriv execs, so $! is the daemon's own pid.
    setsid setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
        >"$dir/munged.out" 2>&1 </dev/null &
    echo $! >"$dir/munged.pid"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 ||
        die "munged did not come up; see $dir/munged.out and /var/log/munge/munged.log"
fi

# --- slurm.conf for one node: this host, at 127.0.0.1 ---
host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
mkdir -p "$dir/state" "$dir/spool" "$dir/log" || die "cannot make directories under $dir"
cat >"$dir/slurm.conf" <<CONF
# Written by tests/slurm/start.sh: a private one-node cluster for the tests.
ClusterName=routebench-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/state/slurmctld.pidfile
SlurmdPidFile=$dir/state/slurmd.pidfile
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
# Short timers: a test cluster should notice and settle in seconds.
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF='$dir/slurm.conf'" >"$dir/env.sh"

# A daemon of another state directory (a test killed before it could stop
# its cluster) would hold the ports: say so rather than fail obscurely.
for p in "$port" $((port + 1)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p on 127.0.0.1 is in use (a cluster left by another state directory? stop it with tests/slurm/stop.sh THAT_DIR, or set RB_SLURM_PORT)"
    fi
done

# -c: a clean controller state (no jobs from an earlier test run).
setsid slurmctld -D -c -f "$dir/slurm.conf" >"$dir/log/slurmctld.out" 2>&1 </dev/null &
echo $! >"$dir/slurmctld.pid"
setsid slurmd -D -f "$dir/slurm.conf" -N "$host" >"$dir/log/slurmd.out" 2>&1 </dev/null &
echo $! >"$dir/slurmd.pid"

# The node is idle within a second or two on this kind of machine.
state=
for _ in $(seq 150); do
    alive "$dir/slurmctld.pid" slurmctld || die "slurmctld exited; see $dir/log/slurmctld.log and slurmctld.out"
    alive "$dir/slurmd.pid" slurmd || die "slurmd exited; see $dir/log/slurmd.log and slurmd.out"
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n1)
    [ "$state" = idle ] && break
    sleep 0.2
done
[ "$state" = idle ] || die "node not idle after 30 s (state '${state:-none}'); see $dir/log/"
echo "slurm/start: one-node cluster up: node $host, $cpus CPUs, ports $port-$((port + 1)); source $dir/env.sh"
