#!/usr/bin/env bash
# The whole product on the embedded default, as a user runs it on a cluster:
#   local Ray head -> ray job submit label -> train (aligned; ABLATION=1 adds uniform) -> evaluate -> index
#   -> Ray Serve retriever -> a sample query -> stop (KEEP_SERVING=1 leaves Serve running).
# Usage: scripts/demo.sh [CONFIG] [WORKDIR]   (make demo calls it with the venv first on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/embedded.yaml}
WORKDIR=${2:-runs/embedded}
KEEP_SERVING=${KEEP_SERVING:-0}
ABLATION=${ABLATION:-0}  # 1: also train the uniform-sampling ablation (make study runs it over seeds)
DASH_PORT=${DASH_PORT:-8265}
# The head's GCS port and its job agent's HTTP port: another local Ray on the machine may hold 6379 / 52365
# (then the agent never registers and every submission fails with "No available agent").
RAY_PORT=${RAY_PORT:-6379}
AGENT_PORT=${AGENT_PORT:-52365}
SERVE_PORT=${SERVE_PORT:-8000}
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# Loopback-only demo cluster: token auth off (Ray 2.60 turns it on by default; see docs/operations.md).
export RAY_AUTH_MODE=disabled
export RAY_ADDRESS="http://127.0.0.1:${DASH_PORT}"
t_start=$(date +%s)
stamp() { echo; echo "=== [$(( $(date +%s) - t_start ))s] $*"; }

started_head=0
cleanup() {
  if [ "$KEEP_SERVING" != "1" ] && [ "$started_head" = "1" ]; then
    stamp "stopping the local Ray head"
    ray stop --force >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if ! ray job list >/dev/null 2>&1; then
  stamp "starting a local Ray head (2 CPUs, dashboard on 127.0.0.1:${DASH_PORT})"
  ray start --head --port="${RAY_PORT}" --dashboard-agent-listen-port="${AGENT_PORT}" --num-cpus=2 --dashboard-host=127.0.0.1 --dashboard-port="${DASH_PORT}" \
    --include-dashboard=true --disable-usage-stats >/dev/null
  started_head=1
fi

# The emoji sets (npm, vendor/emoji/node_modules) are git-ignored, so Ray does not upload them with the
# working dir; the world build (on the head node, in the label job) reads them where `make install` put them.
EMOJI_SETS="$(pwd)/vendor/emoji/node_modules"
submit() {
  ray job submit --working-dir . --runtime-env-json \
    "{\"excludes\": [\"runs/\", \".venv/\", \".git/\", \"vendor/emoji/node_modules/\"], \"env_vars\": {\"DISTILL_EMOJI_SETS\": \"${EMOJI_SETS}\"}}" \
    -- "$@"
}

# A fresh head's job agent registers a few seconds after `ray start` returns (longer on a busy machine); until
# then a submission fails with "No available agent". Wait for it with no-op jobs rather than fail the demo.
for attempt in $(seq 1 30); do
  if ray job submit --no-wait -- true >/dev/null 2>&1; then break; fi
  [ "$attempt" = 30 ] && { echo "the Ray job agent did not come up in 60 s" >&2; exit 1; }
  sleep 2
done

stamp "label: world build (if missing), caption-aligned base, round-0 groups -> teacher"
WD="paths.workdir=$(pwd)/${WORKDIR}"  # absolute: jobs run from Ray's copy of the working dir
submit python ray_jobs/label.py --config "$CONFIG" --set "$WD"
stamp "train: Ray Train (DDP over train.num_workers; one worker on the embedded 2 cores) with preference-aligned re-sampling"
submit python ray_jobs/train.py --config "$CONFIG" --set "$WD" --sampler aligned
if [ "$ABLATION" = "1" ]; then
  stamp "train: uniform-sampling ablation at equal teacher budget"
  submit python ray_jobs/train.py --config "$CONFIG" --set "$WD" --sampler uniform
fi
stamp "evaluate: teacher tournaments, MPR, baselines, report"
submit python ray_jobs/evaluate.py --config "$CONFIG" --set "$WD"
stamp "index: embed the catalog with the distilled student, build FAISS"
submit python ray_jobs/index.py --config "$CONFIG" --set "$WD"

stamp "serve: Ray Serve retriever on http://127.0.0.1:${SERVE_PORT}/"
python scripts/serve_demo.py --config "$CONFIG" --set "$WD" \
  --query "a gift for a mother who loves gardening" --port "${SERVE_PORT}" \
  $( [ "$KEEP_SERVING" = "1" ] && echo --keep )

stamp "done in $(( $(date +%s) - t_start ))s. Report: ${WORKDIR}/eval/report.md"
