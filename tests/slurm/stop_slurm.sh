#!/usr/bin/env bash
# Stops what start_slurm.sh started in DIR.
dir="${1:?usage: stop_slurm.sh DIR}"
for pidfile in "$dir/run/slurmd.pid" "$dir/run/slurmctld.pid" "$dir/munge/munged.pid"; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
exit 0
