#!/usr/bin/env bash
# A throw-away SLURM cluster on this machine, for tests and for trying the batch scripts.
#
#   launch/local_cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd(s)
#   export SLURM_CONF=DIR/slurm.conf    # then sbatch, squeue, scontrol talk to it
#   launch/local_cluster.sh stop DIR    # cancels its jobs, stops the daemons started in DIR
#
# SLURM_NODES=2 starts two slurmd here (node1, node2: Debian builds slurmd with multiple-slurmd
# support), so multi-node batch scripts run for real: srun, SLURM_NODEID, one launcher per node.
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/install_slurm.sh).
# Everything (key, sockets, state, logs) lives under DIR; nothing in /etc is touched.
# Environment: SLURM_NODES (default 1), SLURM_CPUS per node (default: nproc; nodes share the cores),
# SLURM_MEMORY_MB per node (default 4000), SLURM_PORT (controller; slurmd take the next ones).
set -euo pipefail

die() { echo "local_cluster: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds; false after SECONDS
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

free_ports() {  # free_ports N: a TCP port p such that p .. p+N-1 are all free
    python3 -c '
import socket, sys
n = int(sys.argv[1])
while True:
    with socket.socket() as first:
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
    try:
        for p in range(port, port + n):
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(port)
    break
' "$1"
}

start() {
    local dir=$1
    for tool in munged mungekey slurmctld slurmd sbatch scontrol; do
        command -v "$tool" >/dev/null || die "$tool not found; run .ci/install_slurm.sh"
    done
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their user)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 0700 "$dir"
    mkdir -p "$dir/munge" "$dir/state"
    chmod 0700 "$dir/munge"

    local host nodes cpus mem port i
    host=$(hostname -s)
    nodes=${SLURM_NODES:-1}
    cpus=${SLURM_CPUS:-$(nproc)}
    mem=${SLURM_MEMORY_MB:-4000}
    port=${SLURM_PORT:-$(free_ports $((nodes + 1)))}

    [ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
    chmod 0400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || die "munged did not start: $(tail -n 3 "$dir/munge/munged.log" 2>/dev/null)"

    cat >"$dir/slurm.conf" <<EOF
# Written by launch/local_cluster.sh: $nodes node(s) on $host, run as root, everything under $dir.
ClusterName=codetune-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PropagateResourceLimits=NONE
SlurmdParameters=config_overrides
# Short waits suit a test cluster: schedule every 2 s; SIGTERM->SIGKILL after 5 s; finished jobs
# stay visible to scontrol show job for 10 min (there is no accounting database).
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
MinJobAge=600
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    for i in $(seq 1 "$nodes"); do
        echo "NodeName=node$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + i)) CPUs=$cpus RealMemory=$mem"
    done >>"$dir/slurm.conf"

    export SLURM_CONF=$dir/slurm.conf
    slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -n 5 "$dir/slurmctld.log" 2>/dev/null)"
    for i in $(seq 1 "$nodes"); do
        mkdir -p "$dir/spool/node$i"
        slurmd -f "$SLURM_CONF" -N "node$i" \
            || die "slurmd node$i did not start: $(tail -n 5 "$dir/slurmd-node$i.log" 2>/dev/null)"
    done
    wait_for 30 bash -c "[ \"\$(sinfo -h -N -t idle -o %N | wc -l)\" -eq $nodes ]" \
        || die "nodes not idle after 30 s: $(sinfo -h -N -o '%N %t %E' 2>&1)"
    echo "local_cluster: $nodes node(s) up; export SLURM_CONF=$SLURM_CONF"
}

stop() {
    local dir=$1 pidfile pid
    if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        # Cancel every job first, so that no job step outlives the daemons.
        export SLURM_CONF=$dir/slurm.conf
        scancel --user="$(id -un)" 2>/dev/null || true
        # shellcheck disable=SC2016  # expanded by the inner shell, at each try
        wait_for 30 bash -c '[ -z "$(squeue -h -t R,CG,S -o %i)" ]' || true
    fi
    for pidfile in "$dir"/slurmd-*.pid "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || continue
        wait_for 15 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    done
}

case "${1:-}" in
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
