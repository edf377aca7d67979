#!/usr/bin/env bash
# A one-node SLURM on this machine, for tests/test_slurm.py and for trying profiles/slurm by hand.
#
#   bash tests/slurm/local-cluster.sh start    # install (Debian: slurm-wlm, munge) if missing, start
#   bash tests/slurm/local-cluster.sh status   # exit 0 when the cluster answers (sinfo)
#   bash tests/slurm/local-cluster.sh env      # print "export SLURM_CONF=..." for your shell
#   bash tests/slurm/local-cluster.sh stop     # stop the daemons this script started
#
# Everything lives in $GETDIFF_SLURM_DIR (default /tmp/getdiff-slurm): slurm.conf, gres.conf,
# state, logs, pid files. /etc/slurm is not touched, so commands need SLURM_CONF (see `env`).
# The node has this machine's CPUs and memory (less 1 GB for the system), partitions `cpu`
# (default) and `gpu`, and one gres gpu backed by a plain file, so `--gpus=1` requests are
# scheduled and jobs get CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS (a device node with /dev/null's
# numbers: no real GPU behind it). No
# accounting (no slurmdbd): use `--slurm-status-command squeue` and `--slurm-no-account`.
# GETDIFF_SLURM_NODES=2 starts two slurmd on this host (needs a Slurm built with
# --enable-multiple-slurmd; `start` says so and stops if it is not). Needs root. Idempotent:
# `start` on a running cluster only checks it, `stop` on a stopped one does nothing.
set -euo pipefail

DIR=${GETDIFF_SLURM_DIR:-/tmp/getdiff-slurm}
NODES=${GETDIFF_SLURM_NODES:-1}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
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

node_name() { if [ "$NODES" = 1 ]; then echo "$HOST"; else echo "node$1"; fi; }

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
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
AccountingStorageTRES=gres/gpu
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
    echo "Name=gpu File=$DIR/dev/gpu0" >"$DIR/gres.conf"
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
        if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)')" -ge "$NODES" ]
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
    echo "running: $NODES node(s), partitions cpu and gpu; export SLURM_CONF=$CONF"
}

stop() {
    local pid
    for pid in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid"; do
        running "$pid" && kill "$(cat "$pid")"
    done
    if [ -f "$DIR/munged.ours" ] && running "$DIR/munged.pid"; then kill "$(cat "$DIR/munged.pid")"; fi
    rm -f "$DIR/munged.ours"
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
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
