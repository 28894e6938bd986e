#!/usr/bin/env bash
# A real, private Slurm cluster on this machine, for the test suite and CI.
#
#   local_cluster.sh up [--nodes N] DIR
#                                install Slurm + munge if missing, start munged, slurmctld and
#                                N slurmd (default 1) with all state under DIR, wait until every
#                                node is idle, then print the environment for the cluster's
#                                clients (the only thing on stdout, so callers can
#                                `eval "$(... up DIR)"`): `export SLURM_CONF=DIR/etc/slurm.conf`,
#                                and with N >= 2 also `export PATH=DIR/bin:$PATH`.
#   local_cluster.sh down DIR    cancel all jobs, stop every daemon by its pid file (and, with
#                                N >= 2, release the cluster's network namespaces); succeeds
#                                when already down.
#   local_cluster.sh status DIR  exit 0 if every node answers idle/mixed/allocated/completing.
#
# One node (the default): node "localhost" on 127.0.0.1, ports picked free on loopback.
#
# N >= 2 nodes (n1..nN), each a real slurmd with its own network stack, so every node can bind
# the same port (tf.distribute's SlurmClusterResolver gives every task `<node>:<port_base + i>`):
#   - one network namespace per node and one namespace "ctl" for slurmctld, all bind-mounted
#     under DIR/netns; ctl holds a bridge, each node a veth link to it; the addresses
#     10.199.0.1 (ctl) and 10.199.0.(10+i) (node ni) exist only inside these
#     namespaces; the machine's own network is not touched (no address, no link);
#   - every daemon runs in private mount and UTS namespaces where DIR/etc/hosts is bind-mounted
#     over /etc/hosts and the host name is the node's name, so jobs see `hostname` == n1 and
#     resolve n1..nN and ctl; /etc itself is never written;
#   - clients (sbatch, srun, scontrol, ...) reach slurmctld through DIR/bin wrappers that enter
#     the ctl namespace (or run directly when already inside one of the cluster's namespaces,
#     i.e. inside a job); munged is shared through its unix socket under DIR.
#
# Why a private directory: nothing under /etc is touched (apt-get aside), several clusters can
# coexist (each picks free ports or has its own namespaces), and `rm -rf DIR` after `down`
# leaves no trace.
# `up` needs root: apt-get, namespaces, and slurmd (SlurmUser=root) launches the jobs.
# Environment: LOCAL_SLURM_TIMEOUT (seconds to wait for idle nodes, default 60).
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
    echo "usage: $PROG up [--nodes N] DIR | down DIR | status DIR   (DIR absolute; see the" \
        "header of this script)" >&2
    exit 2
}

CMD=${1:-}
(($# >= 1)) && shift
NODES_ARG=""
B=""
while (($#)); do
    case "$1" in
    --nodes) (($# >= 2)) || usage && NODES_ARG=$2 && shift 2 ;;
    --nodes=*) NODES_ARG=${1#--nodes=} && shift ;;
    -*) usage ;;
    *) [[ -z $B ]] || usage && B=$1 && shift ;;
    esac
done
[[ -n $B ]] || usage
[[ $CMD == up || -z $NODES_ARG ]] || die "--nodes applies to 'up' only"
[[ -z $NODES_ARG || $NODES_ARG =~ ^[1-9][0-9]?$ ]] || die "--nodes wants 1..99, got '$NODES_ARG'"
[[ $B == /* ]] || die "DIR must be an absolute path, got '$B'"
[[ $B =~ ^/[^[:space:]]*$ ]] || die "DIR must not contain whitespace (slurm.conf paths), got '$B'"
B=${B%/}
[[ -n $B ]] || die "DIR must not be /"

CONF=$B/etc/slurm.conf
SOCK=$B/munge-run/munge.socket.2
MUNGE_PID=$B/run/munged.pid
CTLD_PID=$B/run/slurmctld.pid
NODES_FILE=$B/etc/nodes # the node count of the cluster under DIR, written by `up`
NS=$B/netns             # network namespaces (N >= 2), bind-mounted files
SUBNET=10.199.0         # addresses inside the cluster's namespaces only

# The node count: what `up` was asked for, else what the cluster under DIR was brought up with.
NODES=${NODES_ARG:-$(cat "$NODES_FILE" 2>/dev/null || echo 1)}
[[ $NODES =~ ^[1-9][0-9]?$ ]] || die "$NODES_FILE is corrupt (want 1..99): '$NODES'"
if ((NODES == 1)); then
    NODE_NAMES=(localhost) # SlurmdPidFile has %n, and the node is "localhost"
else
    NODE_NAMES=()
    for i in $(seq 1 "$NODES"); do NODE_NAMES+=("n$i"); done
fi

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

# slurmd_pid NODE: the pid file of NODE's slurmd (SlurmdPidFile has %n).
slurmd_pid() { echo "$B/run/slurmd-$1.pid"; }

# client CMD...: run a Slurm client against this cluster (through the ctl namespace, N >= 2).
client() {
    if ((NODES == 1)); then
        SLURM_CONF=$CONF timeout 10 "$@"
    else
        SLURM_CONF=$CONF timeout 10 nsenter --net="$NS/ctl" "$@"
    fi
}

# node_states: one line per node, its state as sinfo prints it (e.g. idle, mixed, down*); empty
# if slurmctld does not answer.
node_states() {
    [[ -f $CONF ]] || return 0
    [[ $NODES == 1 || -e $NS/ctl ]] || return 0
    client sinfo -h -N -o %T 2>/dev/null || true
}

# nodes_in STATE...: every one of the NODES nodes answers one of STATEs.
nodes_in() {
    local states count=0 st
    states=$(node_states)
    [[ -n $states ]] || return 1
    while read -r st; do
        [[ " $* " == *" $st "* ]] || return 1
        count=$((count + 1))
    done <<<"$states"
    ((count == NODES))
}

# daemons_alive: slurmctld and every slurmd run.
daemons_alive() {
    local n
    alive "$CTLD_PID" slurmctld || return 1
    for n in "${NODE_NAMES[@]}"; do alive "$(slurmd_pid "$n")" slurmd || return 1; done
}

# any_daemon_alive: slurmctld or any slurmd of this cluster runs.
any_daemon_alive() {
    local n
    alive "$CTLD_PID" slurmctld && return 0
    for n in "${NODE_NAMES[@]}"; do alive "$(slurmd_pid "$n")" slurmd && return 0; done
    return 1
}

# healthy: all Slurm daemons run and every node answers a usable state. The pid files are
# checked first because sinfo retries for ~9 s when slurmctld is down.
healthy() {
    daemons_alive || return 1
    nodes_in idle mixed allocated completing
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
    local missing=() packages=(slurmctld slurmd slurm-client munge) b needed
    needed=(slurmctld slurmd sbatch sinfo munged)
    # N >= 2: ip (iproute2) for the links; nsenter, unshare, mount and hostname are essential
    # Debian packages (util-linux, mount, hostname).
    ((NODES > 1)) && needed+=(ip nsenter unshare mount hostname) && packages+=(iproute2)
    for b in "${needed[@]}"; do
        command -v "$b" >/dev/null || missing+=("$b")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and no apt-get to install ${packages[*]}"
    log "installing ${packages[*]} (missing: ${missing[*]})"
    # apt's chatter goes to stderr: stdout is reserved for the export line.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${packages[@]}" >&2 || die "apt-get install of ${packages[*]} failed"
    for b in "${needed[@]}"; do
        command -v "$b" >/dev/null || die "$b still not on PATH after installing ${packages[*]}"
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

# node_address I: the address of node nI inside the cluster's namespaces.
node_address() { echo "$SUBNET.$((10 + $1))"; }

write_conf() {
    local ports ctld_port slurmd_port what ctld_host nodes cpus mem i
    cpus=$(node_cpus)
    mem=$(node_memory)
    if ((NODES == 1)); then
        ports=$(pick_ports)
        read -r ctld_port slurmd_port <<<"$ports"
        what="a private one-node cluster"
        ctld_host=localhost
        nodes="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    else
        # Every daemon has its own network stack: Slurm's default ports never collide.
        ctld_port=6817
        slurmd_port=6818
        what="a private $NODES-node cluster in its own network namespaces"
        ctld_host="ctl($SUBNET.1)"
        # Each node sees the whole machine (CPUs, memory): they share it.
        nodes=""
        for i in $(seq 1 "$NODES"); do
            nodes+="NodeName=n$i NodeHostname=n$i NodeAddr=$(node_address "$i") CPUs=$cpus"
            nodes+=" RealMemory=$mem State=UNKNOWN"$'\n'
        done
        nodes=${nodes%$'\n'}
    fi
    : >"$B/etc/plugstack.conf" # empty, so /etc/slurm/plugstack.conf is never read
    cat >"$CONF" <<EOF
# Written by scripts/slurm/local_cluster.sh: $what, all state under $B.
ClusterName=ci
SlurmctldHost=$ctld_host
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
$nodes
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

# ---- N >= 2: network namespaces, one per node and one for slurmctld ("ctl") ----------------

# ns_ready: every namespace of this cluster exists (a live nsfs bind mount) and was configured.
ns_ready() {
    local n
    [[ -f $NS/.configured ]] || return 1
    for n in ctl "${NODE_NAMES[@]}"; do mountpoint -q "$NS/$n" || return 1; done
}

# release_namespaces: unmount and remove the namespace files; a namespace lives on only while a
# process still runs in it, and goes away with its links and addresses when that process ends.
release_namespaces() {
    local f
    [[ -d $NS ]] || return 0
    rm -f "$NS/.configured"
    for f in "$NS"/*; do
        [[ -e $f ]] || continue
        if mountpoint -q "$f"; then
            umount "$f" 2>/dev/null || umount -l "$f" || log "warning: could not unmount $f"
        fi
        rm -f "$f"
    done
    rmdir "$NS" 2>/dev/null || true
}

# make_namespaces: ctl with a bridge at $SUBNET.1, and per node nI a veth link to the
# bridge with $SUBNET.(10+I). Links are created inside ctl, never in the machine's own
# network namespace; nothing but loopback is configured outside the cluster's namespaces.
make_namespaces() {
    local n i
    release_namespaces
    mkdir -p "$NS"
    for n in ctl "${NODE_NAMES[@]}"; do
        : >"$NS/$n"
        unshare --net="$NS/$n" true || die "cannot create a network namespace ($NS/$n)"
        nsenter --net="$NS/$n" ip link set lo up
    done
    nsenter --net="$NS/ctl" sh -e -c "
        ip link add br0 type bridge
        ip link set br0 up
        ip addr add $SUBNET.1/24 dev br0" || die "cannot create the bridge in $NS/ctl"
    for i in $(seq 1 "$NODES"); do
        nsenter --net="$NS/ctl" sh -e -c "
            ip link add v-n$i type veth peer name eth0 netns $NS/n$i
            ip link set v-n$i master br0
            ip link set v-n$i up" || die "cannot link node n$i to ctl"
        nsenter --net="$NS/n$i" sh -e -c "
            ip addr add $(node_address "$i")/24 dev eth0
            ip link set eth0 up" || die "cannot configure node n$i's address"
    done
    : >"$NS/.configured"
}

# write_hosts: the names every daemon and job of the cluster resolves (bind-mounted over
# /etc/hosts inside their private mount namespaces only).
write_hosts() {
    local i
    {
        echo "# Written by scripts/slurm/local_cluster.sh; seen as /etc/hosts inside the cluster."
        echo "127.0.0.1 localhost"
        echo "$SUBNET.1 ctl"
        for i in $(seq 1 "$NODES"); do echo "$(node_address "$i") n$i"; done
    } >"$B/etc/hosts.tmp"
    mv "$B/etc/hosts.tmp" "$B/etc/hosts"
}

# write_clients: DIR/bin/<client> for every Slurm client: it runs the real client in the ctl
# namespace, or directly when already inside one of the cluster's namespaces (inside a job, so
# that `srun` in a batch script runs on the batch node, as on a real cluster).
write_clients() {
    local c real
    mkdir -p "$B/bin"
    for c in sacct salloc sattach sbatch sbcast scancel scontrol sdiag sinfo sprio squeue \
        sreport srun sshare sstat strigger; do
        real=$(command -v "$c") || continue
        cat >"$B/bin/$c.tmp" <<EOF
#!/bin/bash
# Written by scripts/slurm/local_cluster.sh: $c for the cluster under $B.
export SLURM_CONF=$CONF
here=\$(stat -L -c %i /proc/self/ns/net)
for ns in $NS/ctl $NS/n*; do
    [[ \$(stat -c %i "\$ns" 2>/dev/null) == "\$here" ]] && exec $real "\$@"
done
exec nsenter --net=$NS/ctl $real "\$@"
EOF
        chmod 755 "$B/bin/$c.tmp"
        mv "$B/bin/$c.tmp" "$B/bin/$c"
    done
}

# in_node NAME CMD...: run CMD in NAME's network namespace, in a private mount namespace with the
# cluster's hosts file as /etc/hosts, and a private UTS namespace with NAME as host name.
in_node() {
    local name=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner bash
    nsenter --net="$NS/$name" unshare --mount --uts --propagation private -- \
        bash -c 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"' \
        in_node "$B/etc/hosts" "$name" "$@"
}

# ---- daemons ---------------------------------------------------------------------------------

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

# print_env: the clients' environment, the only output of `up` on stdout.
print_env() {
    echo "export SLURM_CONF=$CONF"
    ((NODES == 1)) || echo "export PATH=$B/bin:\$PATH"
}

cmd_up() {
    local n
    if healthy; then
        print_env
        return 0
    fi
    ((EUID == 0)) || die "'up' must run as root (apt-get, namespaces; slurmd with SlurmUser=root)"
    if [[ -f $NODES_FILE && $(cat "$NODES_FILE") != "$NODES" ]]; then
        local pidfile
        for pidfile in "$CTLD_PID" "$B"/run/slurmd-*.pid; do
            alive "$pidfile" slurmctld || alive "$pidfile" slurmd || continue
            die "the cluster under $B runs with $(cat "$NODES_FILE") node(s); run 'down' first"
        done
    fi
    install_packages
    mkdir -p "$B"/{etc,munge,munge-run,state,spool,run,log}
    chmod 700 "$B/munge"
    chmod 755 "$B/munge-run"
    # Fresh ports (and namespaces) only when no Slurm daemon is using the current config.
    if [[ ! -f $CONF ]] || ! any_daemon_alive; then
        write_conf
        echo "$NODES" >"$NODES_FILE"
        if ((NODES > 1)); then
            make_namespaces
            write_hosts
            write_clients
        fi
    elif ((NODES > 1)) && ! ns_ready; then
        die "daemons of the cluster under $B run but its namespaces are gone; run 'down' first"
    fi
    start_munged
    if ((NODES == 1)); then
        start_daemon "$CTLD_PID" slurmctld slurmctld -f "$CONF"
        start_daemon "$(slurmd_pid localhost)" slurmd slurmd -N localhost -f "$CONF"
    else
        start_daemon "$CTLD_PID" slurmctld in_node ctl slurmctld -f "$CONF"
        for n in "${NODE_NAMES[@]}"; do
            start_daemon "$(slurmd_pid "$n")" slurmd in_node "$n" slurmd -N "$n" -f "$CONF"
        done
    fi

    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! daemons_alive; then
            log_tail
            die "slurmctld or a slurmd exited during start-up (logs under $B/log)"
        fi
        if nodes_in idle mixed allocated; then
            print_env
            return 0
        fi
        sleep 0.2
    done
    log_tail
    die "nodes ${NODE_NAMES[*]} not all idle after ${TIMEOUT}s (states:" \
        "'$(node_states | tr '\n' ' ')'; reasons: $(client sinfo -h -N -o '%N:%E' 2>/dev/null |
            tr '\n' ' ' || true)); logs under $B/log"
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
    local jobs pids n
    if [[ -f $CONF ]] && alive "$CTLD_PID" slurmctld; then
        jobs=$(client squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one word per job id
            client scancel $jobs 2>/dev/null || true
        fi
    fi
    kill_job_processes
    # Let slurmd report the jobs' ends while slurmctld still listens; it shuts down faster then.
    if [[ -n ${jobs:-} ]]; then
        for _ in $(seq 1 50); do
            [[ -z $(client squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    for n in "${NODE_NAMES[@]}"; do stop "$(slurmd_pid "$n")" slurmd; done
    stop "$CTLD_PID" slurmctld
    stop "$MUNGE_PID" munged
    kill_job_processes
    pids=$(our_stepds)
    if [[ -n $pids ]]; then
        log "killing leftover slurmstepd: ${pids//$'\n'/ }"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    release_namespaces
    return 0
}

cmd_status() {
    if healthy; then
        log "nodes ${NODE_NAMES[*]}: $(node_states | tr '\n' ' ')($CONF)"
        return 0
    fi
    local ctld=down slurmd="" states="" n
    alive "$CTLD_PID" slurmctld && ctld=running && states=$(node_states | tr '\n' ' ')
    for n in "${NODE_NAMES[@]}"; do
        if alive "$(slurmd_pid "$n")" slurmd; then
            slurmd+=" $n:running"
        else
            slurmd+=" $n:down"
        fi
    done
    log "cluster under $B is not up (slurmctld $ctld, slurmd${slurmd}," \
        "node states '${states:-no answer}')"
    return 1
}

case "$CMD" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac
