#!/usr/bin/env bash
# Make what one device call carries, in .device/ (git-ignored): the wheels the GPU machine's image lacks
# (wheels.txt) and one validation run (the three do not fit the 64 MiB a call may carry). Run here, not there:
#   bash benchmarks/device/prepare.sh [VALIDATION_DIR]        (default ../shared/validation)
# then, on a session lent a GPU, one call:
#   run(command="bash benchmarks/device/check.sh", carry=[".device"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/../.."
val="${1:-../shared/validation}"
run="${VALIDATION_RUN:-TS_val_000}"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
[ -d "$val/static/ExperimentRuns/$run" ] || { echo "prepare: no run $run in $val/static/ExperimentRuns" >&2; exit 2; }
rm -rf .device
mkdir -p .device/whl .device/validation/static/ExperimentRuns
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .device/whl -r benchmarks/device/wheels.txt
cp -r "$val/model" "$val/config.template.json" "$val/make_config.py" .device/validation/
cp -r "$val/static/ExperimentRuns/$run" .device/validation/static/ExperimentRuns/
# what travels: the tracked and untracked-not-ignored files, plus .device
tree_kib=$(git ls-files -co --exclude-standard -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
device_kib=$(du -sk .device | cut -f1)
total_mib=$(( (tree_kib + device_kib) / 1024 ))
echo "prepare: .device $(( device_kib / 1024 )) MiB ($(ls .device/whl | wc -l) wheels, run $run), working tree $(( tree_kib / 1024 )) MiB: ${total_mib} MiB of 64"
if [ "$total_mib" -ge 63 ]; then
  echo "prepare: more than a device call may carry (64 MiB); carry fewer wheels or no validation run" >&2
  exit 1
fi
