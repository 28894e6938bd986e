#!/usr/bin/env bash
# A real, private, single-node Slurm cluster on localhost, for the test suite and CI.
#
#   local_cluster.sh up DIR      install Slurm + munge if missing, start munged, slurmctld and
#                                slurmd with all state under DIR, wait until the node is idle,
#                                then print `export SLURM_CONF=DIR/etc/slurm.conf` (the only
#                                thing on stdout, so callers can `eval "$(... up DIR)"`).
#   local_cluster.sh down DIR    cancel all jobs, stop the three daemons by their pid files;
#                                succeeds when already down.
#   local_cluster.sh status DIR  exit 0 if the node answers idle/mixed/allocated/completing.
#
# Why a private directory: nothing under /etc is touched (apt-get aside), several clusters can
# coexist (each picks free ports), and `rm -rf DIR` after `down` leaves no trace.
# `up` needs root: apt-get, and slurmd (SlurmUser=root) launches the jobs.
# Environment: LOCAL_SLURM_TIMEOUT (seconds to wait for an idle node, default 60).
set -euo pipefail

# The daemons live in /usr/sbin, which non-login shells and CI runners may lack on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PROG=local_cluster.sh
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}

log() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}
usage() {
    echo "usage: $PROG up|down|status DIR   (DIR absolute; see the header of this script)" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD=$1
B=$2
[[ $B == /* ]] || die "DIR must be an absolute path, got '$B'"
[[ $B =~ ^/[^[:space:]]*$ ]] || die "DIR must not contain whitespace (slurm.conf paths), got '$B'"
B=${B%/}
[[ -n $B ]] || die "DIR must not be /"

CONF=$B/etc/slurm.conf
SOCK=$B/munge-run/munge.socket.2
MUNGE_PID=$B/run/munged.pid
CTLD_PID=$B/run/slurmctld.pid
SLURMD_PID=$B/run/slurmd-localhost.pid # SlurmdPidFile has %n, and the node is "localhost"

# Unix socket paths are limited to 107 bytes; munged fails obscurely beyond that.
((${#SOCK} <= 100)) || die "DIR is too long for a unix socket path (${#SOCK} > 100 bytes): $B"

# proc_stat PID: prints "STATE PPID PGID" from /proc/PID/stat (comm may contain spaces).
proc_stat() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    echo "${s%% *} $(cut -d' ' -f2,3 <<<"$s")"
}

# pid_alive PID NAME: PID runs a command named NAME (not a reused pid, not a zombie: where PID 1
# is not an init, dead daemons stay zombies).
pid_alive() {
    local st
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    st=$(proc_stat "$1") || return 1
    [[ ${st%% *} != Z ]]
}

# alive PIDFILE NAME: the pid file names a live process whose command is NAME.
alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    pid_alive "$pid" "$2"
}

# node_state: the node's state as sinfo prints it (e.g. idle, mixed, down*), empty if no answer.
node_state() {
    [[ -f $CONF ]] || return 0
    SLURM_CONF=$CONF timeout 10 sinfo -h -o %T 2>/dev/null | head -n1 || true
}

# healthy: both Slurm daemons run and the node answers a usable state. The pid files are checked
# first because sinfo retries for ~9 s when slurmctld is down.
healthy() {
    alive "$CTLD_PID" slurmctld && alive "$SLURMD_PID" slurmd || return 1
    case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

log_tail() {
    local f
    for f in "$B"/log/*.log; do
        [[ -f $f ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
}

install_packages() {
    local missing=() b
    for b in slurmctld slurmd sbatch sinfo munged; do
        command -v "$b" >/dev/null || missing+=("$b")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and no apt-get to install slurmctld slurmd slurm-client munge"
    log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    # apt's chatter goes to stderr: stdout is reserved for the export line.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2 || die "apt-get install of Slurm failed"
    for b in slurmctld slurmd sbatch sinfo munged; do
        command -v "$b" >/dev/null || die "$b still not on PATH after installing Slurm"
    done
}

# port_free PORT: nothing accepts connections on 127.0.0.1:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Two free consecutive-ish ports, so concurrent clusters (two test runs) do not collide on the
# defaults 6817/6818.
pick_ports() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if port_free "$p" && port_free "$((p + 1))"; then
            echo "$p $((p + 1))"
            return 0
        fi
    done
    die "found no free TCP port pair for slurmctld/slurmd"
}

# Real memory for the node: what slurmd detects minus 1 GiB headroom (a node configured with
# more memory than it has is drained as "Low RealMemory").
node_memory() {
    local mem
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    [[ $mem =~ ^[0-9]+$ ]] || mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
    if ((mem > 2048)); then echo $((mem - 1024)); else echo $((mem / 2)); fi
}

# CPUs: nproc (what this process may use), capped by what slurmd detects (more than that drains
# the node).
node_cpus() {
    local n c
    n=$(nproc)
    c=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)
    if [[ $c =~ ^[0-9]+$ ]] && ((c < n)); then n=$c; fi
    echo "$n"
}

write_conf() {
    local ports ctld_port slurmd_port
    ports=$(pick_ports)
    read -r ctld_port slurmd_port <<<"$ports"
    : >"$B/etc/plugstack.conf" # empty, so /etc/slurm/plugstack.conf is never read
    cat >"$CONF" <<EOF
# Written by scripts/slurm/local_cluster.sh: a private one-node cluster, all state under $B.
ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5: a requeued job otherwise waits ~121 s for its old credential to expire.
AuthInfo=socket=$SOCK,cred_expire=5
StateSaveLocation=$B/state
SlurmdSpoolDir=$B/spool/slurmd-%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$B/run/slurmd-%n.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd-%n.log
PlugStackConfig=$B/etc/plugstack.conf
MailProg=/bin/true
# pgid: linuxproc left orphaned children of a signalled batch shell running.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# Schedule every second, so requeued and new jobs start within seconds.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(node_cpus) RealMemory=$(node_memory) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munged() {
    alive "$MUNGE_PID" munged && return 0
    local key=$B/munge/munge.key
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" >&2 || die "mungekey could not create $key"
        else # munge < 0.5.14 has no mungekey
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
        chmod 400 "$key"
    fi
    rm -f "$SOCK" "$SOCK.lock"
    # --force: munged refuses a socket below a directory that is not world-executable (mktemp
    # and pytest make 700 dirs); with --force that is a warning. Only root uses this socket.
    munged --force --socket="$SOCK" --key-file="$key" --pid-file="$MUNGE_PID" \
        --log-file="$B/log/munged.log" --seed-file="$B/munge/munged.seed" >&2 ||
        {
            log_tail
            die "munged did not start (log: $B/log/munged.log)"
        }
    for _ in $(seq 1 50); do
        [[ -S $SOCK ]] && return 0
        sleep 0.1
    done
    log_tail
    die "munged started but its socket $SOCK never appeared"
}

# start_daemon PIDFILE NAME CMD...: run a self-daemonizing Slurm daemon unless already running.
start_daemon() {
    local pidfile=$1 name=$2
    shift 2
    alive "$pidfile" "$name" && return 0
    # SLURM_CONF in the daemons' environment marks their slurmstepd children as ours (`down`).
    (cd "$B" && SLURM_CONF=$CONF "$@" >&2) || {
        log_tail
        die "$name did not start: $* (logs under $B/log)"
    }
    for _ in $(seq 1 50); do
        alive "$pidfile" "$name" && return 0
        sleep 0.1
    done
    log_tail
    die "$name exited right after starting (logs under $B/log)"
}

cmd_up() {
    if healthy; then
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    ((EUID == 0)) || die "'up' must run as root (apt-get; slurmd with SlurmUser=root)"
    install_packages
    mkdir -p "$B"/{etc,munge,munge-run,state,spool,run,log}
    chmod 700 "$B/munge"
    chmod 755 "$B/munge-run"
    # Fresh ports only when no Slurm daemon is using the current config.
    if [[ ! -f $CONF ]] || ! { alive "$CTLD_PID" slurmctld || alive "$SLURMD_PID" slurmd; }; then
        write_conf
    fi
    start_munged
    start_daemon "$CTLD_PID" slurmctld slurmctld -f "$CONF"
    start_daemon "$SLURMD_PID" slurmd slurmd -N localhost -f "$CONF"

    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        if ! alive "$CTLD_PID" slurmctld || ! alive "$SLURMD_PID" slurmd; then
            log_tail
            die "slurmctld or slurmd exited during start-up (logs under $B/log)"
        fi
        state=$(node_state)
        case "$state" in
        idle | mixed | allocated)
            echo "export SLURM_CONF=$CONF"
            return 0
            ;;
        esac
        sleep 0.2
    done
    log_tail
    die "node 'localhost' not idle after ${TIMEOUT}s (state: '${state:-no answer}'; reason:" \
        "$(SLURM_CONF=$CONF timeout 10 sinfo -h -o %E 2>/dev/null || true)); logs under $B/log"
}

# stop PIDFILE NAME: TERM the daemon, wait up to 15 s, then KILL it. Waits on the pid, not the
# pid file: slurmd removes its pid file as soon as it starts shutting down.
stop() {
    local pidfile=$1 name=$2 pid
    alive "$pidfile" "$name" || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
        pid_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        pid_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    log "warning: $name (pid $pid) is still running"
}

# Pids of live slurmstepd processes started by this cluster's slurmd (they outlive slurmd); the
# daemons were started with SLURM_CONF=$CONF in their environment, which slurmstepd inherits.
our_stepds() {
    local d
    for d in /proc/[0-9]*; do
        pid_alive "${d#/proc/}" slurmstepd || continue
        { tr '\0' '\n' <"$d/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" &&
            echo "${d#/proc/}"
    done
    return 0
}

# SIGKILL the process group of every task of our slurmstepds (proctrack/pgid puts each task in
# its own group): scancel alone lets a job that ignores SIGTERM live for KillWait (30 s).
kill_job_processes() {
    local stepds d st ppid pgid
    stepds=" $(our_stepds | tr '\n' ' ') "
    [[ -n ${stepds// /} ]] || return 0
    for d in /proc/[0-9]*; do
        st=$(proc_stat "${d#/proc/}") || continue
        read -r _ ppid pgid <<<"$st"
        [[ $stepds == *" $ppid "* ]] || continue
        ((pgid > 1)) && kill -KILL -- "-$pgid" 2>/dev/null || true
    done
}

cmd_down() {
    local jobs pids
    if [[ -f $CONF ]] && alive "$CTLD_PID" slurmctld; then
        jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one word per job id
            SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null || true
        fi
    fi
    kill_job_processes
    # Let slurmd report the jobs' ends while slurmctld still listens; it shuts down faster then.
    if [[ -n ${jobs:-} ]]; then
        for _ in $(seq 1 50); do
            [[ -z $(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    stop "$SLURMD_PID" slurmd
    stop "$CTLD_PID" slurmctld
    stop "$MUNGE_PID" munged
    kill_job_processes
    pids=$(our_stepds)
    if [[ -n $pids ]]; then
        log "killing leftover slurmstepd: ${pids//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    return 0
}

cmd_status() {
    if healthy; then
        log "node localhost is $(node_state) ($CONF)"
        return 0
    fi
    local ctld=down slurmd=down state=""
    alive "$CTLD_PID" slurmctld && ctld=running && state=$(node_state)
    alive "$SLURMD_PID" slurmd && slurmd=running
    log "cluster under $B is not up (slurmctld $ctld, slurmd $slurmd," \
        "node state '${state:-no answer}')"
    return 1
}

case "$CMD" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac
