"""metrics.jsonl and TensorBoard event files (read back without TensorFlow), and the speed on the log lines."""

import json
import logging
import pathlib
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from checkpoint_testing import image_config
from wgan_gp_jax.runner import experiment, metric_writer, progress


def read_events(directory: pathlib.Path) -> list[event_pb2.Event]:
  """Every event in the TFRecord files of ``directory``: 8-byte length, 4-byte CRC, the record, 4-byte CRC."""
  events = []
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def scalars(events: list[event_pb2.Event]) -> dict[str, list[tuple[int, float]]]:
  found: dict[str, list[tuple[int, float]]] = {}
  for event in events:
    for value in event.summary.value:
      if value.HasField("simple_value"):
        found.setdefault(value.tag, []).append((event.step, value.simple_value))
  return found


def test_scalars_and_images_reach_the_jsonl_and_the_event_file(tmp_path):
  with metric_writer.MetricWriter(tmp_path, start_step=0) as writer:
    writer.write_scalars(5, {"critic_loss": -1.5}, seconds=2.0, speed={"steps_per_second": 3.0})
    writer.write_image(5, "samples", np.full((6, 4, 3), 200, np.uint8))
  assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
      {"step": 5, "seconds": 2.0, "critic_loss": -1.5}]
  events = read_events(tmp_path / "tensorboard")
  assert scalars(events) == {"critic_loss": [(5, -1.5)], "speed/steps_per_second": [(5, 3.0)]}
  images = [value.image for event in events for value in event.summary.value if value.tag == "samples"]
  assert [(image.height, image.width) for image in images] == [(6, 4)]
  assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_a_resumed_writer_drops_the_lines_past_its_step_and_purges_them_in_tensorboard(tmp_path):
  with metric_writer.MetricWriter(tmp_path, start_step=0) as writer:
    for step in (1, 2, 3):
      writer.write_scalars(step, {"loss": float(step)}, seconds=0.0)
  (tmp_path / "metrics.jsonl").open("a").write('{"step": 4, "los')  # a line cut short by kill -9
  with metric_writer.MetricWriter(tmp_path, start_step=2) as writer:
    writer.write_scalars(3, {"loss": 30.0}, seconds=0.0)
  steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3]
  purges = [event.step for event in read_events(tmp_path / "tensorboard") if event.HasField("session_log")]
  assert purges == [3]  # TensorBoard hides the first start's events from step 3 on


def test_a_writer_of_another_process_writes_nothing(tmp_path):
  with metric_writer.MetricWriter(tmp_path, start_step=0, enabled=False) as writer:
    writer.write_scalars(1, {"loss": 1.0}, seconds=0.0)
  assert not list(tmp_path.iterdir())


def test_speed_and_time_left_come_from_the_steps_since_the_last_report():
  now = [100.0]
  speed = progress.Progress(start_step=10, num_steps=110, images_per_step=5 * 64, show_bar=False,
                            clock=lambda: now[0])
  with speed:
    now[0] += 30.0  # the first step compiles: the first window starts once it is done
    speed.step_done(11)
    for step in range(12, 21):
      speed.step_done(step)
    now[0] += 3.0
    assert speed.report(11) == {}
    rates = speed.report(20)
  assert rates == pytest.approx({"steps_per_second": 3.0, "images_per_second": 960.0, "seconds_left": 30.0})
  assert progress.Progress.describe(rates) == " | 3 steps/s, 960 images/s, 0:00:30 left"
  assert progress.format_duration(2 * 86_400 + 3_723) == "2d 1:02:03"


def test_a_short_face_run_logs_its_speed_and_writes_tensorboard(face_folder, tmp_path, caplog):
  config = image_config(face_folder, tmp_path / "tfds", **{"num_steps": 4, "logging.log_every": 2,
                                                           "logging.figure_every": 2, "checkpoint.every": 4})
  with caplog.at_level(logging.INFO):
    experiment.train_and_evaluate(config, tmp_path / "run")
  step_lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("step 4:")]
  assert len(step_lines) == 1 and "steps/s" in step_lines[0] and "images/s" in step_lines[0]
  assert step_lines[0].endswith(" left")

  events = read_events(tmp_path / "run" / "tensorboard")
  found = scalars(events)
  for tag in ("critic_loss", "generator_loss", "gradient_penalty", "wasserstein_estimate", "speed/steps_per_second",
              "speed/images_per_second", "speed/seconds_left"):
    assert tag in found, tag
  assert [step for step, _ in found["critic_loss"]] == [2, 4]
  grids = [(event.step, value.image) for event in events for value in event.summary.value if value.tag == "samples"]
  assert [step for step, _ in grids] == [2, 4]
  # The grid of 16 faces of 16x16 pixels, 2 pixels apart, drawn 8 times larger (128 // 16).
  assert (grids[0][1].height, grids[0][1].width, grids[0][1].colorspace) == (8 * 74, 8 * 74, 3)
