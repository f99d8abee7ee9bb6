#!/usr/bin/env bash
# A real N-host SLURM cluster on one machine, for tests of the SLURM path and of lost hosts.
#
#   slurm/local_cluster.sh start [--nodes N] [--cpus C] [--no-slurm]  # hosts node1..nodeN, partition debug
#   slurm/local_cluster.sh exec NODE CMD [ARG ...]   # CMD on host NODE: its address, its hostname
#   slurm/local_cluster.sh stop-host NODE            # NODE fails: its link cut, its processes killed
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop
#
# Each host is a network namespace with its own veth (10.200.0.i/24) on a bridge in the root
# namespace (10.200.0.254/24), and its own hostname (a UTS namespace per slurmd). slurmctld and
# munged run in the root namespace, which plays controller and login node. The namespaces share
# the machine's filesystem, so it is the "shared filesystem" jobs see. No default route: traffic
# never leaves the machine. Needs root. With --no-slurm only the hosts are made (no munged,
# slurmctld or slurmd): for a Ray cluster started by hand on them with `exec`.
#
# Two clusters can run side by side (tests do) with other GANTUNE_CLUSTER_DIR, _PREFIX, _SUBNET
# and SLURMCTLD_PORT values. Every piece of state is under $GANTUNE_CLUSTER_DIR (default
# /run/gantune-local-cluster):
# slurm.conf, pid files, logs, spool, and a list of the netns/links made, so `stop` undoes
# exactly what `start` did. Processes are stopped by the PIDs in pid files, never by name.
# Commands need SLURM_CONF=$GANTUNE_CLUSTER_DIR/slurm.conf (`status` prints the line).
set -euo pipefail

STATE=${GANTUNE_CLUSTER_DIR:-/run/gantune-local-cluster}
PREFIX=${GANTUNE_CLUSTER_PREFIX:-gt}          # netns gt-node1, bridge gtbr0, veths gtv1
CTLD_PORT=${GANTUNE_SLURMCTLD_PORT:-6817}     # slurmd keeps 6818: each host has its own stack
SUBNET=${GANTUNE_CLUSTER_SUBNET:-10.200.0}     # hosts .1...N, the root namespace .254
BRIDGE=${PREFIX}br0
NODES=2
CPUS=2
WITH_SLURM=1

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '4,8p' "$0" | sed 's/^# *//' >&2
    exit 2
}

need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, slurmd)"; }

# Debian's packages, installed only where missing (CI runs as root on a bare image).
ensure_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v srun >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nsenter >/dev/null || missing+=(util-linux)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (slurm-wlm, munge) with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge iproute2 util-linux >&2
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# SIGKILL every process in network namespace $1 and wait until none is left: what runs on a
# host, whichever way it got there (slurmd, srun's steps, `exec`).
kill_netns() {
    local ns=$1 pids
    for _ in $(seq 100); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -z $pids ]] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
    log "warning: processes left in $ns: $(ip netns pids "$ns" | tr '\n' ' ')"
}

# A host of this cluster: "nodeI" -> I, or die.
host_index() {
    local node=$1
    [[ -f $STATE/made ]] || die "no cluster in $STATE (start one first)"
    [[ $node =~ ^node([1-9][0-9]?)$ ]] || die "expected a host name node1..node$(cat "$STATE/nodes"), got $node"
    local i=${BASH_REMATCH[1]}
    [[ $i -le $(cat "$STATE/nodes") ]] || die "no host $node: the cluster has node1..node$(cat "$STATE/nodes")"
    echo "$i"
}

# Kill the process in pid file $1 and wait for it to go (SIGKILL after 10 s).
stop_pid() {
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

write_conf() {
    local ctl_host last
    ctl_host=$(hostname)
    last=$NODES
    cat >"$STATE/slurm.conf" <<EOF
# Written by slurm/local_cluster.sh; removed by its stop.
ClusterName=gantune-local
SlurmctldHost=${ctl_host}(${SUBNET}.254)
SlurmctldPort=${CTLD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${STATE}/munge/munge.socket
CredType=cred/munge
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/spool/%n
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd-%n.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd-%n.log
# No cgroups inside the namespaces: track processes by /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=DEFAULT CPUs=${CPUS} RealMemory=2000 State=UNKNOWN
EOF
    for i in $(seq "$NODES"); do
        echo "NodeName=node$i NodeAddr=${SUBNET}.$i" >>"$STATE/slurm.conf"
    done
    echo "PartitionName=debug Nodes=node[1-$last] Default=YES MaxTime=INFINITE State=UP" >>"$STATE/slurm.conf"
}

write_hosts() {
    { cat /etc/hosts; echo "# slurm/local_cluster.sh hosts"; echo "${SUBNET}.254 $(hostname)"
      for i in $(seq "$NODES"); do echo "${SUBNET}.$i node$i"; done; } >"$STATE/hosts"
}

# Records one undo step ("netns NAME" / "link NAME") before the thing exists, so a failed
# start still cleans up fully.
record() { echo "$*" >>"$STATE/made"; }

make_network() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        record link "$BRIDGE"
        ip link add "$BRIDGE" type bridge
        ip addr add "${SUBNET}.254/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    for i in $(seq "$NODES"); do
        local ns=${PREFIX}-node$i veth=${PREFIX}v$i
        record netns "$ns"
        record link "$veth"
        ip netns add "$ns"
        ip link add "$veth" type veth peer name "${veth}p"
        ip link set "${veth}p" netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" link set "${veth}p" name eth0
        ip -n "$ns" addr add "${SUBNET}.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

start_munge() {
    mkdir -p "$STATE/munge"
    chmod 755 "$STATE/munge"
    if [[ ! -f /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
    fi
    # Our own munged on our own socket: another munged on the machine is left alone.
    munged --force --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
}

wait_nodes_idle() {
    local n
    for _ in $(seq 120); do
        n=$(SLURM_CONF=$STATE/slurm.conf sinfo -h -N -p debug -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
        [[ $n -ge $NODES ]] && return 0
        sleep 0.5
    done
    SLURM_CONF=$STATE/slurm.conf sinfo -N >&2 || true
    die "only $n of $NODES nodes came up idle in 60 s; see $STATE/log"
}

cmd_start() {
    need_root
    if pid_alive "$STATE/slurmctld.pid" || [[ -f $STATE/hosts-only ]]; then
        log "already started ($STATE); stop it first to change --nodes"
        cmd_status
        return 0
    fi
    [[ -e $STATE/made ]] && { log "cleaning up a half-started cluster"; cmd_stop; }
    if [[ $WITH_SLURM -eq 1 ]]; then
        ensure_packages
    else
        for tool in ip nsenter unshare; do command -v $tool >/dev/null || die "$tool missing (iproute2, util-linux)"; done
    fi
    [[ -e /run/netns/${PREFIX}-node1 ]] && die "netns ${PREFIX}-node1 exists but is not ours ($STATE/made missing)"
    mkdir -p "$STATE"/{ctld,spool,log}
    : >"$STATE/made"
    echo "$NODES" >"$STATE/nodes"
    # A failed start undoes itself.
    trap 'log "start failed; undoing"; cmd_stop' ERR
    write_hosts
    make_network
    if [[ $WITH_SLURM -eq 0 ]]; then
        touch "$STATE/hosts-only"
        trap - ERR
        log "started $NODES hosts node1..node$NODES (${SUBNET}.1..${SUBNET}.$NODES), no SLURM"
        return 0
    fi
    write_conf
    start_munge
    SLURM_CONF=$STATE/slurm.conf slurmctld -f "$STATE/slurm.conf" -i
    for i in $(seq "$NODES"); do
        mkdir -p "$STATE/spool/node$i"
        # nsenter, not `ip netns exec`: that remounts /sys, and slurmd then finds no cgroup fs.
        # slurmd daemonizes and keeps its UTS namespace (hostname node$i) for its jobs.
        # A private mount namespace only to see $STATE/hosts as /etc/hosts: hostnames resolve
        # to the hosts' own addresses as on a real cluster (Gloo and Ray bind to what the
        # hostname resolves to, else loopback), and the machine's /etc/hosts stays untouched.
        nsenter --net="/run/netns/${PREFIX}-node$i" unshare --uts --mount --propagation slave sh -c \
            "mount --bind '$STATE/hosts' /etc/hosts && hostname node$i &&
             SLURM_CONF='$STATE/slurm.conf' exec slurmd -f '$STATE/slurm.conf' -N node$i"
    done
    wait_nodes_idle
    trap - ERR
    log "started $NODES hosts node1..node$NODES (${SUBNET}.1..${SUBNET}.$NODES), partition debug"
    echo "export SLURM_CONF=$STATE/slurm.conf"
}

cmd_stop() {
    [[ -d $STATE ]] || { log "nothing runs ($STATE absent)"; return 0; }
    need_root
    # Jobs first, so their processes (Ray heads included) end through slurmd.
    if pid_alive "$STATE/slurmctld.pid"; then
        SLURM_CONF=$STATE/slurm.conf scancel --quiet --partition=debug 2>/dev/null || true
    fi
    local f
    for f in "$STATE"/slurmd-*.pid; do [[ -e $f ]] && stop_pid "$f"; done
    stop_pid "$STATE/slurmctld.pid"
    stop_pid "$STATE/munged.pid"
    if [[ -f $STATE/made ]]; then
        local kind name
        # Undo in reverse order: veths and namespaces before the bridge.
        while read -r kind name; do
            case $kind in
                netns) kill_netns "$name"; ip netns del "$name" 2>/dev/null || true ;;
                link) ip link del "$name" 2>/dev/null || true ;;
            esac
        done < <(tac "$STATE/made")
    fi
    rm -rf "$STATE"
    log "stopped"
}

cmd_status() {
    if [[ ! -d $STATE ]]; then
        echo "not started ($STATE absent)"
        return 0
    fi
    local f name
    for f in "$STATE/munged.pid" "$STATE/slurmctld.pid" "$STATE"/slurmd-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        if pid_alive "$f"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: not running"; fi
    done
    local i
    for i in $(seq "$(cat "$STATE/nodes" 2>/dev/null || echo 0)"); do
        if [[ -f $STATE/stopped-node$i ]]; then echo "node$i: stopped (stop-host)"; else echo "node$i: up (${SUBNET}.$i)"; fi
    done
    [[ -f $STATE/hosts-only ]] && return 0
    if pid_alive "$STATE/slurmctld.pid"; then
        SLURM_CONF=$STATE/slurm.conf sinfo -N -o '%N %T %c %O' 2>/dev/null || true
    fi
    echo "export SLURM_CONF=$STATE/slurm.conf"
}

# Runs CMD on host NODE as the host's own programs run: in its network namespace (its address),
# with its hostname, and with the cluster's hosts file as /etc/hosts (names resolve to the hosts'
# addresses). The environment passes through. Replaces this process (its exit status is CMD's).
cmd_exec() {
    need_root
    [[ $# -ge 2 ]] || usage
    local node=$1 i
    i=$(host_index "$node")
    shift
    [[ -f $STATE/stopped-node$i ]] && die "host $node is stopped"
    exec nsenter --net="/run/netns/${PREFIX}-node$i" unshare --uts --mount --propagation slave \
        sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"' sh "$STATE/hosts" "$node" "$@"
}

# The host fails as a machine that loses power: its link goes down first (its peers hear
# nothing more, not even a connection reset), then every process on it is SIGKILLed. It stays
# down until `stop`.
cmd_stop_host() {
    need_root
    [[ $# -eq 1 ]] || usage
    local i
    i=$(host_index "$1")
    ip link set "${PREFIX}v$i" down
    kill_netns "${PREFIX}-node$i"
    touch "$STATE/stopped-node$i"
    log "stopped host $1 (${SUBNET}.$i): link down, its processes killed"
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    case $cmd in
        exec) cmd_exec "$@" ;;
        stop-host) cmd_stop_host "$@"; return 0 ;;
    esac
    while [[ $# -gt 0 ]]; do
        case $1 in
            --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
            --cpus) CPUS=${2:?--cpus needs a number}; shift 2 ;;
            --no-slurm) WITH_SLURM=0; shift ;;
            *) log "unknown option $1"; usage ;;
        esac
    done
    [[ $NODES =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1..99, got $NODES"
    [[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive integer, got $CPUS"
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
