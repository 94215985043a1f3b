"""The FGNET Talking Face reader, its 7-point mapping and the tracking protocol on it
(`evaluate.py --kind=talking_face`), with jitter and the stabiliser's table."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.face_crops import face_box
from data_pipelines.image_folders import load_image_rgb
from data_pipelines.landmarks import IBUG68_TO_7
from data_pipelines.pts import DataError, write_pts
from data_pipelines.talking_face import TALKING_FACE_TO_7, read_talking_face
from rednet_jax.evaluation import metrics
from rednet_jax.evaluation import protocols
from rednet_jax.inference.landmark_model import load_model
from rednet_jax.inference.stabiliser import OneEuroSettings
from test_inference import REPO, VAL_FACES, _moving_frames, tiny_model_dir  # noqa: F401

TF_FIXTURE = os.path.join(REPO, "tests", "fixtures", "talking_face")   # frames 0-2 of the video


def test_reader_orders_frames_and_maps_the_seven_points():
  video = read_talking_face(TF_FIXTURE)
  assert [os.path.basename(f) for f in video.frames] == [f"franck_0000{i}.jpg" for i in range(3)]
  assert video.landmarks.shape == (3, 68, 2)
  # Origin 0 keeps the file's numbers; origin 1 subtracts one pixel.
  with open(os.path.join(TF_FIXTURE, "franck_00000.pts"), encoding="utf-8") as f:
    first = [float(v) for v in f.read().split("{")[1].split()[:2]]
  np.testing.assert_allclose(video.landmarks[0, 0], first, atol=1e-4)
  np.testing.assert_allclose(read_talking_face(TF_FIXTURE, origin=1).landmarks,
                             video.landmarks - 1, atol=1e-4)
  np.testing.assert_array_equal(video.seven_points, video.landmarks[:, TALKING_FACE_TO_7])


def test_seven_point_mapping_agrees_with_an_ibug_model_on_a_real_frame():
  """The shipped 68-point iBUG model's eye corners, nose tip and mouth corners land on the
  mapped FGNET points, and the mirrored mapping (left/right swapped) is far off."""
  video = read_talking_face(TF_FIXTURE)
  truth = video.landmarks[0]
  centre, side = face_box(truth, 1.0)
  points, _ = load_model().predict([load_image_rgb(video.frames[0])], [(centre, side)])
  predicted = points[0][list(IBUG68_TO_7)]
  io = np.linalg.norm(truth[27] - truth[32])
  error = np.linalg.norm(predicted - truth[list(TALKING_FACE_TO_7)], axis=-1) / io
  mirrored = np.linalg.norm(predicted - truth[[32, 34, 29, 27, 67, 54, 48]], axis=-1) / io
  assert error.mean() < 0.07, error
  assert mirrored.mean() > 3 * error.mean(), (mirrored, error)


def _write_tf_layout(root, frames, truths, skip_pts=()):
  """A Talking-Face-style folder from iBUG-annotated frames: FGNET's 7 mapped points carry
  the iBUG ones, the other 61 the rest of the iBUG shape (so the box spans the face)."""
  import cv2
  os.makedirs(root, exist_ok=True)
  for i, (frame, truth) in enumerate(zip(frames, truths)):
    fgnet = truth.copy()
    fgnet[list(TALKING_FACE_TO_7)] = truth[list(IBUG68_TO_7)]
    cv2.imwrite(os.path.join(root, f"franck_{i:05d}.jpg"), frame[..., ::-1])
    if i not in skip_pts:
      # write_pts adds iBUG's 1; FGNET's numbers are taken as 0-based (origin 0).
      write_pts(os.path.join(root, f"franck_{i:05d}.pts"), fgnet - 1.0)


def test_reader_rejects_gaps_missing_and_wrong_annotations(tmp_path):
  frames, truths = _moving_frames(VAL_FACES[0], steps=3)
  _write_tf_layout(str(tmp_path / "gap"), frames, truths)
  os.rename(tmp_path / "gap" / "franck_00002.jpg", tmp_path / "gap" / "franck_00005.jpg")
  with pytest.raises(DataError, match="jump from 1 to 5"):
    read_talking_face(str(tmp_path / "gap"))
  _write_tf_layout(str(tmp_path / "nopts"), frames, truths, skip_pts=(1,))
  with pytest.raises(DataError, match="franck_00001.pts: missing annotation"):
    read_talking_face(str(tmp_path / "nopts"))
  _write_tf_layout(str(tmp_path / "short"), frames, truths)
  write_pts(str(tmp_path / "short" / "franck_00002.pts"), truths[2][:67])
  with pytest.raises(DataError, match="franck_00002.pts: has 67 points, expected 68"):
    read_talking_face(str(tmp_path / "short"))
  with pytest.raises(DataError, match="does not exist"):
    read_talking_face(str(tmp_path / "nothing"))


def test_tracking_protocol_scores_seven_points_with_jitter_and_stabiliser(tiny_model_dir,
                                                                          tmp_path):
  frames, truths = _moving_frames(VAL_FACES[0], steps=6)
  _write_tf_layout(str(tmp_path / "tf"), frames, truths)
  model = load_model(tiny_model_dir)
  result = protocols.evaluate_videos(model, protocols.talking_face_video(str(tmp_path / "tf")))
  assert len(result.points) == 6 and result.points[0].shape == (7, 2)
  assert result.full_points[0].shape == (68, 2) and len(set(result.track)) == 1
  np.testing.assert_allclose(np.stack(result.landmarks), truths[:, list(IBUG68_TO_7)], atol=1e-3)
  rows = protocols.tables(result)
  row = rows["talking_face"]
  truth7 = truths[:, list(IBUG68_TO_7)]
  assert row["gt_jitter_io"] == pytest.approx(metrics.jitter(truth7)["jitter_io_mean"], rel=1e-4)
  assert row["jitter_io"] == pytest.approx(
      metrics.jitter(np.stack(result.points))["jitter_io_mean"], rel=1e-4)
  assert row["jitter_io_all_points"] == pytest.approx(
      metrics.jitter(np.stack(result.full_points))["jitter_io_mean"], rel=1e-4)
  errors = np.asarray(metrics.normalised_errors(np.stack(result.points), truth7, "io"))
  assert row["nme_io"] == pytest.approx(100 * errors.mean(), rel=1e-4)
  assert row["median_io"] == pytest.approx(100 * np.median(errors), rel=1e-4)
  smooth = result.stabilised(OneEuroSettings(min_cutoff_hz=0.5, beta=0.0), 25.0)
  assert smooth.points[0] == pytest.approx(result.points[0])         # the filter starts there
  assert not np.allclose(np.stack(smooth.points), np.stack(result.points))
  assert protocols.tables(smooth)["all"]["jitter_io"] < row["jitter_io"]


def test_evaluate_cli_talking_face_writes_both_tables_and_the_error_plot(tiny_model_dir,
                                                                         tmp_path):
  frames, truths = _moving_frames(VAL_FACES[0], steps=5)
  _write_tf_layout(str(tmp_path / "tf"), frames, truths)
  out = tmp_path / "out"
  run = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "evaluate.py"),
                        "--kind=talking_face", f"--root={tmp_path / 'tf'}",
                        f"--checkpoint={tiny_model_dir}", f"--out={out}",
                        "--readout=probability_centroid"],
                       capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  report = json.loads((out / "results.json").read_text())
  assert report["settings"]["readout"] == "probability_centroid"
  assert report["subsets"]["talking_face"]["frames"] == 5
  assert {"jitter_io", "gt_jitter_io"} <= set(report["stabilised"]["talking_face"])
  assert (out / "error_over_frames.png").stat().st_size > 0
  assert "With the One-Euro stabiliser" in (out / "results.md").read_text()
