#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (torch, transformers, peft; no vLLM, Ray,
# bitsandbytes, trl or model hub there):
#
#     bash benchmarks/gpu_check.sh   # writes $OUT/ (or ./gpu-check/): pytest.txt, gpu_step-<shape>.json
#
# 1. the tests marked gpu (KD steps on tiny Llama/Mistral/Falcon built from configs, the real
#    distill.train entry, KD and SFT with LoRA in bf16 at the default student's shape, killed and resumed; CPU/CUDA
#    parity of the top-k KL, held-out metrics on the GPU against the CPU, a Mistral-7B-shaped random
#    checkpoint pruned to 8 layers straight into bf16 on the GPU: prune-7b.json); 2. benchmarks/gpu_step.py
#    on Llama-2-7B's shape (KD top-k against CE, every weight and LoRA, time and peak memory
#    ratios from one run) and on the default student's shape. Under 10 minutes on one H100.
# Copy the JSON files to benchmarks/results/ (gpu_step-<date>-<shape>.json, prune-7b-<date>.json,
# gpu-train-<date>-<objective>.json from train-<objective>.json), then
#     python -m benchmarks.run --render-only   # BENCHMARKS.md with them
set -u
OUT=${OUT:-gpu-check}
export OUT  # tests write their figures there (prune-7b.json)
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi -L | tee "$OUT/device.txt"
$PY -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' | tee -a "$OUT/device.txt"
$PY -m pytest -p no:cacheprovider -m gpu tests/student/test_gpu.py -q -rs 2>&1 | tee "$OUT/pytest.txt"
status=${PIPESTATUS[0]}
for shape in llama2-7b qwen2.5-0.5b; do
  $PY -m benchmarks.gpu_step --shape $shape --out "$OUT/gpu_step-$shape.json" || status=1
done
exit $status
