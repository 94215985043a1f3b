"""From `config.data` to what the trainer consumes: one batch per global step for the whole stage,
an evaluation set, and the mean shape.

Data kinds (`config.data.kind`):
  image_folder      300-W / ytf68 layout (`data_pipelines.image_folders`): still images, T = 1.
  300vw             300-VW layout (`<id>/vid.avi` + `annot/`): T-frame clips.
  still_clips       clips made from the stills of an image folder (`stills_to_clips`).
  synthetic_stills  `image_folder` rendered by `data_pipelines.synthetic` under `root` (default
                    `<workdir>/synthetic/stills`) the first time it is needed.
  synthetic_videos  `300vw` rendered likewise (default `<workdir>/synthetic/videos`).
  image_sequences   an image folder whose manifest gives each image a video and a frame number
                    (e.g. ytf68: 3 frames per YouTube video): T-frame clips of real motion,
                    train_split / eval_split (or eval_root) as for image folders.
  tfds_faces        still images from a TFDS ArrayRecord dataset prepared once with
                    `data_pipelines.tfds_builders.Faces300W` (`data.root` is the TFDS data_dir,
                    `data.tfds_name` the dataset, train_split / eval_split its splits); read
                    with `tfds.data_source` (no TensorFlow), images cached once under
                    `<workdir>/tfds_cache/`.

Every batch is {image uint8 (B, T, S, S, 3), landmarks float32 (B, T, L, 2), identity int32 (B,),
valid bool (B,)} (+ crop_matrix for videos), B being this process's part of the global batch.
The training data of a stage is one `grain.MapDataset` indexed by global step: element i is the
batch of epoch i // steps_per_epoch, drawn with seed + epoch. Its Grain iterator state is
therefore the data position that a checkpoint saves.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import grain
import numpy as np
from absl import logging

from data_pipelines import synthetic
from data_pipelines.batching import identity_index
from data_pipelines.clip_pipeline import LoadClipBatch, clip_batch_dataset, sample_clips
from data_pipelines.face_crops import Augmentation, mean_shape_in_crop
from data_pipelines.image_folders import FaceRecord, normalise_to_box, read_image_folder
from data_pipelines.image_pipeline import LoadImageBatch, image_batch_dataset
from data_pipelines.pts import DataError
from data_pipelines.stills_to_clips import (LoadStillClipBatch, StillClipConfig,
                                            still_clip_batch_dataset)
from data_pipelines.video_300vw import (VideoRecord, challenge_split, read_300vw,
                                       read_image_sequences, rednet_split)

KINDS = ("image_folder", "300vw", "still_clips", "synthetic_stills", "synthetic_videos",
         "tfds_faces", "image_sequences")
VIDEO_KINDS = ("300vw", "synthetic_videos", "image_sequences")


MAX_TRAINING_SHAPES = 20_000     # 300-VW's 218k frames are mostly near-repeats


@dataclasses.dataclass
class StageData:
  train: grain.MapDataset          # element i: this process's part of the batch of step i
  steps_per_epoch: int
  eval: grain.MapDataset           # padded batches; `valid` marks the real samples
  mean_shape: np.ndarray           # (L, 2) in crop pixels: z_0 of still images, f_REG's origin
  num_identities: int              # identities of the training split
  description: str                 # for the log
  training_shapes: np.ndarray      # (n, L, 2) the training shapes (evenly strided to at most
                                   # MAX_TRAINING_SHAPES) placed as the crop rule places a face,
                                   # for `System.fit_to_shapes` (DRR's k-means candidates)
  validation: grain.MapDataset | None = None   # data.validation_fraction of the training data


def split_validation(items: list, fraction: float, seed: int) -> tuple[list, list]:
  """(training, validation): a seeded `fraction` of `items` (at least one when fraction > 0)
  held out; the order within each part is kept."""
  if fraction <= 0:
    return items, []
  count = max(1, int(round(fraction * len(items))))
  if count >= len(items):
    raise DataError(f"data.validation_fraction={fraction} leaves no training data of "
                    f"{len(items)} items")
  chosen = set(np.random.default_rng(seed).permutation(len(items))[:count].tolist())
  return ([x for i, x in enumerate(items) if i not in chosen],
          [x for i, x in enumerate(items) if i in chosen])


class _BatchOfStep(grain.transforms.Map):
  """Global step -> that step's batch, building (and caching) one epoch's dataset at a time, so
  a worker that jumps to a resumed step only builds the epoch it needs."""

  def __init__(self, make_epoch: Callable[[int], grain.MapDataset], steps_per_epoch: int):
    self.make_epoch, self.steps_per_epoch = make_epoch, steps_per_epoch
    self._epoch, self._dataset = None, None

  def map(self, step: int) -> dict[str, np.ndarray]:
    epoch, index = divmod(int(step), self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._dataset = epoch, self.make_epoch(epoch)
    return self._dataset[index]


def _add_time_axis(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  batch = dict(batch)
  batch["image"], batch["landmarks"] = batch["image"][:, None], batch["landmarks"][:, None]
  return batch


def _padded(items: list, batch_size: int, host: tuple[int, int]) -> list[tuple[list, list]]:
  """Consecutive batches of `items` with the last one padded by repeating its final item;
  returns (this host's items, this host's valid flags) per batch."""
  index, count = host
  part = batch_size // count
  batches = []
  for start in range(0, len(items), batch_size):
    chunk = items[start:start + batch_size]
    valid = [True] * len(chunk) + [False] * (batch_size - len(chunk))
    chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
    batches.append((chunk[index * part:(index + 1) * part],
                    valid[index * part:(index + 1) * part]))
  return batches


class _EvalBatch(grain.transforms.Map):
  """Loads one padded evaluation batch with a batch loader, then masks the padding."""

  def __init__(self, load: Any, random: bool, add_time: bool):
    self.load, self.random, self.add_time = load, random, add_time

  def map(self, element: tuple[list, list]) -> dict[str, np.ndarray]:
    items, valid = element
    batch = (self.load.random_map(items, np.random.default_rng(0)) if self.random
             else self.load.map(items))
    batch["valid"] = batch["valid"] & np.array(valid)
    return _add_time_axis(batch) if self.add_time else batch


def _require_dir(root: str, what: str, field: str) -> None:
  if not root or not os.path.isdir(root):
    raise DataError(f"{what}: looked in {os.path.abspath(root) if root else '(empty path)'} and "
                    f"found no data folder; point the config at it with --config.{field}=/path "
                    "(see README, 'Data')")


def _render_once(root: str, settings: dict, render: Callable[[str], Any]) -> None:
  """Renders synthetic data into `root` unless a complete copy with the same `settings` is
  there (a `COMPLETE` file holding them). Each render goes into a private temporary folder
  beside `root` and is renamed into place when complete, so a killed render leaves nothing
  at `root`, and of two concurrent renders the first to finish wins (the other discards its
  copy). A copy rendered with other settings is an error, not silently reused."""
  marker = os.path.join(root, "COMPLETE")
  if not os.path.exists(marker):
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.rendering-", dir=parent)
    try:
      render(partial)
      with open(os.path.join(partial, "COMPLETE"), "w", encoding="utf-8") as f:
        json.dump(settings, f)
      if os.path.isdir(root) and not os.path.exists(marker):
        # An incomplete folder left by an older version's render.
        stale = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.stale-", dir=parent)
        os.rename(root, stale)
        shutil.rmtree(stale, ignore_errors=True)
      try:
        os.rename(partial, root)      # atomic; fails if another render got there first
      except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
          raise
    finally:
      shutil.rmtree(partial, ignore_errors=True)
  with open(marker, encoding="utf-8") as f:
    try:
      saved = json.load(f)
    except json.JSONDecodeError:
      saved = "unknown settings"
  if saved != settings:
    raise DataError(f"{root}: synthetic data rendered with {saved}, the config asks for "
                    f"{settings}; delete the folder or set data.root elsewhere")


def _synthetic_config(data) -> synthetic.SyntheticConfig:
  return synthetic.SyntheticConfig(size=data.synthetic.frame_size,
                                   num_frames=data.synthetic.frames_per_video)


def resolve_root(data, workdir: str) -> str:
  if data.kind in ("synthetic_stills", "synthetic_videos") and not data.root:
    return os.path.join(workdir, "synthetic", data.kind.split("_")[1])
  return os.path.expanduser(data.root)


def _stills(data, workdir: str, field: str) -> tuple[list[FaceRecord], list[FaceRecord]]:
  root = resolve_root(data, workdir)
  if data.kind == "synthetic_stills":
    s = data.synthetic
    _render_once(root, s.to_dict(), lambda out: synthetic.write_image_folder_layout(
        out, s.num_identities, s.frames_per_identity, val_identities=s.eval_identities,
        seed=s.seed, config=_synthetic_config(data)))
  _require_dir(root, f"{data.kind} data", field)
  if data.kind == "tfds_faces":
    return (_tfds_faces(data, root, data.train_split, workdir, field),
            _tfds_faces(data, root, data.eval_split, workdir, field))
  train, held_out = _train_and_held_out(data, root, field, read_image_folder)
  if not train or not held_out:
    raise DataError(f"{root}: the training split has {len(train)} images and the held-out one "
                    f"{len(held_out)}; both must be non-empty")
  return train, held_out


def _extra_source(data, field: str) -> list[FaceRecord]:
  """The training records of `data.extra_root` (mixed in by `mixing_weights`), or none."""
  weight_field = field.replace("root", "extra_weight")
  if not 0.0 <= data.extra_weight < 1.0:
    raise DataError(f"--config.{weight_field}={data.extra_weight}: must be in [0, 1)")
  if bool(data.extra_root) != (data.extra_weight > 0):
    raise DataError(f"--config.{field.replace('root', 'extra_root')}={data.extra_root!r} and "
                    f"--config.{weight_field}={data.extra_weight}: set both or neither")
  if not data.extra_root:
    return []
  if data.kind != "image_folder":
    raise DataError(f"--config.{field.replace('root', 'extra_root')}: a second training source "
                    f"is for data.kind='image_folder', not {data.kind!r}")
  root = os.path.expanduser(data.extra_root)
  _require_dir(root, "extra training data", field.replace("root", "extra_root"))
  records, bad = read_image_folder(root, data.num_landmarks, split=data.extra_split or None,
                                   skip_bad_samples=data.skip_bad_samples)
  for message in bad.messages:
    logging.warning("skipped: %s", message)
  return records


def mixing_weights(num_main: int, num_extra: int, data) -> list[float] | None:
  """Expected training samples per record and epoch, for data.root's records followed by the
  extra source's: `samples_per_image` each for the first; the extra records share
  extra_weight / (1 - extra_weight) times as many samples in all. None without extra records."""
  if not num_extra:
    return None
  per_extra = (data.extra_weight / (1 - data.extra_weight) * num_main * data.samples_per_image
               / num_extra)
  return [float(data.samples_per_image)] * num_main + [per_extra] * num_extra


def _tfds_faces(data, data_dir: str, split: str, workdir: str, field: str) -> list[FaceRecord]:
  from data_pipelines.tfds_builders import records_from_tfds  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(data.tfds_name, data_dir=data_dir, split=split)
  except Exception as e:  # pylint: disable=broad-except  (TFDS raises several kinds)
    raise DataError(f"{data_dir}: no TFDS dataset {data.tfds_name!r} with a split {split!r} "
                    f"({type(e).__name__}); prepare it once with "
                    "data_pipelines.tfds_builders.Faces300W(data_dir=..., manual_dir=<image "
                    f"folder>).download_and_prepare(), or fix --config.{field} / "
                    f"--config.{field.replace('root', 'tfds_name')}") from e
  cache = os.path.join(workdir, "tfds_cache", data.tfds_name, split)
  records = records_from_tfds(source, cache)
  bad = [r for r in records if r.landmarks.shape != (data.num_landmarks, 2)]
  if bad:
    raise DataError(f"{data_dir}: {data.tfds_name}/{split} has {bad[0].landmarks.shape[0]} "
                    f"points per face, the config asks for {data.num_landmarks}")
  return records


def _videos(data, workdir: str, field: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
  root = resolve_root(data, workdir)
  if data.kind == "synthetic_videos":
    s = data.synthetic
    _render_once(root, s.to_dict(), lambda out: synthetic.write_300vw_layout(
        out, s.num_identities, seed=s.seed, config=_synthetic_config(data)))
  _require_dir(root, f"{data.kind} data", field)
  if data.kind == "image_sequences":
    return _image_sequences(data, root, field)
  videos, bad = read_300vw(root, num_points=data.num_landmarks,
                           skip_bad_samples=data.skip_bad_samples)
  for message in bad.messages:
    logging.warning("skipped: %s", message)
  if data.kind == "synthetic_videos":
    # The last eval_identities videos (one per identity) are held out.
    n = data.synthetic.eval_identities
    return videos[:-n], videos[-n:]
  split = {**rednet_split(videos), **challenge_split(videos)}
  if data.eval_split not in split or data.train_split not in split:
    raise ValueError(f"300vw splits are {sorted(split)}; got train_split={data.train_split!r}, "
                     f"eval_split={data.eval_split!r}")
  return split[data.train_split], split[data.eval_split]


def _train_and_held_out(data, root: str, field: str, read: Callable) -> tuple[list, list]:
  """An image folder's training split and its held-out one (from `data.eval_root` when set),
  read by `read(root, num_points, split, skip_bad_samples)`; skipped samples are logged."""
  train, bad = read(root, data.num_landmarks, data.train_split or None, data.skip_bad_samples)
  eval_root = os.path.expanduser(data.eval_root) if data.eval_root else root
  if data.eval_root:
    _require_dir(eval_root, f"{data.kind} held-out data", field.replace("root", "eval_root"))
  held_out, bad_eval = read(eval_root, data.num_landmarks, data.eval_split or None,
                            data.skip_bad_samples)
  for message in bad.messages + bad_eval.messages:
    logging.warning("skipped: %s", message)
  return train, held_out


def _image_sequences(data, root: str, field: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
  train, held_out = _train_and_held_out(data, root, field, read_image_sequences)
  for name, videos in (("training", train), ("held-out", held_out)):
    if not any(v.num_frames >= data.clip_length for v in videos):
      raise DataError(f"{root}: no {name} image sequence has data.clip_length="
                      f"{data.clip_length} frames (longest: "
                      f"{max((v.num_frames for v in videos), default=0)})")
  return train, held_out


def _check_clip_length(data) -> None:
  if data.kind in ("image_folder", "synthetic_stills", "tfds_faces") and data.clip_length != 1:
    raise ValueError(f"data.kind={data.kind!r} gives still images: data.clip_length must be 1, "
                     f"got {data.clip_length}")


def _clip_epoch(epoch: int, videos, seed: int, host, kwargs) -> grain.MapDataset:
  return clip_batch_dataset(videos, seed=seed + epoch, host=host, **kwargs)[0]


def _still_clip_epoch(epoch: int, records, seed: int, host, kwargs) -> grain.MapDataset:
  rest = {k: v for k, v in kwargs.items() if k != "batch_size"}
  return still_clip_batch_dataset(records, kwargs["batch_size"], seed=seed + epoch, host=host,
                                  **rest)[0]


def _image_epoch(epoch: int, records, seed: int, host, kwargs) -> grain.MapDataset:
  batch_size, out_size = kwargs["batch_size"], kwargs["out_size"]
  rest = {k: v for k, v in kwargs.items() if k not in ("batch_size", "out_size")}
  dataset = image_batch_dataset(records, out_size, batch_size, seed=seed + epoch, host=host,
                                **rest)[0]
  return dataset.map(_add_time_axis)


def augmentation_of(data) -> Augmentation | None:
  """`data.augmentation` as an Augmentation (None when `data.augment` is off)."""
  if not data.augment:
    return None
  fields = data.augmentation.to_dict()
  fields["scale"] = tuple(fields["scale"])
  return Augmentation(**fields)


def build_stage_data(config, workdir: str, host: tuple[int, int] = (0, 1)) -> StageData:
  """Training and evaluation data of one stage (see the module docstring). `config.eval.data`,
  when its kind is set, is evaluated instead of the training data's held-out split (so stages
  trained on different data can be compared on the same clips)."""
  data = config.data
  if data.kind not in KINDS:
    raise ValueError(f"data.kind must be one of {KINDS}, got {data.kind!r}")
  _check_clip_length(data)
  if data.batch_size % host[1]:
    raise ValueError(f"data.batch_size {data.batch_size} must split evenly over {host[1]} "
                     "processes")
  # Epoch builders are partials of module-level functions: Grain pickles them into workers.
  seed, size = config.seed, data.size
  if data.kind in VIDEO_KINDS:
    train_videos, held_out = _videos(data, workdir, "data.root")
    train_videos, validation = split_validation(train_videos, data.validation_fraction, seed)
    unit_shapes = normalise_to_box(np.concatenate([v.landmarks for v in train_videos]))
    identities = {v.identity for v in train_videos}
    make_epoch = functools.partial(
        _clip_epoch, videos=train_videos, seed=seed, host=host, kwargs=dict(
            clip_length=data.clip_length, batch_size=data.batch_size, out_size=size,
            clips_per_video=data.clips_per_video, box_scale=data.box_scale,
            skip_bad_samples=data.skip_bad_samples, mirror=data.augment and data.clip_flip))
    description = f"{len(train_videos)} training videos, {len(held_out)} held out"
  else:
    train_records, held_out = _stills(data, workdir, "data.root")
    train_records, validation = split_validation(train_records, data.validation_fraction, seed)
    extra_records = _extra_source(data, "data.root")
    weights = mixing_weights(len(train_records), len(extra_records), data)
    train_records = train_records + extra_records
    unit_shapes = normalise_to_box(np.stack([r.landmarks for r in train_records]))
    identities = {r.identity for r in train_records if r.identity}
    if data.kind == "still_clips":
      make_epoch = functools.partial(
          _still_clip_epoch, records=train_records, seed=seed, host=host, kwargs=dict(
              batch_size=data.batch_size, clips_per_image=data.samples_per_image,
              config=StillClipConfig(clip_length=data.clip_length, out_size=size,
                                     box_scale=data.box_scale,
                                     occluder_prob=data.occluder_prob,
                                     flip=data.augment and data.clip_flip),
              skip_bad_samples=data.skip_bad_samples))
    else:
      make_epoch = functools.partial(
          _image_epoch, records=train_records, seed=seed, host=host, kwargs=dict(
              out_size=size, batch_size=data.batch_size, train=True,
              samples_per_image=data.samples_per_image, box_scale=data.box_scale,
              augmentation=augmentation_of(data),
              identity_disjoint=data.identity_disjoint,
              skip_bad_samples=data.skip_bad_samples,
              samples_per_record=weights))
    description = (f"{len(train_records)} training images of {len(identities)} identities"
                   + (f" ({len(extra_records)} from {data.extra_root}, "
                      f"{data.extra_weight:.0%} of the samples)" if extra_records else "")
                   + f", {len(held_out)} held out")
  if validation:
    description += f"; {len(validation)} for validation"

  steps_per_epoch = len(make_epoch(0))
  if steps_per_epoch == 0:
    raise DataError(f"{resolve_root(data, workdir)}: not one full batch of {data.batch_size} "
                    "per epoch")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train = grain.MapDataset.range(total_steps).map(_BatchOfStep(make_epoch, steps_per_epoch))
  if config.eval.data.kind:
    eval_data = build_eval_data(config.eval.data, config.eval, workdir, None, host)
  else:
    eval_data = build_eval_data(data, config.eval, workdir, held_out, host)
  return StageData(train=train, steps_per_epoch=steps_per_epoch, eval=eval_data,
                   mean_shape=mean_shape_in_crop(unit_shapes.mean(0), size, data.box_scale),
                   num_identities=len(identities), description=description,
                   training_shapes=mean_shape_in_crop(
                       unit_shapes[::-(-len(unit_shapes) // MAX_TRAINING_SHAPES)], size,
                       data.box_scale),
                   validation=(build_eval_data(data, config.eval, workdir, validation, host)
                               if validation else None))


def build_eval_data(data, eval_config, workdir: str, held_out: list | None = None,
                    host: tuple[int, int] = (0, 1)) -> grain.MapDataset:
  """Deterministic padded batches of `data`'s held-out split: every image once, centred; or
  `eval_config.clips_per_video` forward clips per held-out video (a fixed seed)."""
  if data.kind not in KINDS:
    raise ValueError(f"eval.data.kind must be one of {KINDS}, got {data.kind!r}")
  _check_clip_length(data)
  videos = data.kind in VIDEO_KINDS
  if held_out is None:
    held_out = (_videos if videos else _stills)(data, workdir, "eval.data.root")[1]
  batch_size = eval_config.batch_size
  if batch_size % host[1]:
    raise ValueError(f"eval.batch_size {batch_size} must split evenly over {host[1]} processes")
  if videos:
    clips = sample_clips(held_out, data.clip_length, eval_config.clips_per_video,
                         seed=12345, both_directions=False)
    # Round robin over the videos, so every batch (and the figures drawn from the first one)
    # shows different people.
    seen: dict[int, int] = {}
    ranked = []
    for clip in clips:
      seen[clip.video] = seen.get(clip.video, -1) + 1
      ranked.append((seen[clip.video], clip.video, clip))
    clips = [clip for _, _, clip in sorted(ranked, key=lambda r: r[:2])]
    load = LoadClipBatch(held_out, data.clip_length, data.size, data.box_scale,
                         identity_index(v.identity for v in held_out), data.skip_bad_samples)
    batches, random, add_time = _padded(clips, batch_size, host), False, False
  elif data.kind == "still_clips":
    load = LoadStillClipBatch(held_out, StillClipConfig(clip_length=data.clip_length,
                                                        out_size=data.size,
                                                        box_scale=data.box_scale,
                                                        occluder_prob=data.occluder_prob),
                              identity_index(r.identity for r in held_out), data.skip_bad_samples)
    batches, random, add_time = _padded(list(range(len(held_out))), batch_size, host), True, False
  else:
    load = LoadImageBatch(held_out, data.size, data.box_scale, None,
                          identity_index(r.identity for r in held_out), data.skip_bad_samples)
    batches, random, add_time = _padded(list(range(len(held_out))), batch_size, host), True, True
  if eval_config.max_batches:
    batches = batches[:eval_config.max_batches]
  return grain.MapDataset.source(batches).map(_EvalBatch(load, random, add_time))
