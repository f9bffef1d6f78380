#!/usr/bin/env bash
# A real one-node SLURM on this machine, for the SLURM test tier (tests/slurm/).
#
#   .ci/slurm.sh up      install Debian's slurmctld, slurmd, slurm-client and munge if missing,
#                        write /etc/slurm/slurm.conf + gres.conf (one node, a fake `gpu:h100:1`
#                        backed by /dev/null), start munged, slurmctld and slurmd directly (no
#                        systemd), and wait until the node is idle
#   .ci/slurm.sh down    stop the three daemons by their PIDs and wait for them to exit
#   .ci/slurm.sh status  sinfo + squeue
#
# Must run as root. slurm.conf lives at the default path on purpose: the snakemake SLURM plugin
# strips SLURM_* variables (SLURM_CONF included) inside jobs, so srun there only finds the default.
# There is no slurmdbd, so `sacct` does not work: run snakemake with
# `--slurm-status-command squeue` (profiles/slurm-ci does) and keep MinJobAge high so finished jobs
# stay visible to squeue.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES=$CONF_DIR/gres.conf
MARKER="# written by joulebench .ci/slurm.sh"
NODE=localhost
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "[slurm.sh] $*"; }
die() {
    echo "[slurm.sh] error: $*" >&2
    exit 1
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A daemon writes its PID file after it forks; wait for it (and for the process to live).
started() {
    local name=$1 pidfile=$2
    for _ in $(seq 50); do
        if alive "$pidfile"; then
            say "$name started (pid $(cat "$pidfile"))"
            return
        fi
        sleep 0.2
    done
    die "$name did not start; see $LOG_DIR/$name.log"
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

write_config() {
    for f in "$CONF" "$GRES"; do
        if [[ -f $f ]] && ! grep -qF "$MARKER" "$f"; then
            die "$f exists and was not written by this script; refusing to overwrite it"
        fi
    done
    # The node's real shape, as slurmd sees it (CPUs, sockets, cores, memory).
    local shape cpus mem
    shape=$(slurmd -C | head -1)
    cpus=$(grep -oP 'CPUs=\K[0-9]+' <<<"$shape")
    mem=$(grep -oP 'RealMemory=\K[0-9]+' <<<"$shape")
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    cat >"$CONF" <<EOF
$MARKER
ClusterName=joulebench-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to squeue for a day (there is no sacct without slurmdbd)
MinJobAge=86400
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:h100:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$GRES" <<EOF
$MARKER
# A fake GPU: SLURM allocates it like a real one, so GPU requests are exercised end to end.
NodeName=$NODE Name=gpu Type=h100 File=/dev/null
EOF
    say "wrote $CONF ($cpus CPUs, $mem MB, gres gpu:h100:1)"
}

start_munge() {
    if alive "$MUNGE_PID"; then
        say "munged already running (pid $(cat $MUNGE_PID))"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (the munge package creates it)"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    started munged "$MUNGE_PID"
    munge -n | unmunge >/dev/null || die "munge does not work"
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
        if [[ $state == idle ]]; then
            say "node $NODE is idle"
            return
        fi
        sleep 1
    done
    tail -20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    die "node $NODE is not idle after 60 s (state: '${state:-none}')"
}

up() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    install_packages
    write_config
    start_munge
    if alive "$CTLD_PID"; then
        say "slurmctld already running (pid $(cat $CTLD_PID))"
    else
        slurmctld -c # -c: start from a clean state, no jobs left from an earlier run
        started slurmctld "$CTLD_PID"
    fi
    if alive "$SLURMD_PID"; then
        say "slurmd already running (pid $(cat $SLURMD_PID))"
    else
        slurmd -N "$NODE"
        started slurmd "$SLURMD_PID"
    fi
    wait_idle
    sinfo -N -o "%N %T %c %m %G"
}

stop_pid() {
    local name=$1 pidfile=$2 pid
    if ! alive "$pidfile"; then
        say "$name not running"
        return
    fi
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || {
            say "$name stopped (pid $pid)"
            return
        }
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    say "$name killed (pid $pid)"
}

down() {
    stop_pid slurmd "$SLURMD_PID"
    stop_pid slurmctld "$CTLD_PID"
    stop_pid munged "$MUNGE_PID"
}

case "${1:-}" in
up) up ;;
down) down ;;
status)
    sinfo -N -o "%N %T %c %m %G"
    squeue --states=all
    ;;
*) die "usage: $0 up|down|status" ;;
esac
