#!/usr/bin/env bash
# One short GPU check for a machine with CUDA (issue #7's "verify it whenever one is available").
# Runs the CUDA tests (they skip without a GPU), then the encode-vs-forward-only bench on the
# GPU, and prints torch / cuML availability. Figures go to stdout; paste them into bench/README.md.
#
#   bash bench/gpu_check.sh            # after `make .venv/.installed-test` with a CUDA torch
#   N=20000 bash bench/gpu_check.sh    # more TIFFs for steadier items/s
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-5000}

$PY - <<'EOF'
import importlib.util
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "bf16", torch.cuda.is_bf16_supported() if torch.cuda.is_available() else "-")
print("cuml installed:", importlib.util.find_spec("cuml") is not None)
EOF
$PY -m pytest -q -p no:cacheprovider tests/test_gpu_path.py -rs
$PY bench/bench_encode.py --n "$N" --wide-n "$N" --batch-size 256
