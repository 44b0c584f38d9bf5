#!/usr/bin/env bash
# slurm-cluster.sh: a throwaway Slurm cluster on this one machine, for the harness's
# Slurm backend tests and for trying that backend without a real cluster.
#
# Everything (munge key and socket, slurm.conf, gres.conf, fake GPU devices, state,
# spool, pid files, logs) lives under one scratch directory, so several clusters can
# coexist and nothing in /etc is touched. Daemons run as root, started by hand (no
# systemd needed, which containers usually lack).
#
# Needs: root, Slurm >= 22.05 (Debian 12: apt-get install slurm-wlm munge).

set -euo pipefail

PROG=$(basename "$0")
# Seconds to wait for munged / the nodes to come up before giving up.
START_TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}
# Seconds to wait for daemons to exit on stop before SIGKILL.
STOP_TIMEOUT=${SLURM_CLUSTER_STOP_TIMEOUT:-15}

usage() {
    cat <<EOF
Usage:
  $PROG start DIR [--gpus N] [--nodes M] [--cpus C]
      start a cluster whose files all live in DIR
  $PROG stop DIR [--clean]
      cancel its jobs, stop its daemons, keep DIR for its logs (--clean: remove DIR)
  $PROG status DIR
      its daemons, sinfo and squeue (exit 1 when it is not running)
  $PROG --help

start creates DIR if needed, writes a munge key, slurm.conf and gres.conf there, makes
N fake GPUs per node (character devices DIR/dev/gpuI; Slurm hands them out through
CUDA_VISIBLE_DEVICES), starts munged, slurmctld and M slurmd (nodes node1..nodeM, all on
this host, each claiming every core and N GPUs), waits until every node is idle, then
prints the line clients need:

  export SLURM_CONF=DIR/slurm.conf      (also in DIR/env.sh: source DIR/env.sh)

Defaults: --gpus 2, --nodes 1, --cpus max(cores, N): every node claims C CPUs (real or
not), so N one-GPU jobs of one task each can run at once even on a small machine. One
partition, "debug" (default, no time limit).
Must run as root. Environment: SLURM_CLUSTER_TIMEOUT (start wait, default 60 s),
SLURM_CLUSTER_STOP_TIMEOUT (default 15 s). Logs: DIR/log/. Exit 0 on success, 1 on
failure, 2 on bad usage.
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }

# A start that fails half-way stops whatever it started (logs stay for reading).
start_failed() {
    local dir=$1; shift
    echo "$PROG: error: $*" >&2
    echo "$PROG: stopping what was started; logs stay in $dir/log" >&2
    ( cmd_stop "$dir" ) >&2 || true
    exit 1
}
usage_error() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }

# Absolute path without requiring it to exist (realpath -m), so the conf files and the
# pid-file/command-line matching never depend on the caller's working directory.
abspath() { realpath -m -- "$1"; }

# Is the process alive? A zombie is not: orphans may be reaped late (or never, by a
# container's init), and waiting for one would only run into the timeout.
pid_alive() {
    local pid=$1 stat
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat 2>/dev/null "/proc/$pid/stat") || return 0
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# All descendants of PID (children first is not needed: they are all signalled at once).
descendants() {
    local root=$1 p stat ppid changed=1
    local -A tree=([$root]=1)
    local -a all=()
    for p in /proc/[0-9]*; do all+=("${p#/proc/}"); done
    while ((changed)); do
        changed=0
        for p in "${all[@]}"; do
            [[ -n ${tree[$p]:-} ]] && continue
            stat=$(cat 2>/dev/null "/proc/$p/stat") || continue
            stat=${stat##*) }
            ppid=${stat#* }; ppid=${ppid%% *}
            if [[ -n ${tree[$ppid]:-} ]]; then
                tree[$p]=1
                changed=1
                echo "$p"
            fi
        done
    done
}

read_pid() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# Pids of our daemons: munged, slurmctld and slurmd processes whose command line names
# this DIR (we always start them with DIR paths on the command line), plus slurmstepd
# processes holding a file under DIR open (their slurmd's log; they overwrite their
# command line and environment, so nothing else names the cluster). Job tasks are
# never matched. slurmctld's helper ": slurmscriptd" exits with slurmctld.
# The program (argv[0]) must be the daemon itself: "tail -f DIR/log/slurmd-node1.log"
# in someone's terminal mentions both too.
cluster_pids() {
    local dir=$1 p cmd
    local -a argv
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" ]] && continue
        mapfile -d '' -t argv 2>/dev/null <"/proc/$p/cmdline" || continue
        ((${#argv[@]})) || continue
        cmd=" ${argv[*]:1} "
        case ${argv[0]##*/} in
            munged|slurmctld|slurmd)
                if [[ $cmd == *" $dir/"* || $cmd == *"=$dir/"* ]]; then echo "$p"; fi ;;
            slurmstepd*)
                local fd
                for fd in "/proc/$p"/fd/*; do
                    if [[ $(readlink "$fd" 2>/dev/null) == "$dir/"* ]]; then
                        echo "$p"
                        break
                    fi
                done ;;
        esac
    done
}

# A TCP port nobody listens on, starting the scan at a value derived from DIR so two
# clusters (or two test runs) rarely even probe the same ports.
port_in_use() {
    local port=$1
    if command -v ss >/dev/null; then
        ss -Htanl "sport = :$port" 2>/dev/null | grep -q . && return 0
        return 1
    fi
    # No ss: a successful connect means someone listens.
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Print COUNT free ports, all distinct, scanning upwards from a DIR-derived base that
# lies below the kernel's ephemeral range: a port inside it can be taken between our
# check and the bind by any outgoing connection (seen: the 2nd slurmd of a 2-node
# cluster failing with "Address already in use" because the 1st one's connection to
# slurmctld got that port as its source port).
pick_ports() {
    local dir=$1 count=$2 base port found=0 eph_low=32768 span
    if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
        read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range
    fi
    span=$(( eph_low - 10000 - 2000 ))
    (( span > 0 )) || span=1000
    base=$(( 10000 + $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % span ))
    for (( port = base; port < base + 2000 && found < count; port++ )); do
        if ! port_in_use "$port"; then
            echo "$port"
            found=$((found + 1))
        fi
    done
    (( found == count )) || die "no $count free TCP ports near $base"
}

# Last lines of each daemon's log; the captured stdout/stderr (*.out) instead when
# the daemon died before opening its log file.
log_tails() {
    local dir=$1 f
    for f in "$dir"/log/*.out; do
        [[ -f $f ]] || continue
        if [[ -s ${f%.out}.log ]]; then f=${f%.out}.log; fi
        [[ -s $f ]] || continue
        echo "---- tail of $f" >&2
        tail -n 15 "$f" >&2
    done
}

# Start CMD... fully detached (own session, no inherited stdio) so that the daemon
# survives the calling shell and never holds a pipe of whoever called us open
# (a test runner capturing our output would otherwise wait forever).
# Its working directory is DIR, so it never pins the caller's (a test's temporary
# directory, say). Without job control the background child is no process-group
# leader, so setsid execs in place and $! is the daemon's own pid.
spawn() {
    local dir=$1 out=$2; shift 2
    (cd "$dir" && exec setsid "$@" </dev/null >>"$out" 2>&1) &
    echo $!
}

cmd_start() {
    local dir="" gpus=2 nodes=1 cpus=""
    while (($#)); do
        case $1 in
            --gpus) [[ $# -ge 2 ]] || usage_error "--gpus needs a value"; gpus=$2; shift 2 ;;
            --gpus=*) gpus=${1#*=}; shift ;;
            --nodes) [[ $# -ge 2 ]] || usage_error "--nodes needs a value"; nodes=$2; shift 2 ;;
            --nodes=*) nodes=${1#*=}; shift ;;
            --cpus) [[ $# -ge 2 ]] || usage_error "--cpus needs a value"; cpus=$2; shift 2 ;;
            --cpus=*) cpus=${1#*=}; shift ;;
            -h|--help) usage; exit 0 ;;
            -*) usage_error "start: unknown option $1" ;;
            *) [[ -z $dir ]] || usage_error "start: one DIR only"; dir=$1; shift ;;
        esac
    done
    [[ -n $dir ]] || usage_error "start: DIR is required"
    [[ $gpus =~ ^[0-9]+$ ]] || usage_error "--gpus must be a number >= 0"
    [[ $nodes =~ ^[0-9]+$ && $nodes -ge 1 ]] || usage_error "--nodes must be a number >= 1"
    [[ -z $cpus || ($cpus =~ ^[0-9]+$ && $cpus -ge 1) ]] || usage_error "--cpus must be a number >= 1"
    [[ $(id -u) == 0 ]] || die "must run as root (munged, slurmctld and slurmd run as root here)"
    local bin
    for bin in munged munge slurmctld slurmd sinfo; do
        command -v "$bin" >/dev/null \
            || die "$bin not found (Debian/Ubuntu: apt-get install slurm-wlm munge)"
    done

    dir=$(abspath "$dir")
    # Slurm config files split on whitespace and '#'; a DIR with those would break them.
    [[ $dir =~ ^[A-Za-z0-9_./+-]+$ ]] || die "DIR must not contain spaces or special characters: $dir"

    if [[ -n $(cluster_pids "$dir") ]]; then
        die "a cluster is already running in $dir (pids: $(cluster_pids "$dir" | xargs));" \
            "use: $PROG stop $dir"
    fi

    local t0=$SECONDS
    local host ncpu
    host=$(hostname -s)
    # Each job takes at least one CPU, so CPUs, not GPUs, would cap concurrency on a
    # 2-core box with 4 fake GPUs; claim at least one CPU per GPU (config_overrides
    # below lets slurmd report more CPUs than the hardware has).
    ncpu=${cpus:-$(nproc)}
    if [[ -z $cpus ]] && ((gpus > ncpu)); then ncpu=$gpus; fi

    # Fresh state, spool and pid dirs each start; logs are kept (appended) across runs.
    rm -rf "${dir:?}"/{state,spool,run,munge,dev}
    mkdir -p "$dir"/{state,spool,run,log,munge,dev}
    # slurmd does not create its own spool dir ("Domain socket directory ... No such file").
    local k
    for ((k = 1; k <= nodes; k++)); do mkdir -p "$dir/spool/slurmd-node$k"; done
    # munged refuses key/socket directories writable by others, and clients need to
    # traverse the socket's directory: 0755, never group/world-writable.
    chmod 0755 "$dir" "$dir/munge"

    # --- munge -------------------------------------------------------------------------
    local sock=$dir/munge/munge.socket.2
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
    # --force: munged otherwise refuses to run as root and complains about the
    # non-standard locations.
    spawn "$dir" "$dir/log/munged.out" munged --force \
        --socket="$sock" \
        --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" \
        --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" >/dev/null
    local deadline=$((SECONDS + START_TIMEOUT))
    until munge -n -S "$sock" 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log_tails "$dir"
            start_failed "$dir" "munged did not answer on $sock within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done

    # --- fake GPUs -----------------------------------------------------------------------
    # gres.conf File= must name character devices (Slurm stats them and reads the
    # major/minor); /dev/null's numbers (c 1 3) are harmless. All nodes share them: each
    # slurmd only indexes its own list, and CUDA_VISIBLE_DEVICES is that index.
    local i
    for ((i = 0; i < gpus; i++)); do
        mknod "$dir/dev/gpu$i" c 1 3
    done

    # --- ports -----------------------------------------------------------------------------
    local ports
    mapfile -t ports < <(pick_ports "$dir" $((nodes + 1)))
    ((${#ports[@]} == nodes + 1)) || start_failed "$dir" "could not find $((nodes + 1)) free TCP ports"
    local ctld_port=${ports[0]}

    # --- slurm.conf ------------------------------------------------------------------------
    local conf=$dir/slurm.conf
    {
        cat <<EOF
# Generated by $PROG start $dir --gpus $gpus --nodes $nodes
ClusterName=trainspec
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munged, not the system one at /run/munge.
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (containers rarely delegate them) and no systemd: plain /proc tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
# No slurmdbd.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# A node that was down comes back as soon as its slurmd registers.
ReturnToService=2
# slurmd reports the CPUs/memory written below rather than the hardware's, so several
# slurmd on one host may each claim every core.
SlurmdParameters=config_overrides
# Fast teardown: SIGKILL 2 s after SIGTERM, no grace beyond the time limit.
KillWait=2
OverTimeLimit=0
# Keep finished jobs visible to scontrol show job for 5 minutes.
MinJobAge=300
InactiveLimit=0
# FIFO scheduler, run on every submit and job end: jobs start at once when they fit.
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,sched_min_interval=0,batch_sched_delay=0
MessageTimeout=10
# No mail on this machine; silences "Configured MailProg is invalid".
MailProg=/bin/true
EOF
        # One slurmd per node, all on this host, told apart by their ports.
        local gres=""
        ((gpus == 0)) || gres=" Gres=gpu:$gpus"
        for ((k = 1; k <= nodes; k++)); do
            printf 'NodeName=node%d NodeHostname=%s NodeAddr=127.0.0.1 Port=%d CPUs=%d RealMemory=1024%s State=UNKNOWN\n' \
                "$k" "$host" "${ports[k]}" "$ncpu" "$gres"
        done
        echo "PartitionName=debug Nodes=node[1-$nodes] MaxTime=INFINITE State=UP Default=YES"
    } >"$conf"

    {
        echo "# Generated by $PROG: fake GPUs, no NVML autodetection."
        echo "AutoDetect=off"
        if ((gpus > 0)); then
            echo "NodeName=node[1-$nodes] Name=gpu File=$dir/dev/gpu[0-$((gpus - 1))]"
        fi
    } >"$dir/gres.conf"
    # Clients read the empty plugstack next to slurm.conf instead of /etc/slurm's.
    : >"$dir/plugstack.conf"
    echo "PlugStackConfig=$dir/plugstack.conf" >>"$conf"

    echo "export SLURM_CONF=$conf" >"$dir/env.sh"

    # --- daemons -----------------------------------------------------------------------------
    # -D keeps them in the foreground of their own session (spawn), so the pid we record
    # is the daemon itself; -c starts from empty state (job ids restart at 1).
    local pid
    pid=$(spawn "$dir" "$dir/log/slurmctld.out" slurmctld -D -c -f "$conf")
    echo "$pid" >"$dir/run/slurmctld.daemon.pid"
    for ((k = 1; k <= nodes; k++)); do
        pid=$(spawn "$dir" "$dir/log/slurmd-node$k.out" slurmd -D -f "$conf" -N "node$k")
        echo "$pid" >"$dir/run/slurmd-node$k.daemon.pid"
    done

    # --- wait for every node to be idle ------------------------------------------------------
    local states
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        states=$(SLURM_CONF=$conf sinfo -h -N -o '%N %T' 2>/dev/null || true)
        if [[ -n $states ]] && [[ $(grep -c ' idle$' <<<"$states") -eq $nodes ]]; then
            break
        fi
        for f in "$dir"/run/*.daemon.pid; do
            pid=$(read_pid "$f")
            if ! pid_alive "$pid"; then
                log_tails "$dir"
                start_failed "$dir" "$(basename "$f" .daemon.pid) exited during start-up (logs above)"
            fi
        done
        if ((SECONDS >= deadline)); then
            echo "sinfo says:" >&2
            echo "${states:-<no answer from slurmctld>}" >&2
            log_tails "$dir"
            start_failed "$dir" "nodes not idle within ${START_TIMEOUT}s (logs above)"
        fi
        sleep 0.3
    done

    echo "# Slurm cluster up in $((SECONDS - t0))s: $nodes node(s) x $gpus GPU(s), controller port $ctld_port, logs in $dir/log" >&2
    echo "export SLURM_CONF=$conf"
}

cmd_stop() {
    local dir="" clean=0
    while (($#)); do
        case $1 in
            --clean) clean=1; shift ;;
            -h|--help) usage; exit 0 ;;
            -*) usage_error "stop: unknown option $1" ;;
            *) [[ -z $dir ]] || usage_error "stop: one DIR only"; dir=$1; shift ;;
        esac
    done
    [[ -n $dir ]] || usage_error "stop: DIR is required"
    dir=$(abspath "$dir")
    local conf=$dir/slurm.conf t0=$SECONDS
    if [[ ! -d $dir ]]; then
        echo "# nothing to stop: no $dir" >&2
        return 0
    fi
    if [[ -z $(cluster_pids "$dir") ]]; then
        ((clean)) && rm -rf -- "$dir"
        echo "# nothing running in $dir$( ((clean)) && echo "; removed it")" >&2
        return 0
    fi

    # Cancel every job first, while slurmctld and slurmd are still there to deliver the
    # signals, so job steps end cleanly and waiting srun clients return.
    if [[ -f $conf ]] && pid_alive "$(read_pid "$dir/run/slurmctld.daemon.pid")"; then
        local jobs
        jobs=$(SLURM_CONF=$conf timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$conf timeout 10 scancel $jobs 2>/dev/null || true
            # Wait (bounded) until none is pending, running or completing; pointless
            # when a slurmd is dead (its jobs stay COMPLETING), the strays step below
            # handles those.
            local deadline=$((SECONDS + 10)) f
            for f in "$dir"/run/slurmd-*.daemon.pid; do
                pid_alive "$(read_pid "$f")" || deadline=0
            done
            while ((SECONDS < deadline)) &&
                [[ -n $(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2>/dev/null || true) ]]; do
                sleep 0.3
            done
        fi
    fi

    # The Slurm daemons together (each takes ~2 s to exit on SIGTERM; jobs are gone
    # already), then munged, which they use until the end.
    local f pid pids group
    for group in "slurm*.daemon.pid" "munged.pid"; do
        pids=""
        for f in "$dir"/run/$group; do
            [[ -f $f ]] || continue
            pid=$(read_pid "$f")
            if pid_alive "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
                pids+=" $pid"
            fi
            rm -f "$f"
        done
        for pid in $pids; do _wait_gone "$pid"; done
    done
    # Strays: anything else started for this DIR (a crashed start, lost pid files,
    # slurmstepd left behind by a slurmd that died), with the job tasks below them,
    # which would otherwise be orphaned and run on.
    pids=$(cluster_pids "$dir")
    if [[ -n $pids ]]; then
        local p
        for p in $pids; do pids+=" $(descendants "$p" | xargs)"; done
        # SIGKILL: an orphaned slurmstepd ignores SIGTERM.
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        for pid in $pids; do _wait_gone "$pid"; done
    fi
    pids=$(cluster_pids "$dir")
    [[ -z $pids ]] || die "still running after SIGKILL: $pids"

    if ((clean)); then
        rm -rf -- "$dir"
        echo "# stopped and removed $dir ($((SECONDS - t0))s)" >&2
    else
        echo "# stopped ($((SECONDS - t0))s); logs kept in $dir/log" >&2
    fi
}

# Wait for PID to exit; SIGKILL after STOP_TIMEOUT.
_wait_gone() {
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            return
        fi
        sleep 0.1
    done
}

cmd_status() {
    local dir=""
    while (($#)); do
        case $1 in
            -h|--help) usage; exit 0 ;;
            -*) usage_error "status: unknown option $1" ;;
            *) [[ -z $dir ]] || usage_error "status: one DIR only"; dir=$1; shift ;;
        esac
    done
    [[ -n $dir ]] || usage_error "status: DIR is required"
    dir=$(abspath "$dir")
    [[ -f $dir/slurm.conf ]] || die "no cluster in $dir (no slurm.conf)"
    if [[ -z $(cluster_pids "$dir") ]]; then
        echo "stopped (no daemons running for $dir)"
        return 1
    fi
    echo "daemons: $(cluster_pids "$dir" | xargs)"
    SLURM_CONF=$dir/slurm.conf sinfo -N -o '%N %T %C %G'
    echo
    SLURM_CONF=$dir/slurm.conf squeue
}

main() {
    (($#)) || { usage >&2; exit 2; }
    local sub=$1; shift
    case $sub in
        -h|--help|help) usage ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        *) usage_error "unknown command: $sub" ;;
    esac
}

main "$@"
