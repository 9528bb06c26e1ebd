#!/usr/bin/env bash
# The engine's GPU checks in one go, for a session that has a CUDA machine (bounded: <= 10 min).
#
#   bench/gpu_check.sh              gpu-marked tests (the engine's, and `hushcc node serve
#                                   --device cuda` answering one request), then bench/engine.py
#                                   --models large --device cuda --dtype bfloat16 at 32 and at
#                                   256 requests (each table has an "overlap off" row)
#   bench/gpu_check.sh attention    bench/attention.py on CUDA: flex vs padded vs grouped
#
# Each stage has its own timeout, so one stuck stage cannot eat the others' time; the script
# goes on after a failed stage and exits non-zero at the end if any failed. Run it from the
# repository root with the project's Python (PYTHON=..., default: python).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
status=0

stage() {  # stage SECONDS LABEL COMMAND...
    local limit="$1" label="$2"
    shift 2
    echo "=== $label (limit ${limit}s) ==="
    local t0=$SECONDS
    timeout "$limit" "$@" || { echo "=== $label FAILED (rc $?) ==="; status=1; }
    echo "=== $label took $((SECONDS - t0))s ==="
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

if [ "${1:-}" = "attention" ]; then
    stage 500 "bench/attention.py (tiny, 32 requests)" \
        "$PY" bench/attention.py --models tiny --device cuda --dtype bfloat16 --runs 2
    exit $status
fi

stage 170 "gpu-marked tests (engine, and a node serving with --device cuda)" \
    "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/node/engine tests/node/test_node_device.py
stage 180 "bench/engine.py large, 32 requests" \
    "$PY" bench/engine.py --models large --device cuda --dtype bfloat16 --quick \
        --hf-modes static32 --erasure-pairs 1
stage 230 "bench/engine.py large, 256 requests" \
    "$PY" bench/engine.py --models large --device cuda --dtype bfloat16 --quick \
        --hf-modes static32 --erasure-pairs 1 --n 256 --budget 2048 --no-spec --no-previous
exit $status
