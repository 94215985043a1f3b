"""Face crops, the paper's augmentation, and the Grain image pipeline."""

import os

import cv2
import numpy as np
import pytest

from data_pipelines.face_crops import (Augmentation, augment_appearance, crop_face, face_box,
                                      sample_augmentation)
from data_pipelines.image_folders import read_image_folder
from data_pipelines.image_pipeline import identity_index, image_batch_dataset, image_dataset
from data_pipelines.pts import DataError
from data_pipelines.landmarks import FLIP_68

YTF68_MINI = os.path.join(os.path.dirname(__file__), "fixtures", "ytf68_mini")
LEVELS = (0, 60, 120, 180, 240)
COLOURS = np.array([(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS][1:69], np.uint8)


def dotted_face(seed=0):
  """A 400x400 image with 68 landmarks on a jittered grid, each a disc of its own colour."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(np.arange(9), np.arange(8)), -1).reshape(-1, 2)[:68]
  points = 40.0 + grid * 40.0 + rng.uniform(-5, 5, size=(68, 2))
  image = np.zeros((400, 400, 3), np.uint8)
  for colour, (x, y) in zip(COLOURS, points):
    cv2.circle(image, (int(round(x)), int(round(y))), 8, tuple(int(c) for c in colour), -1)
  return image, points.astype(np.float32)


def colour_id(crop, point):
  x, y = np.round(point).astype(int)
  return int(np.argmin(np.abs(COLOURS.astype(int) - crop[y, x].astype(int)).sum(-1)))


@pytest.mark.parametrize("seed", range(6))
def test_augmented_landmarks_stay_on_their_features(seed):
  image, points = dotted_face(seed)
  rng = np.random.default_rng(seed)
  params = sample_augmentation(rng, Augmentation(), 128)
  params["flip"] = bool(seed % 2)                     # both branches, whatever the draw
  crop, moved, _ = crop_face(image, points, 128, **params)
  assert crop.shape == (128, 128, 3) and moved.shape == (68, 2)
  for l in range(68):
    # After a flip, index l names the mirrored landmark: the dot of the original FLIP_68[l].
    expected = FLIP_68[l] if params["flip"] else l
    assert colour_id(crop, moved[l]) == expected, (l, params)


def test_augmentation_ranges_match_the_paper():
  rng = np.random.default_rng(0)
  draws = [sample_augmentation(rng, Augmentation(), 64) for _ in range(2000)]
  scales = [d["scale"] for d in draws]
  rotations = [d["rotation_deg"] for d in draws]
  shifts = np.array([d["shift"] for d in draws])
  assert 0.9 <= min(scales) < 0.91 and 1.09 < max(scales) <= 1.1
  assert -15 <= min(rotations) < -14.5 and 14.5 < max(rotations) <= 15
  assert np.abs(shifts).max() <= 3.5 and np.abs(shifts).max() > 3.4   # 7 px at 128 -> 3.5 at 64
  assert 0.45 < np.mean([d["flip"] for d in draws]) < 0.55


def test_rotations_in_steps_draw_every_multiple_within_the_range():
  """DRR's rotations: {0, +-5, ..., +-30} deg, each about equally often."""
  rng = np.random.default_rng(1)
  augmentation = Augmentation(rotation_deg=30.0, rotation_step_deg=5.0)
  rotations = [sample_augmentation(rng, augmentation, 64)["rotation_deg"] for _ in range(2600)]
  values, counts = np.unique(rotations, return_counts=True)
  np.testing.assert_array_equal(values, np.arange(-30, 31, 5))
  assert counts.min() > 140 and counts.max() < 260


def test_unaugmented_crop_centres_the_face_box():
  image, points = dotted_face()
  crop, moved, _ = crop_face(image, points, 64, box_scale=1.3)
  centre, side = face_box(moved, 1.0)
  np.testing.assert_allclose(centre, [31.5, 31.5], atol=1e-3)
  assert side == pytest.approx(64 / 1.3, rel=1e-4)


def test_grain_image_pipeline_is_deterministic_and_well_formed():
  records, _ = read_image_folder(YTF68_MINI)
  train = image_dataset(records, 64, train=True, seed=3, samples_per_image=2)
  assert len(train) == 12
  first = [train[i] for i in range(len(train))]
  again = image_dataset(records, 64, train=True, seed=3, samples_per_image=2)
  other = image_dataset(records, 64, train=True, seed=4, samples_per_image=2)
  for a, b in zip(first, [again[i] for i in range(12)]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
  assert any(not np.array_equal(a["image"], other[i]["image"]) for i, a in enumerate(first))
  ids = identity_index(records)
  assert ids == {"Adam_Sandler": 0, "Aishwarya_Rai": 1}
  assert sorted(int(e["identity"]) for e in first) == [0] * 6 + [1] * 6
  for e in first:
    assert e["image"].dtype == np.uint8 and e["image"].shape == (64, 64, 3)
    assert e["landmarks"].dtype == np.float32 and e["landmarks"].shape == (68, 2)
    assert np.all(e["landmarks"] > -8) and np.all(e["landmarks"] < 72)
  evaluation = image_dataset(records, 64, train=False)
  assert len(evaluation) == 6
  element = evaluation[0]
  centre, _ = face_box(element["landmarks"], 1.0)
  np.testing.assert_allclose(centre, [31.5, 31.5], atol=1e-3)   # no augmentation at eval
  batches = list(evaluation.batch(4).to_iter_dataset())
  assert [b["image"].shape for b in batches] == [(4, 64, 64, 3), (2, 64, 64, 3)]


def test_identity_disjoint_image_batches_and_bad_samples_masked(tmp_path):
  import shutil
  from data_pipelines.image_pipeline import image_batch_dataset
  from data_pipelines.pts import DataError
  records, _ = read_image_folder(YTF68_MINI)
  batches, left_over = image_batch_dataset(records, 32, 2, train=True, seed=1,
                                           samples_per_image=3, identity_disjoint=True)
  assert len(batches) == 9 and left_over == 0
  for i in range(len(batches)):
    batch = batches[i]
    assert batch["image"].shape == (2, 32, 32, 3) and batch["valid"].all()
    assert sorted(batch["identity"].tolist()) == [0, 1]
  # A corrupt image: an error naming it, or (skip_bad_samples) a masked sample.
  root = tmp_path / "set"
  shutil.copytree(YTF68_MINI, root)
  broken = root / "images" / "Adam_Sandler" / "Adam_Sandler_01.jpg"
  broken.write_bytes(broken.read_bytes()[:200])
  records, _ = read_image_folder(str(root))
  strict, _ = image_batch_dataset(records, 32, 6, train=False)
  with pytest.raises(DataError, match="Adam_Sandler_01.jpg: truncated JPEG"):
    strict[0]
  lenient, _ = image_batch_dataset(records, 32, 6, train=False, skip_bad_samples=True)
  batch = lenient[0]
  assert batch["valid"].tolist() == [True, False, True, True, True, True]
  assert not batch["image"][1].any() and not batch["landmarks"][1].any()


def test_appearance_augmentation_is_off_by_default_and_does_what_its_fields_say():
  rng = np.random.default_rng(0)
  crop = rng.integers(40, 200, size=(64, 64, 3)).astype(np.uint8)
  np.testing.assert_array_equal(augment_appearance(crop, rng, Augmentation()), crop)
  coloured = [augment_appearance(crop, np.random.default_rng(s), Augmentation(colour=0.4))
              for s in range(8)]
  means = [c.astype(float).mean() for c in coloured]
  assert max(means) - min(means) > 10 and all(c.shape == crop.shape for c in coloured)
  blurred = augment_appearance(crop, rng, Augmentation(blur_prob=1.0))
  assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < \
      np.abs(np.diff(crop.astype(float), axis=1)).mean()
  occluded = augment_appearance(crop, rng, Augmentation(occluder_prob=1.0))
  changed = np.any(occluded != crop, axis=-1)
  rows, cols = np.nonzero(changed)
  # One axis-aligned rectangle of 15-40 % of the side, nothing changed outside it.
  assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0.9
  assert 0.15 * 64 <= rows.max() - rows.min() + 1 <= 0.4 * 64 + 1


def test_config_augmentation_fields_reach_the_loader():
  from rednet_jax.training.configs import base_stage
  from rednet_jax.training.input_pipeline import augmentation_of
  data = base_stage("image").data
  assert augmentation_of(data) == Augmentation()        # the paper's ranges by default
  data.augmentation.update(rotation_deg=30.0, colour=0.3)
  assert augmentation_of(data) == Augmentation(rotation_deg=30.0, colour=0.3)
  data.augment = False
  assert augmentation_of(data) is None


def test_a_second_source_makes_up_its_stated_share_of_each_epoch(tmp_path):
  from rednet_jax.training.configs import base_stage
  from rednet_jax.training.input_pipeline import build_stage_data, mixing_weights
  from test_300w import make_300w
  data = base_stage("image").data
  data.update(samples_per_image=4, extra_weight=0.25)
  weights = mixing_weights(6, 3, data)
  # 6 faces x 4 samples = 24 main samples; a quarter extra: 8 samples over 3 faces.
  assert weights[:6] == [4.0] * 6 and sum(weights[6:]) == pytest.approx(8.0)
  assert mixing_weights(6, 0, data) is None
  # Per epoch the fractional counts are drawn, so totals vary by at most one per record.
  records, _ = read_image_folder(YTF68_MINI)
  totals = []
  for seed in range(20):
    batches, left_over = image_batch_dataset(records, 32, 1, train=True, seed=seed,
                                             samples_per_record=[1.0] * 3 + [0.5] * 3)
    totals.append(len(batches) + left_over)
  assert min(totals) >= 3 and max(totals) <= 6 and 3.9 < np.mean(totals) < 5.1
  # Through the stage config: 300-W layout main source, the ytf68 fixture as the extra one.
  config = base_stage("image")
  config.data.update(root=make_300w(str(tmp_path / "300w")), train_split="train",
                     eval_split="test", size=32, batch_size=2, samples_per_image=2,
                     extra_root=YTF68_MINI, extra_split="train", extra_weight=0.5, workers=0)
  stage = build_stage_data(config, str(tmp_path / "work"))
  # 2 main faces x 2 = 4 samples, as many again from the extra source: 8 samples, 4 batches.
  assert stage.steps_per_epoch == 4 and "50% of the samples" in stage.description
  config.data.extra_weight = 0.0
  with pytest.raises(DataError, match="set both or neither"):
    build_stage_data(config, str(tmp_path / "work"))
