#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests (Debian 12, as root, no systemd).
#
#   bash scripts/slurm/cluster.sh up      # install if needed, start; prints 'export SLURM_CONF=...'
#   bash scripts/slurm/cluster.sh down    # stop only the daemons this script started
#   bash scripts/slurm/cluster.sh status
#
# Idempotent: 'up' on a running cluster changes nothing; every daemon's PID is recorded in
# $SLURM_TEST_DIR (default /tmp/bids_brainage_slurm) and 'down' kills those PIDs only, never
# by name. A munged that was already running is used and left running.
set -euo pipefail
STATE=${SLURM_TEST_DIR:-/tmp/bids_brainage_slurm}
CONF=$STATE/slurm.conf
say() { echo "slurm cluster: $*" >&2; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2> /dev/null; }

install() {
    local need=()
    command -v slurmctld > /dev/null || need+=(slurm-wlm)
    command -v munged > /dev/null || need+=(munge)
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
    fi
}

write_conf() {
    local host node memory
    host=$(hostname -s)
    node=$(slurmd -C | head -1)
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$node")
    node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 85 / 100))/" <<< "$node")
    mkdir -p "$STATE/ctld" "$STATE/spool"
    cat > "$CONF" << EOF
ClusterName=brainage
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
DependencyParameters=kill_invalid_depend
SchedulerParameters=sched_interval=1
MailProg=/bin/true
ReturnToService=2
$node State=UNKNOWN
PartitionName=main Nodes=$(sed 's/^NodeName=\([^ ]*\).*/\1/' <<< "$node") Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ -S /run/munge/munge.socket.2 ] && munge -n > /dev/null 2>&1; then
        return  # running already (ours or not): use it
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    [ -s /etc/munge/munge.key ] || mungekey --create
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --foreground > "$STATE/munged.out" 2>&1 &
    echo $! > "$STATE/munged.pid"
    for _ in $(seq 50); do munge -n > /dev/null 2>&1 && return; sleep 0.1; done
    say "munged did not start: $(cat "$STATE/munged.out")"
    exit 1
}

up() {
    mkdir -p "$STATE"
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid"; then
        say "already up"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    install
    write_conf
    start_munge
    export SLURM_CONF=$CONF
    alive "$STATE/slurmctld.pid" || {
        slurmctld -D -f "$CONF" > "$STATE/slurmctld.out" 2>&1 &
        echo $! > "$STATE/slurmctld.pid"
    }
    alive "$STATE/slurmd.pid" || {
        slurmd -D -f "$CONF" > "$STATE/slurmd.out" 2>&1 &
        echo $! > "$STATE/slurmd.pid"
    }
    for _ in $(seq 100); do
        if sinfo -h -o %T 2> /dev/null | grep -qx idle; then
            say "up: $(sinfo -h -o '%N %c CPUs %m MB %T')"
            echo "export SLURM_CONF=$CONF"
            return
        fi
        sleep 0.2
    done
    say "the node did not come up; see $STATE/slurmctld.log and $STATE/slurmd.log"
    down
    exit 1
}

down() {
    for daemon in slurmd slurmctld munged; do
        if alive "$STATE/$daemon.pid"; then
            kill "$(cat "$STATE/$daemon.pid")"
            for _ in $(seq 50); do alive "$STATE/$daemon.pid" || break; sleep 0.1; done
        fi
        rm -f "$STATE/$daemon.pid"
    done
    say "down"
}

status() {
    for daemon in munged slurmctld slurmd; do
        if alive "$STATE/$daemon.pid"; then echo "$daemon: running (pid $(cat "$STATE/$daemon.pid"))"
        else echo "$daemon: not started by this script"; fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
