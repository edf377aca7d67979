#!/usr/bin/env bash
# A SLURM on this machine (one node, or two slurmd with GETDIFF_SLURM_NODES=2), for
# tests/test_slurm.py and for trying profiles/slurm by hand.
#
#   bash tests/slurm/local-cluster.sh start    # install (Debian: slurm-wlm, munge) if missing, start
#   bash tests/slurm/local-cluster.sh status   # exit 0 when the cluster answers (sinfo)
#   bash tests/slurm/local-cluster.sh stop     # stop the daemons this script started
#
# Everything lives in $GETDIFF_SLURM_DIR (default /tmp/getdiff-slurm): slurm.conf, gres.conf,
# state, logs, pid files; /etc/slurm/slurm.conf and gres.conf are links to them (the default
# path: snakemake's jobstep executor drops SLURM_CONF from the environment of the srun it runs
# in each job). An /etc/slurm/slurm.conf that this script did not write is left alone: start
# refuses to run on a machine with its own SLURM.
# The node has this machine's CPUs and memory (less 1 GB for the system), partitions `cpu`
# (default) and `gpu`, and one gres gpu backed by a plain file, so `--gpus=1` requests are
# scheduled and jobs get CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS (a device node with /dev/null's
# numbers: no real GPU behind it). No accounting (no slurmdbd): use
# `--slurm-status-command squeue`. Processes are tracked by process group (proctrack/pgid; this
# machine has no cgroup file system): with linuxproc, the job's own snakemake survived scancel.
# GETDIFF_SLURM_NODES=2 starts two slurmd on this host, nodes "$(hostname -s)" and "localhost"
# (needs a Slurm built with --enable-multiple-slurmd, as Debian 12's is; `start` says so and
# stops if it is not). Needs root. Idempotent:
# `start` on a running cluster only checks it, `stop` on a stopped one does nothing.
set -euo pipefail

DIR=${GETDIFF_SLURM_DIR:-/tmp/getdiff-slurm}
NODES=${GETDIFF_SLURM_NODES:-1}
CONF=$DIR/slurm.conf
ETC=/etc/slurm
HOST=$(hostname -s)

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
    command -v apt-get >/dev/null || die "slurmctld/munged missing and no apt-get to install them"
    [ "$(id -u)" = 0 ] || die "slurmctld/munged missing; installing them needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || die "apt-get install slurm-wlm munge failed"
}

# Node names must resolve to this host, since the multi-node train job's c10d rendezvous dials
# the first node by name: this host's name, then localhost.
node_name() { if [ "$1" = 1 ]; then echo "$HOST"; else echo localhost; fi; }

write_config() {
    mkdir -p "$DIR/state" "$DIR/log" "$DIR/dev"
    local cpus mem_mb names="" i
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)
    for i in $(seq 1 "$NODES"); do names="$names${names:+,}$(node_name "$i")"; done
    # The fake GPU: slurmd wants a character device; a node with /dev/null's numbers will do.
    [ -c "$DIR/dev/gpu0" ] || mknod "$DIR/dev/gpu0" c 1 3 2>/dev/null || ln -sf /dev/null "$DIR/dev/gpu0"
    cat >"$CONF" <<EOF
# Written by tests/slurm/local-cluster.sh: a throw-away one-host cluster.
ClusterName=getdiff-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldPort=${GETDIFF_SLURM_PORT:-6817}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=2
JobAcctGatherParams=OverMemoryKill
MinJobAge=600
ReturnToService=2
SlurmdTimeout=30
KillWait=5
MpiDefault=none
EOF
    for i in $(seq 1 "$NODES"); do
        local port=$(( ${GETDIFF_SLURM_PORT:-6817} + i ))
        echo "NodeName=$(node_name "$i") NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$port" \
            "CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN" >>"$CONF"
    done
    cat >>"$CONF" <<EOF
PartitionName=cpu Nodes=$names Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$names MaxTime=INFINITE State=UP
EOF
    echo "# Written by tests/slurm/local-cluster.sh" >"$DIR/gres.conf"
    echo "Name=gpu File=$DIR/dev/gpu0" >>"$DIR/gres.conf"
    mkdir -p "$ETC"
    for name in slurm.conf gres.conf; do
        if [ -e "$ETC/$name" ] && ! grep -q "local-cluster.sh" "$ETC/$name"; then
            die "$ETC/$name exists and was not written by this script: not touching it"
        fi
        ln -sfn "$DIR/$name" "$ETC/$name"
    done
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    if munge -n </dev/null >/dev/null 2>&1; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    munged --force --pid-file "$DIR/munged.pid"
    echo started >"$DIR/munged.ours"
}

wait_for_nodes() {
    local i
    for i in $(seq 1 60); do
        if [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | grep -cE ' (idle|mixed|alloc)')" \
            -ge "$NODES" ]
        then return; fi
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    die "nodes did not come up; see $DIR/log/"
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (the daemons run as root here)"
    install_packages
    if status >/dev/null 2>&1; then echo "already running ($CONF)"; return; fi
    write_config
    start_munge
    running "$DIR/slurmctld.pid" || slurmctld -f "$CONF" -c -i
    local i
    for i in $(seq 1 "$NODES"); do
        local name
        name=$(node_name "$i")
        running "$DIR/slurmd-$name.pid" && continue
        if [ "$NODES" = 1 ]; then
            slurmd -f "$CONF" -c
        else
            slurmd -f "$CONF" -c -N "$name" || die "a second slurmd on one host needs a Slurm" \
                "built with --enable-multiple-slurmd (slurmd -N failed; see $DIR/log/)"
        fi
    done
    wait_for_nodes
    echo "running: $NODES node(s), partitions cpu and gpu ($ETC/slurm.conf -> $CONF)"
}

stop() {
    local pid i
    for pid in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid"; do
        if running "$pid"; then kill "$(cat "$pid")"; fi
    done
    for i in $(seq 1 20); do  # a start right after must not meet the old daemons
        running "$DIR/slurmctld.pid" || break
        sleep 0.25
    done
    if [ -f "$DIR/munged.ours" ] && running "$DIR/munged.pid"; then kill "$(cat "$DIR/munged.pid")"; fi
    rm -f "$DIR/munged.ours"
    local name
    for name in slurm.conf gres.conf; do
        [ "$(readlink "$ETC/$name" 2>/dev/null)" = "$DIR/$name" ] && rm -f "$ETC/$name"
    done
    echo stopped
}

status() {
    running "$DIR/slurmctld.pid" || { echo "not running"; return 1; }
    sinfo -h -o "%P %a %D %T" || return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
