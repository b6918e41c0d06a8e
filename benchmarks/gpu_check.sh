#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (torch, transformers, peft; no vLLM, Ray,
# bitsandbytes, trl or model hub there):
#
#     bash benchmarks/gpu_check.sh        # writes $OUT/ (or ./gpu-check/) pytest.txt and gpu_step.json
#
# 1. the tests marked gpu (KD steps on tiny Llama/Mistral/Falcon built from configs, CPU/CUDA
#    parity of the top-k KL); 2. benchmarks/gpu_step.py (KD against SFT step time and memory on
#    the default student's architecture, ratios from one run).
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi -L | tee "$OUT/device.txt"
$PY -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' | tee -a "$OUT/device.txt"
$PY -m pytest -p no:cacheprovider -m gpu tests/student/test_gpu.py -q -rs 2>&1 | tee "$OUT/pytest.txt"
status=${PIPESTATUS[0]}
$PY -m benchmarks.gpu_step --out "$OUT/gpu_step.json" || status=1
exit $status
