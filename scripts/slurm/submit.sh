#!/usr/bin/env bash
# Submit a bids_brainage run to SLURM: one array task per participant, then the group level.
#
#   scripts/slurm/submit.sh BIDS_DIR OUTPUT_DIR [options for both levels]
#
# Prints the array job id and the group job id, one per line. The participant list comes from
# the app itself with the same options (--participant-label, --bids-filter-file, ...).
# Environment:
#   BRAINAGE_CMD        the command run in every job (default: bids_brainage), e.g.
#                       "singularity run --cleanenv -B /data bids_brainage.sif"
#   PARTICIPANT_SBATCH  extra sbatch options of each participant task (e.g. "--mem=8G")
#   GROUP_SBATCH        extra sbatch options of the group job
#   WORK_ROOT           the tasks' work folders (default: /tmp/bids_brainage_work on the node)
# Logs: OUTPUT_DIR/logs/slurm-<array>_<task>.out and slurm-<group>-group.out. The group job
# depends on the array with afterany, so one broken scan never cancels it; it lists the
# failed tasks, and the group report shows the participants without results.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
bids=$(realpath "$1")
out=$(realpath -m "$2")
shift 2
cmd=${BRAINAGE_CMD:-bids_brainage}
mkdir -p "$out/logs"
list=$(mktemp "$out/logs/slurm-participants.XXXXXX")
# shellcheck disable=SC2086
if ! $cmd "$bids" "$out" participant "$@" --list-participants > "$list"; then
    rm -f "$list"
    exit 1
fi
n=$(wc -l < "$list")
work=${WORK_ROOT:-/tmp/bids_brainage_work}/$(date +%Y%m%d-%H%M%S)-$$
# shellcheck disable=SC2086
array=$(sbatch --parsable --array=0-$((n - 1)) --output="$out/logs/slurm-%A_%a.out" \
    ${PARTICIPANT_SBATCH:-} "$here/participant.sbatch" "$bids" "$out" "$list" "$work" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
group=$(sbatch --parsable --dependency="afterany:$array" --output="$out/logs/slurm-%j-group.out" \
    ${GROUP_SBATCH:-} "$here/group.sbatch" "$bids" "$out" "$list" "$array" "$work" "$@")
echo "${array}"
echo "${group%%;*}"
echo "submitted $n participant task(s) as array job $array and the group level as job" \
    "${group%%;*}" >&2
