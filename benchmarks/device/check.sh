#!/usr/bin/env bash
# The GPU checks of one device call, most important first, each with its own time limit; every log lands in
# $OUT (what comes back) and summary.txt says how each step ended. Made ready by prepare.sh (here); there:
#   run(command="bash benchmarks/device/check.sh", carry=[".device"], timeout_s=590)
# 1. tests/gpu: the CUDA paths against their CPU twins (segmentation, localization kernels, the driver)
# 2. the quality gate on the GPU (bench_quality.py: compat, the default, the default in fp32; ntta 4) on the
#    validation run carried
# 3. end to end: run_all.py default and compat on the GPU, alternating, wall times (the issue-11 ratio)
# 4. bench_peaks.py: peaks against watershed on 184x630x630, CPU and GPU
# A dry run on a machine without a GPU (steps 1 skip, 2-4 on the CPU):
#   DEVICE=cpu SKIP_WHEELS=1 PY=.venv/bin/python LIMIT_FACTOR=6 OUT=/tmp/device-out bash benchmarks/device/check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
PY="${PY:-python3}"
DEVICE="${DEVICE:-cuda}"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_WHEELS:-}" ]; then
  [ -d .device/whl ] || { echo "check: no .device/whl; run benchmarks/device/prepare.sh here first" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl \
    || { echo "check: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
summary="$OUT/summary.txt"
{
  date -u +"%Y-%m-%d %H:%M:%S UTC"; nvidia-smi -L 2>&1 || true; nproc
  "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  "$PY" -c "import cupy, cucim; print('cupy', cupy.__version__, 'cucim', cucim.__version__)" 2>&1 | tail -1
  "$PY" -c "import monai, copick, numba; print('monai', monai.__version__, 'copick', copick.__version__, 'numba', numba.__version__)" 2>&1 | tail -1
} > "$summary" 2>&1

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, one line in the summary
  local name=$1 limit=$(( $2 * ${LIMIT_FACTOR:-1} )); shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc $rc, $(( SECONDS - t0 )) s (limit $limit)" | tee -a "$summary"
  tail -4 "$OUT/$name.log"
}

step gpu_tests 150 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu

val="$(mktemp -d)"
"$PY" .device/validation/make_config.py "$val/overlay" "$val/config.json" > /dev/null
model=(.device/validation/model/model_config.yaml .device/validation/model/model_weights.pth)
step gate 120 "$PY" benchmarks/bench_quality.py "$val/config.json" --model-config "${model[0]}" \
  --model-weights "${model[1]}" --device "$DEVICE" --ntta 4 --repeat 2 --settings default \
  --settings precision=fp32 --json "$OUT/gate.json"

step e2e 130 "$PY" benchmarks/device/e2e.py --device "$DEVICE" --model-config "${model[0]}" \
  --model-weights "${model[1]}" --make-config .device/validation/make_config.py --rounds 2

step peaks 130 "$PY" benchmarks/bench_peaks.py --n-procs "$(nproc)"
rm -rf "$val"
cat "$summary"
