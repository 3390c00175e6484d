import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README.md has no python example"
  namespace: dict = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)
  assert np.isfinite(float(namespace["gp"])) and float(namespace["lp"]) <= float(namespace["gp"])
  assert set(namespace["grads"]) == {"w1", "w2"}
