"""Where a compiled WGAN-GP step spends its time: each operation of XLA's program, timed by the JAX profiler.

  python -m experiments.benchmark --config experiments/configs/bench_dcgan32.py --profile critic \\
      [--steps 10] [--json profile.json]

``experiments.benchmark --profile STEP`` compiles the step it would time (``critic``, ``generator`` or
``iteration``), runs it three times untimed, then ``--steps`` times under ``jax.profiler.trace``, and matches every
operation the runtime executed (XLA:CPU's thunks: a fused loop, a matrix product, a copy) with its instruction in the
optimized program. It prints the wall time per call, then per operation the milliseconds per call, its share of all
operations' time, the shape it writes and the JAX operation it comes from, and the totals per kind:

* ``products``: fusions that contain a ``dot`` or a ``convolution`` (YNNPACK's or Eigen's matrix products);
* ``oneDNN``: ``wgan_gp_jax.kernels.onednn``'s convolutions (custom calls);
* ``patches``: the im2col and col2im loops of ``wgan_gp_jax.kernels.conv`` (fusions with a concatenation; XLA fuses the
  elementwise work that consumes a col2im, such as an activation's gradient, into it);
* ``layout``: transposes and copies;
* ``other loops``: elementwise work, reductions, padding, the optimizer.

The runtime runs independent operations side by side on its threads (also when the process is pinned to one core),
so the operations' times add up to more than the wall time, and an operation that waits for a core is charged the
wait: the shares are of the operations' summed time, a guide to where to look; a conclusion about one operation
needs it timed alone. Under the profiler oneDNN's calls took 1.5-2x their time without it (the handlers timing
themselves, Intel Xeon, 2026-12-03): their share is overstated. The CPU model is printed and written to the JSON:
these shares, like every speed figure, belong to one machine.
"""

import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time
from typing import Any

import jax

from wgan_gp_jax.runner import host

KINDS = ("products", "oneDNN", "patches", "layout", "other loops")
# Their events span the operations of the computations they run, which have events of their own.
_CONTROL_FLOW = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")
_COMPUTATION = re.compile(r"^%?([\w.\-]+) .*\{$")


def program_instructions(hlo_text: str) -> dict[str, dict[str, str]]:
  """Every instruction of an optimized HLO module: its result shape, opcode, JAX source op and kind."""
  bodies: dict[str, list[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and not line.startswith(" "):
      current = header.group(1)
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  instructions = {}
  for lines in bodies.values():
    for line in lines:
      match = _INSTRUCTION.match(line)
      if not match or match.group(1) in instructions:
        continue
      name, shape, opcode = match.groups()
      called = re.search(r"calls=%?([\w.\-]+)", line)
      body = "\n".join(bodies.get(called.group(1), [])) if called else line
      source = re.search(r'op_name="([^"]*)"', line)
      # Without the program's own name and lax.platform_dependent's branch: "jvp(DCGANCritic)/Conv_1/dot_general".
      source = re.sub(r"^jit\([^)]*\)/", "", source.group(1)).replace("/cond/branch_0_fun", "") if source else ""
      instructions[name] = {"shape": shape, "opcode": opcode, "source": source,
                            "kind": _kind(name, opcode, body)}
  return instructions


def _kind(name: str, opcode: str, body: str) -> str:
  if opcode == "custom-call" and "wgan_gp_jax_onednn_" in body:
    return "oneDNN"
  if opcode in ("dot", "convolution") or re.search(r"= \S+ (dot|convolution)\(", body):
    return "products"
  if "concatenate" in name or re.search(r"= \S+ concatenate\(", body):
    return "patches"
  if opcode in ("transpose", "copy") or "transpose" in name or name.startswith("copy"):
    return "layout"
  return "other loops"


def operation_times(trace_dir: str) -> collections.Counter:
  """Microseconds per trace event name, summed over the trace the profiler wrote into ``trace_dir``."""
  (path,) = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
  with gzip.open(path) as file:
    events = json.load(file)["traceEvents"]
  totals: collections.Counter = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      totals[event["name"]] += event["dur"]
  return totals


def profile(steps, kind: str, calls: int) -> dict[str, Any]:
  """Per-call milliseconds of every operation of ``kind``'s program, the kinds' totals, the wall time and the CPU.

  ``steps``: ``experiments.benchmark.JaxSteps`` (its compiled programs and ``run``).
  """
  if calls < 1:
    raise ValueError(f"profile needs at least one call, got {calls}")
  instructions = program_instructions(steps.compiled[kind].as_text())
  for _ in range(3):
    steps.run(kind)
  with tempfile.TemporaryDirectory() as trace_dir:
    walls = []
    with jax.profiler.trace(trace_dir):
      for _ in range(calls):
        start = time.perf_counter()
        steps.run(kind)
        walls.append(time.perf_counter() - start)
    totals = operation_times(trace_dir)
  operations = [{"name": name, "ms_per_call": microseconds / calls / 1e3, **instructions[name]}
                for name, microseconds in totals.items()
                if name in instructions and instructions[name]["opcode"] not in _CONTROL_FLOW]
  if not operations:
    raise SystemExit("the profiler's trace names none of the program's operations: nothing to report")
  operations.sort(key=lambda operation: -operation["ms_per_call"])
  total = sum(operation["ms_per_call"] for operation in operations)
  for operation in operations:
    operation["share"] = operation["ms_per_call"] / total
  by_kind = {kind_name: sum(op["ms_per_call"] for op in operations if op["kind"] == kind_name) for kind_name in KINDS}
  return {"step": kind, "calls": calls, "cpu": host.cpu_info(), "wall_ms_per_call": 1e3 * statistics.median(walls),
          "operations_ms_per_call": total, "kinds_ms_per_call": by_kind, "operations": operations}


def print_profile(result: dict[str, Any], config, top: int) -> None:
  """The wall time, the kinds' totals and the ``top`` slowest operations of ``profile``'s result."""
  cpu = result["cpu"]
  print(f"{result['step']} step, {config.model.name} {config.data.resolution}x{config.data.resolution} width "
        f"{config.model.width}, batch {config.batch_size}, {config.model.dtype}; {cpu['model']} (family "
        f"{cpu['family']} model {cpu['model_number']}), {cpu['cores']} usable cores")
  print(f"wall {result['wall_ms_per_call']:.2f} ms per call (median of {result['calls']}); operations "
        f"{result['operations_ms_per_call']:.2f} ms per call in all")
  for kind_name, milliseconds in result["kinds_ms_per_call"].items():
    print(f"  {kind_name:12s} {milliseconds:8.2f} ms  {milliseconds / result['operations_ms_per_call']:6.1%}")
  print(f"{'ms/call':>8s} {'share':>6s}  {'operation':32s} {'kind':12s} {'writes':32s} from")
  for operation in result["operations"][:top]:
    print(f"{operation['ms_per_call']:8.3f} {operation['share']:6.1%}  {operation['name'][:32]:32s} "
          f"{operation['kind']:12s} {operation['shape'][:32]:32s} {operation['source'][-90:]}")
