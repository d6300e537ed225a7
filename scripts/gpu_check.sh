#!/usr/bin/env bash
# Every GPU check on one CUDA device, on ImageNet-shaped synthetic data generated on the device (no dataset):
#   (a) throughput of empirical.run with every recording vs a bare channels_last + bf16 loop, same process
#   (b) a short `python -m empirical.run synthetic-imagenet` with every average and the bank
#   (c) `torchrun --nproc_per_node=1 -m empirical.run ...`, and the same model inside DistributedDataParallel
#   (d) peak GPU memory (torch.cuda.max_memory_allocated) of (a) and (b)
# then one compact summary, printed and written to OUT_DIR/summary.txt (details: OUT_DIR/<stage>.json, .log).
#
#   scripts/gpu_check.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else runs/gpu_check/<UTC stamp>
#
# Each stage runs under `timeout`; the limits (plus 10 s grace each) add up to 480 s, so the whole script ends
# within 8 minutes even if every stage hangs. Exit status 0 only if every stage passed its checks (the throughput
# target is reported as PASS/FAIL, not enforced). Environment: PYTHON (default .venv/bin/python if present, else python3); GPU_CHECK_SMOKE=1 runs every
# stage on the CPU at toy sizes (plumbing only, numbers meaningless; time limits x4, GPU_CHECK_LIMIT_SCALE).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-runs/gpu_check/$(date -u +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUT_DIR"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then   # CPU, toy sizes: seconds of compute per stage on an idle CPU
    SIZES=(--device cpu --arch resnet8 --image-size 32 --batch-size 8 --steps 2 --warmup 2)
    RUN_ARGS=(--device cpu --image-size 32 --arch resnet8 --batch-size 8 --no-channels-last --steps 4
              --max-train 64 --max-test 32 --train-eval-size 16 --decay-start 3 --ema-start 1 --swa-start 2
              --two-point-gaps 2 --n-point-gap 1 --eval-every 2 --bank-every 2 --bank-size 2 --bn-batches 2
              --probe-every 4 --probe-etas 3 --align-every 4 --align-batches 1 --curv-every 4 --curv-batches 1
              --curv-iters 2)
    # the torchrun stage cannot shrink the images (a separate process): 224 px, but a small net and batch
    DDP_ARGS=(--device cpu --arch resnet8 --batch-size 4 --no-channels-last --steps 2 --max-train 16
              --max-test 8 --train-eval-size 8 --decay-start 1 --ema-start 0 --swa-start 0 --two-point-gaps 1
              --n-points 2 --n-point-gap 1 --eval-every 2 --bank-every 2 --bank-size 2 --bn-batches 1 --probe-every 2
              --probe-etas 3 --align-every 2 --align-batches 1 --curv-every 2 --curv-batches 1 --curv-iters 1)
    LIGHT=(--light --max-test 16)
    LIMIT_SCALE=${GPU_CHECK_LIMIT_SCALE:-4}   # a loaded 2-core CPU is slower than the GPU sizes on a GPU
else                                        # one H100/H200: ResNet-50, 224 px, B = 256, bf16, channels_last
    SIZES=()
    RUN_ARGS=()
    # 30 steps with every recording firing at least once (cadences given: --steps alone may rescale them);
    # constant LR and averages from step 0, so that no branch-point checkpoint (~1 GB each) is written
    DDP_ARGS=(--steps 30 --schedule constant --decay-start 0 --ema-start 0 --swa-start 0 --two-point-gaps 5,10
              --n-point-gap 5 --eval-every 15 --bank-every 5 --probe-every 15 --align-every 15 --curv-every 30
              --curv-iters 2 --bn-batches 4 --max-test 1024 --train-eval-size 512)
    LIGHT=()
    LIMIT_SCALE=${GPU_CHECK_LIMIT_SCALE:-1}
fi

stage() {   # stage NAME LIMIT_S CMD...: run CMD under timeout, log to OUT_DIR/NAME.log, "rc seconds" to NAME.rc
    local name=$1 limit=$(( $2 * LIMIT_SCALE )) start rc
    shift 2
    start=$(date +%s)
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    rc=$?
    echo "$rc $(( $(date +%s) - start ))" >"$OUT_DIR/$name.rc"
    tail -n 8 "$OUT_DIR/$name.log" | sed 's/^/   /'
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "   $name: timed out after ${limit} s"
    return 0
}

stage throughput 180 "$PYTHON" scripts/gpu_check.py throughput --out "$OUT_DIR" ${SIZES[@]+"${SIZES[@]}"} ${LIGHT[@]+"${LIGHT[@]}"}
stage run 135 "$PYTHON" scripts/gpu_check.py run --out "$OUT_DIR" ${RUN_ARGS[@]+"${RUN_ARGS[@]}"}
stage ddp_run 70 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m empirical.run \
    synthetic-imagenet --out "$OUT_DIR/ddp_run" ${DDP_ARGS[@]+"${DDP_ARGS[@]}"}
"$PYTHON" scripts/gpu_check.py verify "$OUT_DIR/ddp_run" --out "$OUT_DIR" --stage ddp_run >>"$OUT_DIR/ddp_run.log" 2>&1
stage ddp 55 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 scripts/gpu_check.py ddp \
    --out "$OUT_DIR" ${SIZES[@]+"${SIZES[@]}"}
echo "== summary"
"$PYTHON" scripts/gpu_check.py summary "$OUT_DIR"
