#!/usr/bin/env bash
# Starts a real single-node Slurm (slurmctld + slurmd + munge) in DIR for the tests, with
# GPU_COUNT fake GPUs (character devices) as generic resources. Prints the SLURM_CONF path.
# Needs Debian's slurm-wlm and munge (.ci/run installs them) and root (mknod, SlurmUser=root).
set -euo pipefail
dir="$(cd "${1:?usage: start_slurm.sh DIR [GPU_COUNT]}" && pwd)"
gpus="${2:-4}"
host="$(hostname -s)"
cpus="$(nproc)"
mkdir -p "$dir"/{state,spool,log,run,munge,dev}

mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 || \
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$dir/munge/munge.key"
munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munged.seed" --force

files=""
for i in $(seq 0 $((gpus - 1))); do
  [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 195 "$i"
done
cat > "$dir/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]
CONF

cat > "$dir/slurm.conf" <<CONF
ClusterName=sweepertest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
ReturnToService=2
KillWait=10
NodeName=$host CPUs=$((cpus > 4 ? cpus : 4)) Gres=gpu:$gpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 60); do
  state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
  if [ "$state" = "idle" ]; then echo "$SLURM_CONF"; exit 0; fi
  sleep 0.5
done
echo "slurm did not become idle (state: ${state:-none}); see $dir/log" >&2
exit 1
