"""Trained models outside training: a small exported format, batched prediction from face boxes,
and the streaming `Tracker`.

An exported model is a folder with `model.json` (the model's config fields, crop size, crop
rule, mean shape, and what it was trained on) and `variables/` (an Orbax checkpoint of params
and BatchNorm statistics only, no optimiser state). `load_model()` without a path loads the
checkpoint shipped with the package (`rednet_jax/assets/faces300w_cpu`, see its MODEL_CARD.md).

Crop rule (as in training, `data_pipelines.face_crops`): a square of side `box_scale` x the
face's extent (the larger side of the landmarks' box), centred on that box, resized to
`size` x `size`. A face box here is (centre (x, y), extent) in 0-based pixels of the image.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.resources
import json
import os
import time
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from data_pipelines.face_crops import crop_matrix, face_box, transform_points
from rednet_jax.training import checkpoints
from rednet_jax.inference.detection import Face, FaceDetector
from rednet_jax.models import MODELS, build_model, conv
from rednet_jax.inference.stabiliser import OneEuroFilter

MODEL_FILE, VARIABLES_DIR = "model.json", "variables"
DEFAULT_MODEL_DIR = str(importlib.resources.files("rednet_jax") / "assets" / "faces300w_cpu")
# Below this confidence a tracked face counts as lost and the detector looks again, for models
# whose model.json gives no `min_confidence`. Chosen on the first shipped model (ytf68_cpu)
# from its mean-shape predictions (ytf68 val, p5 / p50 / p95; benchmarks/face_presence.py now
# measures this): faces 0.61 / 0.73 / 0.78; the box moved a face width sideways
# 0.26 / 0.39 / 0.52; the face at a third of the box 0.31 / 0.45 / 0.58; noise 0.33 / 0.43 /
# 0.53.
DEFAULT_MIN_CONFIDENCE = 0.5


def _description(model_fields: dict, size: int, box_scale: float, mean_shape: np.ndarray,
                 info: dict | None) -> dict:
  description = {"model": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in dict(model_fields).items()},
                 "size": int(size), "box_scale": float(box_scale),
                 "mean_shape": np.asarray(mean_shape, np.float64).round(4).tolist(),
                 "info": info or {}}
  build_model(description["model"])            # fails here, not at load time, on a bad field
  return description


def save_model(out_dir: str, model_fields: dict, variables: Any, size: int, box_scale: float,
               mean_shape: np.ndarray, info: dict | None = None) -> str:
  """Writes an exported model folder (module docstring) from its parts."""
  description = _description(model_fields, size, box_scale, mean_shape, info)
  os.makedirs(out_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.path.join(out_dir, VARIABLES_DIR)),
                    jax.tree.map(np.asarray, variables), force=True)
  checkpointer.wait_until_finished()
  with open(os.path.join(out_dir, MODEL_FILE), "w", encoding="utf-8") as f:
    json.dump(description, f, indent=1)
  return out_dir


def _model_parts(checkpoint_dir: str, stage_config, info: dict | None):
  saved = checkpoints.restore_leaves(checkpoint_dir, ("variables", "mean_shape"))
  model_fields = dict(stage_config["model"])
  # Heads that only train (RED-Net's f_CLS, f_REG) are switched off and their variables left out.
  system = MODELS[model_fields["name"]]
  variables = {collection: {k: v for k, v in tree.items()
                            if k not in system.training_only_modules}
               for collection, tree in saved["variables"].items()}
  model_fields.update(system.inference_overrides)
  info = {**(info or {}), "checkpoint_step": int(saved["step"])}
  return (model_fields, variables, stage_config["data"]["size"],
          stage_config["data"]["box_scale"], saved["mean_shape"], info)


def run_stage_parts(workdir: str, stage: str | None = None, config=None):
  """(model fields, variables, size, box_scale, mean shape, info) of a stage of a training run,
  from the config the stage recorded (`<workdir>/<stage>/config.json`). `stage` may be left out
  when the workdir holds one stage. `config` (a stage config), when given, must agree with the
  record (ConfigMismatchError naming the fields otherwise); it is needed only for a stage
  trained before records existed."""
  from rednet_jax.training import configs
  from rednet_jax.training import run_records  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if stage is None:
    found = sorted(n for n in (os.listdir(workdir) if os.path.isdir(workdir) else [])
                   if os.path.isdir(os.path.join(workdir, n, "checkpoints")))
    if len(found) != 1:
      raise configs.ConfigError(f"--workdir={workdir} holds the stages {found}; name one with "
                                "--stage")
    stage = found[0]
  stage_dir = os.path.join(workdir, stage)
  if not os.path.isdir(os.path.join(stage_dir, "checkpoints")):
    raise configs.ConfigError(f"{stage_dir}: no checkpoints/ folder; --workdir and --stage must "
                              "name a stage of a training run")
  record = run_records.read_record(stage_dir)
  if record is None and config is None:
    raise configs.ConfigError(f"{stage_dir} has no {run_records.CONFIG_FILE} (trained by an older "
                              "version): pass the config it was trained with (--config=...)")
  if record is not None and config is not None:
    diffs = configs.differences(record["config"], config)
    if diffs:
      raise run_records.ConfigMismatchError(
          f"{stage_dir} was trained with another config than the one given:\n"
          + "\n".join(f"  {f}: {a!r} in the run, {b!r} given" for f, a, b in diffs)
          + "\nLeave out --config: the run's own config is read from its folder.")
  stage_config = record["config"] if record is not None else configs.json_roundtrip(config)
  held_out = {}
  if os.path.exists(os.path.join(stage_dir, "final.json")):
    with open(os.path.join(stage_dir, "final.json"), encoding="utf-8") as f:
      held_out = json.load(f)
  runs = []
  if os.path.exists(os.path.join(stage_dir, run_records.RUNS_FILE)):
    with open(os.path.join(stage_dir, run_records.RUNS_FILE), encoding="utf-8") as f:
      runs = [json.loads(line) for line in f if line.strip()]
  info = {"stage": stage, "run": stage_dir, "run_id": record and record["run_id"],
          "held_out": held_out, "config": stage_config, "training_runs": runs}
  return _model_parts(os.path.join(stage_dir, "checkpoints"), stage_config, info)


def export_run_stage(workdir: str, stage: str | None, out_dir: str, config=None,
                     readout: dict | None = None) -> str:
  """Exports a stage of a training run (`run_stage_parts`) into `out_dir`. `readout`: values of
  the system's `readout_fields` to store instead of the trained ones (recorded in the model's info as
  `readout_at_export`, beside the training config that still holds the trained values)."""
  fields, variables, size, box_scale, mean_shape, info = run_stage_parts(workdir, stage, config)
  chosen = {k: v for k, v in (readout or {}).items() if v is not None}
  if chosen:
    fields = _with_readout({"model": fields}, chosen)["model"]
    info = {**info, "readout_at_export": chosen}
  return save_model(out_dir, fields, variables, size, box_scale, mean_shape, info)


def _with_readout(description: dict, readout: dict | None) -> dict:
  """The description with other values of the system's `readout_fields` (fields that change
  how landmarks are read from the responses, not the weights)."""
  allowed = MODELS[description["model"]["name"]].readout_fields
  unknown = set(readout or {}) - set(allowed)
  if unknown:
    raise ValueError(f"only {allowed} may be changed at load time, got {sorted(unknown)}")
  description = dict(description)
  description["model"] = {**description["model"],
                          **{k: v for k, v in (readout or {}).items() if v is not None}}
  return description


def load_run_stage(workdir: str, stage: str | None = None, readout: dict | None = None
                   ) -> "LandmarkModel":
  """A stage of a training run as a LandmarkModel, without writing an export. `readout`:
  values of the system's `readout_fields` to use instead of the trained ones."""
  fields, variables, size, box_scale, mean_shape, info = run_stage_parts(workdir, stage)
  description = _with_readout(_description(fields, size, box_scale, mean_shape, info), readout)
  return LandmarkModel(description, jax.tree.map(jnp.asarray, variables), info["run"])


def load_model(path: str | None = None, readout: dict | None = None) -> "LandmarkModel":
  """An exported model folder (default: the shipped checkpoint). `readout`: values of
  the system's `readout_fields` to use instead of the exported ones."""
  path = os.path.abspath(os.path.expanduser(path or DEFAULT_MODEL_DIR))
  model_file = os.path.join(path, MODEL_FILE)
  if not os.path.isfile(model_file):
    raise FileNotFoundError(f"{path}: not an exported model (no {MODEL_FILE}); export a training "
                            "checkpoint with experiments/export.py")
  with open(model_file, encoding="utf-8") as f:
    description = json.load(f)
  variables = ocp.StandardCheckpointer().restore(os.path.join(path, VARIABLES_DIR))
  return LandmarkModel(_with_readout(description, readout), jax.tree.map(jnp.asarray, variables),
                       path)


class LandmarkModel:
  """A loaded model: crops faces by the training crop rule and predicts their landmarks."""

  def __init__(self, description: dict[str, Any], variables: Any, path: str = ""):
    self.description, self.variables, self.path = description, variables, path
    fields = dict(description["model"])
    self.module = build_model(fields)
    self.size = int(description["size"])
    self.box_scale = float(description["box_scale"])
    self.mean_shape = np.asarray(description["mean_shape"], np.float32)
    self.num_landmarks = self.mean_shape.shape[0]
    self.uses_temporal = self.module.initial_carry(1) is not None
    # Tracking confidence below this: the Tracker re-detects (benchmarks/face_presence.py).
    self.min_confidence = float(description.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
    # Tracker.face_score below this: no face (benchmarks/face_presence.py writes it).
    self.presence_threshold = float(description.get("presence_threshold",
                                                    DEFAULT_PRESENCE_THRESHOLD))

    def apply(variables, crops, init_points, carry, maps):
      out = self.module.apply(variables, self.module.normalise(crops)[:, None],
                              init_points[:, None], carry, train=False)
      result = {"steps": out["points"][:, :, 0],                         # (K, B, L, 2)
                "confidence": self.module.confidence(out)[:, 0], "carry": out["carry"]}
      if maps:
        result["step_maps"] = self.module.step_maps(out)[:, :, 0]
      return result

    # One compiled function per batch shape and `maps`; tracking (maps=False) leaves the
    # response images out of the computation.
    self._apply = jax.jit(apply, static_argnames="maps",
                          compiler_options=conv.cpu_compiler_options(jax.default_backend()))

  def initial_carry(self, batch_size: int = 1):
    return self.module.initial_carry(batch_size)

  def crop(self, image: np.ndarray, centre: np.ndarray, extent: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """(crop uint8 (size, size, 3), 2x3 matrix image px -> crop px) of the face box."""
    matrix = crop_matrix(np.asarray(centre, np.float64), extent * self.box_scale, self.size)
    crop = cv2.warpAffine(np.asarray(image), matrix, (self.size, self.size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, matrix

  def run_crops(self, crops: np.ndarray, init_points: np.ndarray | None = None, carry=None,
                maps: bool = False) -> dict[str, Any]:
    """crops uint8 (B, size, size, 3); init_points z_0 (B, L, 2) in crop pixels (None: the
    mean shape). Returns steps (K, B, L, 2) crop px, confidence (B,) (`System.confidence`),
    carry (the LSTM state to pass with the next frame of the same faces) and, with `maps`,
    step_maps (K, B, h, w) (`System.step_maps`)."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
      raise ValueError(f"crops must be (B, {self.size}, {self.size}, 3), got {crops.shape}")
    if init_points is None:
      init_points = np.broadcast_to(self.mean_shape, (len(crops), *self.mean_shape.shape))
    if carry is None:
      carry = self.initial_carry(len(crops))
    return jax.device_get(self._apply(self.variables, crops, np.asarray(init_points, np.float32),
                                      carry, maps=maps))

  def predict(self, images: list[np.ndarray], boxes: list[tuple[np.ndarray, float]],
              batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (N, L, 2) in 0-based pixels of each image and confidences (N,), one face box
    (centre, extent) per image, z_0 the mean shape. Runs fixed-size batches (one compile)."""
    points, confidence = [], []
    for start in range(0, len(images), batch_size):
      chunk = list(zip(images[start:start + batch_size], boxes[start:start + batch_size]))
      crops, matrices = zip(*(self.crop(image, *box) for image, box in chunk))
      crops = np.stack(crops + (np.zeros_like(crops[0]),) * (batch_size - len(chunk)))
      out = self.run_crops(crops)
      for i, matrix in enumerate(matrices):
        points.append(transform_points(cv2.invertAffineTransform(matrix), out["steps"][-1, i]))
        confidence.append(float(out["confidence"][i]))
    return (np.stack(points) if points else np.zeros((0, self.num_landmarks, 2), np.float32),
            np.asarray(confidence, np.float32))


@dataclasses.dataclass
class TrackerCounts:
  frames: int = 0
  detections: int = 0          # detector runs that found a face
  lost: int = 0                # tracked frames whose confidence fell below the threshold
  no_face: int = 0             # frames returned without landmarks
  verifications: int = 0       # re-scorings of a tracked face (verify_every, face_score)
  verification_failed: int = 0  # ... below the presence threshold: the track was dropped
  scene_cuts: int = 0          # frames that differed from the one before like a cut


class PartTimer:
  """Wall-clock seconds spent in named parts of a loop: `with timer("model"): ...`; the
  tracker's and track_video's split of the time per frame."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)

  @contextlib.contextmanager
  def __call__(self, part: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[part] += time.perf_counter() - start

  def clear(self) -> None:
    self.seconds.clear()


# Face presence (`Tracker(verify_every=...)`): every N frames and at every scene cut the tracked
# box is scored from the mean shape (`Tracker.face_score`); below the model's presence
# threshold the track is dropped. A scene cut is a mean absolute difference above this (grey
# levels, 0-255) between 32 x 24 thumbnails of consecutive frames (docs/protocols.md).
SCENE_CUT_THRESHOLD = 20.0
# Presence threshold of models whose model.json does not give one (calibrated on the first
# shipped model with benchmarks/face_presence.py).
DEFAULT_PRESENCE_THRESHOLD = 0.5


class Tracker:
  """Streaming landmark tracking, one frame at a time:

    tracker = Tracker()                       # the shipped model and OpenCV's Haar detector
    for frame in frames:                      # RGB uint8 (H, W, 3)
      points, confidence = tracker.update(frame)

  The first frame's face comes from the detector (or `update(frame, face=...)`); every later
  frame is cropped around the previous frame's landmarks, which are also its z_0, and the
  LSTM carry goes from frame to frame. When the confidence drops below `min_confidence` the
  tracker runs the detector on that frame and restarts from its box (fresh carry). With
  `verify_every` = N > 0, every N-th frame and every frame that looks like a scene cut, the
  tracked box is re-scored from the mean shape (`face_score`); below `presence_threshold` the
  track is dropped and the whole frame searched, and only detections that score as a face
  start a track (none: None). `stabiliser` smooths the reported points.
  `points` is (L, 2) float32 in 0-based frame pixels, or None when no face was found."""

  def __init__(self, model: LandmarkModel | None = None, detector: FaceDetector | None = None,
               min_confidence: float | None = None,
               stabiliser: OneEuroFilter | None = None, verify_every: int = 0,
               presence_threshold: float | None = None,
               scene_cut_threshold: float = SCENE_CUT_THRESHOLD):
    self.model = model or load_model()
    self.detector = detector or FaceDetector()
    # None: the model's own (model.json `min_confidence`, else DEFAULT_MIN_CONFIDENCE).
    self.min_confidence = self.model.min_confidence if min_confidence is None else min_confidence
    # Smooths what update() returns; crops and z_0 follow the raw prediction (`raw_points`).
    self.stabiliser = stabiliser
    # 0: never check the tracked face (the papers' tracking protocol).
    self.verify_every, self.scene_cut_threshold = verify_every, scene_cut_threshold
    self.presence_threshold = (self.model.presence_threshold if presence_threshold is None
                               else presence_threshold)
    self.counts = TrackerCounts()
    # Seconds per part of update(): scene_cut, verify (face_score), detect, crop, model,
    # uncrop (points back to frame pixels), stabilise.
    self.timer = PartTimer()
    self._thumbnail = None
    self.reset()

  def reset(self) -> None:
    """Forgets the face: the next frame starts from a detection."""
    self._points, self._carry, self._since_verified = None, None, 0
    if self.stabiliser is not None:
      self.stabiliser.reset()

  def _scene_cut(self, frame: np.ndarray) -> bool:
    grey = cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2GRAY)
    thumbnail = cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    previous, self._thumbnail = self._thumbnail, thumbnail
    cut = previous is not None and float(np.abs(thumbnail - previous).mean()) > \
        self.scene_cut_threshold
    self.counts.scene_cuts += cut
    return cut

  def face_score(self, frame: np.ndarray, centre: np.ndarray, extent: float) -> float:
    """Face-presence score of a face box: the model's confidence on it from the mean shape with
    a fresh LSTM state. While tracking, z_0 is the previous shape, whose feedback primes a
    face-like response even on background; from the mean shape, faces and non-faces separate
    (benchmarks/face_presence.py)."""
    crop, _ = self.model.crop(frame, centre, extent)
    return float(self.model.run_crops(crop[None])["confidence"][0])

  @property
  def raw_points(self) -> np.ndarray | None:
    """The model's own landmarks for the last frame (before the stabiliser), or None."""
    return self._points

  def _report(self, points: np.ndarray) -> np.ndarray:
    if self.stabiliser is None:
      return points
    with self.timer("stabilise"):
      return self.stabiliser(points)

  def forget_carry(self) -> None:
    """Keeps the face but zeroes the LSTM state (an ablation of the temporal module)."""
    self._carry = None

  def _run(self, frame, centre, extent, previous_points, carry):
    with self.timer("crop"):
      crop, matrix = self.model.crop(frame, centre, extent)
      init = None if previous_points is None else transform_points(matrix,
                                                                   previous_points)[None]
    with self.timer("model"):
      out = self.model.run_crops(crop[None], init, carry)
    with self.timer("uncrop"):
      points = transform_points(cv2.invertAffineTransform(matrix), out["steps"][-1, 0])
    return points, float(out["confidence"][0]), out["carry"]

  def update(self, frame: np.ndarray, face: Face | None = None
             ) -> tuple[np.ndarray | None, float]:
    self.counts.frames += 1
    with self.timer("scene_cut"):
      cut = self._scene_cut(frame) if self.verify_every else False
    if face is None and self._points is not None and self.verify_every:
      self._since_verified += 1
      if cut or self._since_verified >= self.verify_every:
        self._since_verified = 0
        self.counts.verifications += 1
        with self.timer("verify"):
          score = self.face_score(frame, *face_box(self._points, 1.0))
        if score < self.presence_threshold:
          self.counts.verification_failed += 1
          self.reset()                          # look for a face anywhere in this frame
    if face is None and self._points is not None:
      centre, extent = face_box(self._points, 1.0)
      points, confidence, carry = self._run(frame, centre, extent, self._points, self._carry)
      if confidence >= self.min_confidence and _trackable(points):
        self._points, self._carry = points, carry
        return self._report(points), confidence
      self.counts.lost += 1
    if face is None:
      # With presence checks on, a detection counts only if the model scores it as a face (the
      # cascade also fires on hair and dark background); largest face first.
      with self.timer("detect"):
        candidates = self.detector.detect(frame)
      for candidate in candidates:
        points, confidence, carry = self._run(frame, candidate.centre, candidate.side, None, None)
        if not self.verify_every or confidence >= self.presence_threshold:
          break
      else:
        self.reset()
        self.counts.no_face += 1
        return None, 0.0
      self.counts.detections += 1
    else:
      points, confidence, carry = self._run(frame, face.centre, face.side, None, None)
    if not _trackable(points):       # e.g. a model that collapsed every point onto one
      self.reset()
      self.counts.no_face += 1
      return None, 0.0
    self._points, self._carry = points, carry
    if self.stabiliser is not None:
      self.stabiliser.reset()                 # a new track: no smoothing across the jump
    return self._report(points), confidence


def _trackable(points: np.ndarray) -> bool:
  """A shape the next frame can be cropped around: finite, spanning more than a pixel."""
  return bool(np.all(np.isfinite(points))) and float(np.ptp(points, axis=0).max()) > 1.0


@dataclasses.dataclass
class FolderCounts:
  images: int = 0
  from_pts: int = 0            # cropped with the box of the .pts beside the image
  from_detector: int = 0
  no_face: int = 0             # the detector found nothing: null in the output
  unreadable: int = 0          # not decodable as an image: null in the output
  bad_pts: int = 0             # a .pts beside it that cannot be read: null in the output


def predict_folder(model: LandmarkModel, folder: str, detector: FaceDetector | None = None,
                   batch_size: int = 32, progress: bool = True, report=print
                   ) -> tuple[dict[str, dict | None], FolderCounts]:
  """Landmarks of every image under `folder` (recursively): {relative path: {"pts": [[x, y] *
  L] in 0-based pixels of the original image, "confidence": mean peak landmark probability},
  or None}. An image with a `.pts` beside it is cropped with the box of those points (the
  training crop rule, see the module docstring); others with the detector's largest face. Bad
  input is reported through `report` (naming the file) and counted; the run goes on. The
  progress bar counts images predicted (or given up on), not images loaded."""
  from data_pipelines.image_folders import IMAGE_EXTENSIONS, load_image_rgb  # pylint: disable=g-import-not-at-top
  from data_pipelines.pts import DataError, read_pts  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such folder")
  paths = sorted(os.path.relpath(os.path.join(d, f), folder)
                 for d, _, files in os.walk(folder) for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  detector = detector or FaceDetector()
  counts, results = FolderCounts(images=len(paths)), {}
  pending: list[tuple[str, np.ndarray, tuple[np.ndarray, float]]] = []

  bar = tqdm.tqdm(total=len(paths), disable=not progress, unit="image")

  def done(name, result):
    results[name] = result
    bar.update(1)

  def flush():
    if pending:
      points, confidence = model.predict([p[1] for p in pending], [p[2] for p in pending],
                                         batch_size)
      for (name, _, _), p, c in zip(pending, points, confidence):
        done(name, {"pts": np.round(p.astype(np.float64), 3).tolist(),
                    "confidence": round(float(c), 4)})
      pending.clear()

  for name in paths:
    path = os.path.join(folder, name)
    try:
      image = load_image_rgb(path)        # a truncated JPEG is unreadable, not "no face"
    except DataError as e:
      report(f"{e}; null in the output")
      counts.unreadable += 1
      done(name, None)
      continue
    pts_path = os.path.splitext(path)[0] + ".pts"
    if os.path.exists(pts_path):
      try:
        # The model's own point count: a 67-point file is a broken annotation, not a box.
        box = face_box(read_pts(pts_path, model.num_landmarks), 1.0)
      except (DataError, ValueError) as e:
        report(f"{pts_path}: {e}; null in the output")
        counts.bad_pts += 1
        done(name, None)
        continue
      counts.from_pts += 1
    else:
      faces = detector.detect(image)
      if not faces:
        report(f"{path}: no face found; null in the output")
        counts.no_face += 1
        done(name, None)
        continue
      box = (faces[0].centre, faces[0].side)
      counts.from_detector += 1
    pending.append((name, image, box))
    if len(pending) == batch_size:
      flush()
  flush()
  bar.close()
  return {name: results[name] for name in paths}, counts
