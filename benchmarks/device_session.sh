#!/usr/bin/env bash
# Steps of a lent-GPU session, run on the device machine from the repository root (see
# benchmarks/device_bundle.py for the archive it unpacks; carry [".gpu"], plus ".gl" for pixel
# tasks). Everything that must come back is written under $OUT (at most 8 files), logs and
# run records packed into one archive. Measured in session 11 (H100): a TD-MPC2 5M seed on
# cartpole-swingup runs about 80 agent steps/s alone with CUDA graphs, so 50k steps take about
# 12 minutes; a warm machine keeps runs/ between calls, so two calls of 10 minutes continue one
# run (--checkpoint-every 2500 bounds what a stopped call loses).
#
#   bash benchmarks/device_session.sh check              # CUDA tests + tdmpc2_speed (cuda)
#   bash benchmarks/device_session.sh py SCRIPT ARGS     # any script, same environment
#   bash benchmarks/device_session.sh learn SECONDS ARGS # python -m benchmarks ARGS, stopped
#                                                        # after SECONDS, run records packed
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/site "$OUT"
[ -f /tmp/site/.unpacked ] || { tar -xJf .gpu/site.tar.xz -C /tmp/site && touch /tmp/site/.unpacked; }
export PYTHONPATH=/tmp/site:$PWD/src MUJOCO_GL=egl PYTHONUNBUFFERED=1
# EGL for pixel tasks: the loader libraries the device image lacks, carried as Debian packages
# in .gl/ (fetched here once, see the device README: apt-get download libegl1 libglvnd0 ...).
if compgen -G ".gl/*.deb" > /dev/null && [ ! -f /tmp/site/.gl-unpacked ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig && touch /tmp/site/.gl-unpacked
fi
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
step=$1; shift
case $step in
  py)
    python3 "$@" 2>&1 | tail -60 ;;
  check)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
    for tests in tests/agents/test_tdmpc2_cuda_graphs.py tests/agents/test_tdmpc2_agent.py; do
      python3 -m pytest -q -x -p no:cacheprovider "$tests" 2>&1 | tail -12
    done
    python3 -m benchmarks tdmpc2_speed --device cuda --presets "${PRESETS:-1,5}" --threads 1 \
      --rounds 3 --updates 20 --decisions 20 --modes graphs,eager 2>&1 | tail -40
    cp benchmarks/results/tdmpc2_speed_cuda.* "$OUT"/ ;;
  learn)
    seconds=$1; shift
    # State tasks render nothing; without the EGL libraries (see the device README), an
    # MUJOCO_GL=disable lets dm_control load without a renderer.
    [[ " $* " == *" --pixels "* ]] || export MUJOCO_GL=disable
    timeout "$seconds" python3 -m benchmarks "$@" > "$OUT/learn.log" 2>&1
    echo "exit $?"; tail -5 "$OUT/learn.log"
    tar -czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='checkpoint*' \
      --exclude='*.npz' runs/
    for log in runs/*/*/seed*.log; do echo "== $log"; tail -3 "$log"; done
    for f in runs/*/*/seed*/eval.jsonl; do echo "== $f"; cat "$f"; done ;;
esac
