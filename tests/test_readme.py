import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_example_runs():
  blocks = _python_blocks()
  assert blocks, "README.md has no python example"
  namespace: dict = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)
  assert np.isfinite(float(namespace["gp"])) and float(namespace["lp"]) <= float(namespace["gp"])
  assert set(namespace["grads"]) == {"w1", "w2"}


def test_readme_training_step_example_runs():
  blocks = _python_blocks()
  assert len(blocks) >= 2, "README.md has no training-step example (its second python block)"
  namespace: dict = {}
  exec(compile(blocks[1], "README.md", "exec"), namespace)
  state, metrics = namespace["state"], namespace["metrics"]
  assert int(state.step) == 3  # three iterations of the example's loop
  for name in ("critic_loss", "generator_loss"):
    assert np.all(np.isfinite(np.asarray(metrics[name]))), (name, metrics[name])
  # The critic moved away from its initialisation: five critic updates per iteration were applied.
  initial = namespace["train"].init_state(namespace["toy"], namespace["opt"], seed=0, ema=False)
  moved = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
           for a, b in zip(jax.tree.leaves(state.critic_params), jax.tree.leaves(initial.critic_params))]
  assert max(moved) > 0
