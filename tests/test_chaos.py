"""The chaos test's fast variant: one float32 trial of ``tests/chaos.py`` on the CPU kernels (oneDNN's convolutions
and batch norm, Winograd: the suite's other image runs are bfloat16, where they do not run), killed during a save and
during an FID evaluation (the records in docs/results/chaos_*.json run many trials of every kind)."""

import chaos


def test_a_float32_run_on_the_cpu_kernels_killed_during_a_save_and_an_evaluation_ends_bit_identical(
    face_folder, tmp_path, onednn_convolutions):
  report = chaos.run_trials(trials=1, seed=2, processes=1, face_folder=face_folder, root=tmp_path, dtype="float32",
                            kinds=("save", "evaluation"), max_restarts=2, again_probability=1.0)
  (trial,) = report["trials"]
  assert report["settings"]["model.dtype"] == "float32", report["settings"]
  assert sorted(interruption["kind"] for interruption in trial["interruptions"]) == ["evaluation", "save"], trial
  assert trial["passed"], trial
