#!/usr/bin/env bash
# GPU check, run from the repo root on a machine with one CUDA GPU and torch/transformers/peft installed:
# the real CLI pipeline (simulate -> train -> evaluate) with the paper preset's image + DNA encoders (ViT-B/16 and
# BarcodeBERT, random weights) in bf16 autocast, then the synthetic-input throughput benchmark (samples/s, MFU) and
# the released-CLIBD-model load time and embedding throughput on the GPU.
# Issue 16: the throughput run also times the same steps with batches built from real BIOSCAN JPEGs by training's
# DataLoader pipeline (--real-data, one worker per core but one; real_vs_synthetic in throughput.json), and
# data_pipeline.json gives batch-building samples/s per worker (file folder and CLIBD HDF5; nvJPEG if torchvision is
# installed). Real photos: $CLIBD_REAL_DATA, else ../shared/data/bioscan1m-raw-wells/images, else the simulated
# survey's JPEGs (decoding cost of 224 px images; named in the JSON). Device time: a few minutes on an H200.
# Writes its outputs under ${OUT:-gpu-check}.
set -euo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))'
start=$(date +%s)
python3 -m clibd_toolkit.cli simulate --out /tmp/gpu-survey --records 2000 --splits --image-size 224 --no-progress --overwrite
python3 -m clibd_toolkit.cli train --preset paper --no-pretrained --modalities image,dna --data /tmp/gpu-survey \
    --device cuda --precision bf16 --epochs 2 --batch-size 128 --lr 2e-4 --out /tmp/gpu-run --no-progress \
    | tee "$OUT/train.json"
python3 -m clibd_toolkit.cli evaluate --run /tmp/gpu-run --data /tmp/gpu-survey --out "$OUT/eval" --device cuda \
    --no-progress --no-novelty | tee "$OUT/evaluate.txt"
cp /tmp/gpu-run/history.csv "$OUT/history.csv"
echo "pipeline seconds: $(( $(date +%s) - start ))"
REAL="${CLIBD_REAL_DATA:-../shared/data/bioscan1m-raw-wells/images}"
[ -e "$REAL" ] || REAL=/tmp/gpu-survey/images
WORKERS=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
python3 benchmarks/train_throughput.py --preset paper --device cuda --batch-size 256 --steps 100 --warmup 10 \
    --precision bf16 --real-data "$REAL" --num-workers "$WORKERS" | tee "$OUT/throughput.json"
python3 benchmarks/data_pipeline.py --images "$REAL" --workers 0 4 "$WORKERS" --records 1024 --batch-size 64 --photos 200 \
    | tee "$OUT/data_pipeline.json"
python3 benchmarks/released_model.py --device cuda --image-batch 256 --dna-batch 512 --text-batch 1024 \
    | tee "$OUT/released_model.json"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"
