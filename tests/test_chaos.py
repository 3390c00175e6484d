"""The chaos test's fast variant: one trial of ``tests/chaos.py`` interrupted twice, during a save and during an FID
evaluation or a step (the figure in docs/checkpoints.md runs 20 trials)."""

import chaos


def test_a_run_interrupted_at_random_moments_ends_bit_identical_with_nothing_unreadable(face_folder, tmp_path):
  report = chaos.run_trials(trials=1, seed=3, processes=1, face_folder=face_folder, root=tmp_path,
                            max_restarts=2, again_probability=1.0)
  (trial,) = report["trials"]
  assert len(trial["interruptions"]) == 2, trial
  assert trial["passed"], trial


def test_a_float32_run_on_the_cpu_kernels_killed_and_resumed_ends_bit_identical(face_folder, tmp_path,
                                                                                 onednn_convolutions):
  """The suite's image runs are bfloat16, where the float32 kernels (oneDNN's convolutions and batch norm, Winograd)
  do not run: one float32 trial, interrupted twice at a step or during a save."""
  report = chaos.run_trials(trials=1, seed=5, processes=1, face_folder=face_folder, root=tmp_path, dtype="float32",
                            kinds=("step", "save"), max_restarts=2, again_probability=1.0)
  (trial,) = report["trials"]
  assert report["settings"]["model.dtype"] == "float32" and len(trial["interruptions"]) == 2, trial
  assert trial["passed"], trial
