#!/usr/bin/env bash
# The GPU measurement of issue 7, prepared for a lent machine (one GPU, no network): about
# 3-4 minutes on an H100. Results go to $OUT when it is set (as on the lent machine, whose $OUT
# is what comes back), else to benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh            # from the repository root (any folder works)
#
# Runs (Conformer-S at 224x224, random weights, batches 1 and 64):
#   1. fp32: every case (ours, the forward+backward limit, forward, rollout pass,
#      pytorch-grad-cam per branch, captum LayerGradCam)
#   2. bf16 autocast: ours, the limit, forward, rollout pass, captum (pytorch-grad-cam has no
#      bf16 and its fp32 numbers are those of run 1)
#   3. bf16 autocast + channels-last: ours, the limit, forward (batch 64)
#   4. only with WITH_COMPILE=1: bf16 + channels-last + regional torch.compile (batch 64)
#
# Rehearsal on a machine without a GPU (the tests do this, so that a lent machine's minutes are
# not spent on a broken script): DEVICE=cpu MODEL=conformer_micro_patch16 INPUT_SIZE=64
# BATCHES=1,2 REPEATS=1 WARMUP=0 bash benchmarks/gpu_check.sh runs every step on the CPU.
#
# Python: $PYTHON if set, else .venv/bin/python when its torch sees CUDA, else python3 (the
# lent machines' python3 holds torch and timm). The repository is put on PYTHONPATH instead of
# being installed. pytorch-grad-cam and captum are not on those machines: without them their
# cases are reported as skipped. To include them, download their wheels here first into .whl/
# (ignored by git) and carry .whl: they are installed into .gpu-site/ inside the repository:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       grad-cam==1.5.7 ttach==0.0.3 captum==0.9.0
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RESULTS="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$RESULTS"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-conformer_small_patch16}"
INPUT_SIZE="${INPUT_SIZE:-224}"
BATCHES="${BATCHES:-1,64}"
LARGE="${BATCHES##*,}"           # the largest batch: the last of BATCHES
WARMUP="${WARMUP:-3}"
REPEATS="${REPEATS:-10}"

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x .venv/bin/python ] && { [ "$DEVICE" = cpu ] || .venv/bin/python -c \
        'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$REPO/.gpu-site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$REPO/.gpu-site"
fi
export PYTHONUNBUFFERED=1

DEVICE="$DEVICE" "$PY" - <<'PY'
import importlib, os, torch
if os.environ["DEVICE"] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device visible to torch"
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
else:
    print("torch", torch.__version__, "on the CPU (rehearsal)")
for name in ("timm", "pytorch_grad_cam", "captum"):
    try:
        importlib.import_module(name)
        print(name, "ok")
    except ImportError as err:
        print(name, "missing:", err)
PY

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || true

BENCH=("$PY" -m benchmarks --device "$DEVICE" --model "$MODEL" --input-size "$INPUT_SIZE"
       --warmup "$WARMUP" --repeats "$REPEATS" --out "$RESULTS")
"${BENCH[@]}" --batch "$BATCHES" --dtype fp32 | tee "$RESULTS/gpu_fp32.txt"
"${BENCH[@]}" --batch "$BATCHES" --dtype bf16 \
    --cases forward,fwd_bwd,ours_full,rollout_pass,captum_lgc | tee "$RESULTS/gpu_bf16.txt"
"${BENCH[@]}" --batch "$LARGE" --dtype bf16 --channels-last \
    --cases forward,fwd_bwd,ours_full | tee "$RESULTS/gpu_bf16_channels_last.txt"
if [ "${WITH_COMPILE:-0}" = "1" ]; then
    "${BENCH[@]}" --batch "$LARGE" --dtype bf16 --channels-last --compile \
        --cases forward,fwd_bwd,ours_full | tee "$RESULTS/gpu_bf16_cl_compile.txt"
fi
echo "results in $RESULTS"
