#!/usr/bin/env bash
# The GPU set of issue 12: our steps against PyTorch (CUDA) on the same GPU, 32 and 64 px, batch 64 and 512,
# at most 8 minutes (the four settings' time limits add up to 480 s). Usage, from the repository root on a machine with a GPU, JAX with CUDA,
# PyTorch with CUDA and this project's requirements:
#
#   bash benchmarks/gpu_benchmark.sh OUT_DIR
#
# It writes OUT_DIR/gpu_<res>px_batch<B>.json and .log per setting. On a machine that has JAX, PyTorch and flax but
# not every pure-Python requirement (ml_collections, say), put their wheels in .whl/ first; they are installed into
# /tmp/site. Each setting runs under its own time limit so that one slow torch.compile cannot take the whole budget.
set -uo pipefail
out="${1:?usage: bash benchmarks/gpu_benchmark.sh OUT_DIR}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, torch.cuda.get_device_name())" >> "$out/gpu.txt" 2>&1
for setting in "32 64 110" "64 64 130" "32 512 110" "64 512 130"; do
  read -r resolution batch limit <<< "$setting"
  name="gpu_${resolution}px_batch${batch}"
  timeout "$limit" python3 -m experiments.benchmark --config "experiments/configs/bench_dcgan${resolution}.py" \
    --config.batch_size="$batch" --compare torch --steps 30 --iterations 6 --rounds 3 --json "$out/$name.json" \
    > "$out/$name.log" 2>&1
  echo "$name: exit $? $(grep -E 'speed:' "$out/$name.log" | tr -s ' ' | tr '\n' ';')"
done
