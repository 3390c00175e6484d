"""The chaos test's fast variant: one trial of ``tests/chaos.py`` interrupted twice, during a save and during an FID
evaluation or a step (the figure in docs/checkpoints.md runs 20 trials)."""

import chaos


def test_a_run_interrupted_at_random_moments_ends_bit_identical_with_nothing_unreadable(face_folder, tmp_path):
  report = chaos.run_trials(trials=1, seed=3, processes=1, face_folder=face_folder, root=tmp_path,
                            max_restarts=2, again_probability=1.0)
  (trial,) = report["trials"]
  assert len(trial["interruptions"]) == 2, trial
  assert trial["passed"], trial
