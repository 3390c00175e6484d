#!/usr/bin/env bash
# The GPU set of issue 35, at most 8 minutes: celeba64 (the recipe's accelerator config) on a folder of face images for
# TRAIN_SECONDS, then FID-2k of its last checkpoint against that folder, the peak GPU memory while it trained, and the
# benchmark against PyTorch at 64x64, batch 64 and 512. Usage, from the repository root on a machine with a GPU, JAX
# with CUDA, PyTorch with CUDA and this project's requirements:
#
#   bash benchmarks/gpu_recipe.sh OUT_DIR FACE_FOLDER [TRAIN_SECONDS]
#
# TRAIN_SECONDS (default 240; with the 100 s of FID and 2 x 55 s of benchmark, 7.5 minutes) includes preparing the
# folder (once) and compilation. The run is stopped with SIGTERM (it saves at the next step and exits, as on a
# preempted TPU VM). Writes OUT_DIR/gpu.txt, celeba64/ (the run, with metrics.jsonl and
# evaluation.json), memory.csv and the benchmark's gpu_64px_batch<B>.json and .log; prints one summary line per part.
set -uo pipefail
out="${1:?usage: bash benchmarks/gpu_recipe.sh OUT_DIR FACE_FOLDER [TRAIN_SECONDS]}"
faces="${2:?usage: bash benchmarks/gpu_recipe.sh OUT_DIR FACE_FOLDER [TRAIN_SECONDS]}"
train_seconds="${3:-240}"
python="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
"$python" -c "import jax; print('jax', jax.__version__, jax.devices())" >> "$out/gpu.txt" 2>&1

nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -l 1 > "$out/memory.csv" 2> /dev/null &
monitor=$!
timeout -s TERM -k 30 "$train_seconds" "$python" -m experiments.train --config experiments/configs/celeba64.py \
  --workdir "$out/celeba64" --config.data.dataset= --config.data.image_folder="$faces" \
  --config.evaluation.every=0 --config.checkpoint.every=25000 --config.logging.figure_every=100000 \
  > "$out/train.log" 2>&1
echo "train: exit $? (124: stopped at the time limit, its checkpoint saved) $(grep -E 'steps/s' "$out/train.log" | tail -1 | sed 's/.*| //')"
kill "$monitor" 2> /dev/null
echo "peak GPU memory used: $(cut -d, -f2 "$out/memory.csv" | sort -n | tail -1)"

timeout 100 "$python" -m experiments.evaluate --workdir "$out/celeba64" --metrics fid --num_samples 2000 \
  --reference "$faces" > "$out/evaluate.log" 2>&1
echo "evaluate: exit $? $(grep -o '"fid": [0-9.]*' "$out/celeba64/evaluation.json" 2> /dev/null) $(grep -o '"step": [0-9]*' "$out/celeba64/evaluation.json" 2> /dev/null)"

for batch in 64 512; do
  name="gpu_64px_batch${batch}"
  timeout 55 "$python" -m experiments.benchmark --config experiments/configs/bench_dcgan64.py \
    --config.batch_size="$batch" --compare torch --notorch_compile --steps 30 --iterations 6 --rounds 3 \
    --json "$out/$name.json" > "$out/$name.log" 2>&1
  echo "$name: exit $? $(grep -E 'speed:' "$out/$name.log" | tr -s ' ' | tr '\n' ';')"
done
