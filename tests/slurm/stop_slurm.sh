#!/usr/bin/env bash
# Stop the test cluster that start_slurm.sh brought up in STATE_DIR and remove its link in
# /etc/slurm (munged, shared with the system, is left running).
set -uo pipefail
D=$(realpath -m "${1:-/tmp/eraselab-slurm}")
for daemon in slurmd slurmctld; do
    pidfile="$D/$daemon.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
done
ETC=/etc/slurm/slurm.conf
[ -L "$ETC" ] && [ "$(readlink -f "$ETC")" = "$D/slurm.conf" ] && rm -f "$ETC"
exit 0
