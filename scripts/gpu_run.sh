#!/usr/bin/env bash
# Every GPU item of the project in one go, within the device's 10-minute limit per command: the correctness checks
# (scripts/gpu_check.py) and the GPU benchmark (python -m benchmarks.run --device cuda --size base). Each writes its
# JSON record as it goes (so a time limit keeps what was done) and its log, into OUT_DIR.
#
#   bash scripts/gpu_run.sh --prepare      # here, where espeak-ng exists: runs/gpu_inputs/speech_16k.npy (the mix)
#   bash scripts/gpu_run.sh [OUT_DIR]      # on the GPU machine (default: $OUT, else runs/gpu); carry runs/gpu_inputs
#   DEVICE=cpu SIZE=tiny bash scripts/gpu_run.sh runs/gpu-dry    # the dry run (tests/test_gpu_run.py)
#
# Time limits (s): CHECK_TIMEOUT (260) and BENCH_TIMEOUT (300) — together under the device's 10 minutes.
# The GPU machine has torch, transformers and numpy but no espeak-ng, datasets, torchcodec or accelerate: nothing
# here needs them. Without the prepared speech, clips are cut from generated chirps (the record says which); speed
# depends only on the clips' lengths.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-$(command -v python || command -v python3)}
speech=runs/gpu_inputs/speech_16k.npy

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$(dirname "$speech")"
    $python -c "import sys, numpy as np; from benchmarks.common import speech_source
np.save(sys.argv[1], speech_source())" "$speech" && echo "wrote $speech: carry runs/gpu_inputs to the GPU machine"
    exit $?
fi

out=${1:-${OUT:-runs/gpu}}
device=${DEVICE:-cuda}
size=${SIZE:-base}
mkdir -p "$out"
if [ ! -f "$speech" ]; then  # no espeak-ng speech prepared: 9 s of generated gliding harmonics instead
    speech=$out/chirps_16k.npy
    $python -c "import sys, numpy as np
t = np.arange(9 * 16000) / 16000
f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
phase = 2 * np.pi * np.cumsum(f0) / 16000
wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
np.save(sys.argv[1], (0.1 * wave).astype(np.float32))" "$speech"
fi
speech_args=(--speech "$speech")
$python -c "import sys, torch, transformers, numpy
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
print(sys.executable, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', gpu, 'transformers',
      transformers.__version__, 'numpy', numpy.__version__)" | tee "$out/environment.txt"

start=$SECONDS
timeout -k 10 "${CHECK_TIMEOUT:-260}" $python scripts/gpu_check.py --device "$device" --size "$size" \
    "${speech_args[@]}" --out "$out/gpu_check.json" > "$out/gpu_check.log" 2>&1
check=$?
echo "gpu_check: exit $check after $((SECONDS - start)) s (0 = every check passed); $out/gpu_check.json"
tail -n 3 "$out/gpu_check.log"

start=$SECONDS
timeout -k 10 "${BENCH_TIMEOUT:-300}" $python -m benchmarks.run --device "$device" --size "$size" \
    --only utilisation versus_ast attention "${speech_args[@]}" \
    --out "$out/gpu_benchmark.json" > "$out/gpu_benchmark.log" 2>&1
bench=$?
echo "benchmark: exit $bench after $((SECONDS - start)) s; $out/gpu_benchmark.json"
grep '^|' "$out/gpu_benchmark.log"
tail -n 3 "$out/gpu_benchmark.log" | grep -v '^|'
exit $(( check != 0 || bench != 0 ))
