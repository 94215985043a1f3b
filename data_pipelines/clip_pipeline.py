"""Video clips for the video stage: T-frame clips, forward and time-reversed, batches in which no
identity appears twice (paper section 5.1: 5 clips per batch, 100 random clips per training
video, both directions, no augmentation).

Crop rule for clips: frame t is cropped with the face box of frame t-1's landmarks (frame 0 with
its own), which is what the tracking protocol gives the model at test time.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from data_pipelines.batching import (host_part, identity_disjoint_batches, identity_index,
                                     load_or_mask)
from data_pipelines.face_crops import crop_face, transform_points
from data_pipelines.landmarks import flip_permutation
from data_pipelines.video_300vw import VideoRecord, read_video_frames


@dataclasses.dataclass(frozen=True)
class Clip:
  video: int          # index into the list of VideoRecords
  start: int          # first frame (0-based) in file order
  reverse: bool       # True: frames start+T-1 ... start
  mirror: bool = False   # True: every frame flipped left-right (landmark indices swapped)


def sample_clips(videos: list[VideoRecord], clip_length: int, clips_per_video: int,
                 seed: int, both_directions: bool = True, mirror: bool = False) -> list[Clip]:
  """`clips_per_video` random start frames per video (each also time-reversed, and with
  `mirror` each of those also mirrored)."""
  rng = np.random.default_rng(seed)
  clips = []
  for i, video in enumerate(videos):
    if video.num_frames < clip_length:
      continue
    starts = rng.integers(0, video.num_frames - clip_length + 1, size=clips_per_video)
    for start in starts:
      clips.append(Clip(i, int(start), False))
      if both_directions:
        clips.append(Clip(i, int(start), True))
  if mirror:
    clips += [dataclasses.replace(c, mirror=True) for c in clips]
  return clips


class LoadClipBatch(grain.transforms.Map):
  """Decodes and crops one batch of clips: image uint8 (B, T, S, S, 3), landmarks float32
  (B, T, L, 2), crop_matrix float32 (B, T, 2, 3) (video pixels -> crop pixels of each frame, so
  an evaluator can carry a prediction from one frame's crop to the next), identity int32 (B,),
  valid bool (B,) (False: an undecodable clip skipped under `skip_bad_samples`, zeros in its
  place)."""

  def __init__(self, videos: list[VideoRecord], clip_length: int, out_size: int,
               box_scale: float, identities: dict[str, int], skip_bad_samples: bool = False):
    self.videos, self.clip_length = videos, clip_length
    self.skip_bad_samples = skip_bad_samples
    self.out_size, self.box_scale, self.identities = out_size, box_scale, identities

  def load_clip(self, clip: Clip):
    video = self.videos[clip.video]
    frames = read_video_frames(video, clip.start, self.clip_length)
    points = video.landmarks[clip.start:clip.start + self.clip_length]
    if clip.reverse:
      frames, points = frames[::-1], points[::-1]
    crops, moved, matrices = [], [], []
    # A mirrored clip: video pixels -> crop -> flipped crop (x -> S - 1 - x).
    flip = np.array([[-1.0, 0.0, self.out_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for t in range(self.clip_length):
      box_points = points[max(t - 1, 0)]
      crop, _, matrix = crop_face(frames[t], box_points, self.out_size, self.box_scale,
                                  flip=clip.mirror)
      if clip.mirror:
        matrix = (flip @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
      crops.append(crop)
      moved.append(transform_points(matrix, points[t]))
      matrices.append(matrix)
    if clip.mirror:
      moved = [m[flip_permutation(m.shape[0])] for m in moved]
    return np.stack(crops), np.stack(moved), np.stack(matrices).astype(np.float32)

  def map(self, batch: list[Clip]) -> dict[str, np.ndarray]:
    def zeros(clip):
      num_points = self.videos[clip.video].landmarks.shape[1]
      return (np.zeros((self.clip_length, self.out_size, self.out_size, 3), np.uint8),
              np.zeros((self.clip_length, num_points, 2), np.float32),
              np.tile(np.eye(2, 3, dtype=np.float32), (self.clip_length, 1, 1)))

    loaded, valid = zip(*(load_or_mask(lambda c=c: self.load_clip(c), lambda c=c: zeros(c),
                                       self.skip_bad_samples, "clip") for c in batch))
    images, landmarks, matrices = zip(*loaded)
    return {"image": np.stack(images), "landmarks": np.stack(landmarks),
            "crop_matrix": np.stack(matrices),
            "identity": np.array([self.identities[self.videos[c.video].identity]
                                  for c in batch], np.int32),
            "valid": np.array(valid)}


def clip_batch_dataset(videos: list[VideoRecord], *, clip_length: int = 10, batch_size: int = 5,
                       out_size: int = 128, clips_per_video: int = 100, seed: int = 0,
                       box_scale: float = 1.3, skip_bad_samples: bool = False,
                       host: tuple[int, int] = (0, 1), mirror: bool = False
                       ) -> tuple[grain.MapDataset, int]:
  """Random-access dataset of identity-disjoint clip batches for one epoch (deterministic given
  `seed`; use seed + epoch for the next epoch). `host` = (process index, process count): this
  process loads its part of every batch. Returns (dataset, clips left over)."""
  clips = sample_clips(videos, clip_length, clips_per_video, seed, mirror=mirror)
  identities = identity_index(v.identity for v in videos)
  batches, left_over = identity_disjoint_batches(
      [videos[c.video].identity for c in clips], batch_size, seed)
  batch_clips = host_part([[clips[i] for i in batch] for batch in batches], *host)
  dataset = grain.MapDataset.source(batch_clips).map(
      LoadClipBatch(videos, clip_length, out_size, box_scale, identities, skip_bad_samples))
  return dataset, left_over
