"""The chaos test's fast variant: a couple of trials of ``tests/chaos.py`` (the README's figure runs 20 or more)."""

import chaos


def test_runs_interrupted_at_random_moments_end_bit_identical_with_nothing_unreadable(face_folder, tmp_path):
  report = chaos.run_trials(trials=2, seed=1, processes=1, face_folder=face_folder, root=tmp_path,
                            kinds=("save", "evaluation"))
  for trial in report["trials"]:
    assert trial["interruptions"], trial
    assert trial["passed"], trial
  assert report["summary"]["divergent"] == 0
