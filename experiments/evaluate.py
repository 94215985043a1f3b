r"""Evaluates an exported model under the papers' protocols and prints per-subset tables.

  # Images (ytf68 / 300-W folders): one crop per face from the annotation's box.
  python experiments/evaluate.py --kind=image_folder --root=/data/ytf68 --split=val --out=/tmp/ev
  python experiments/evaluate.py --kind=image_folder --root=/data/300w/test --out=/tmp/ev300w
  # 300-VW test videos, tracking protocol (box and z_0 of frame t from the prediction of t-1).
  python experiments/evaluate.py --kind=300vw --root=/data/300vw --videos=test --out=/tmp/ev300vw
  # Clips made from held-out stills, every clip crossed by an occluder, tracking protocol.
  python experiments/evaluate.py --kind=still_clips --root=/data/ytf68 --split=val \
    --occluder_prob=1 --out=/tmp/ev_occluded
  # Image sequences (ytf68: 3 frames per video), tracking protocol, a row per frame position.
  python experiments/evaluate.py --kind=image_sequences --root=/data/ytf68 --split=val \
    --out=/tmp/ev_sequences
  # AFLW (7 points; a 68-point model is compared on its 7 matching points), yaw bins.
  python experiments/evaluate.py --kind=aflw --root=/data/aflw/data/aflw.sqlite \
    --first_box=detector --out=/tmp/evaflw
  # 300-W in the `300w` layout (lfpw/, helen/ with train/test manifest splits): the "common"
  # test subset, with lfpw and helen rows.
  python experiments/evaluate.py --kind=image_folder --root=/data/300w --split=test --out=/tmp/ev
  # FGNET Talking Face, the papers' tracking protocol on RED-Net's 7 points: 1,000 frames in
  # order, frame 0 from the detector, every later one from the previous prediction.
  python experiments/evaluate.py --kind=talking_face --root=/data/talking_face \
    --first_box=detector --out=/tmp/evtf

Subsets: 300-VW categories 1/2/3 and the RED-Net common/challenging split; 300-W
lfpw/helen/ibug and common/challenging (full = 'all'); AFLW |yaw| 0-15/15-30/30-45/45-90; image
sequences frame_0/frame_1/... (position in the sequence); the manifest split. Metrics: NME
normalised by inter-ocular (outer eye corners), inter-pupil (eye centres) and box diagonal, in
%; failure rate and CED AUC at 8 % and 10 % (inter-ocular); per-group NME. Videos (300vw,
still_clips, talking_face, image_sequences) also get jitter within continuous tracks
(frame-to-frame acceleration / inter-ocular distance, %) of the scored points, of all the
model's points, and of the ground truth's own points, and a second table with the One-Euro
stabiliser on (`rednet_jax.inference.stabiliser`; it smooths the reported points, the tracking
itself runs on the raw ones). Faces whose files are missing or unreadable are skipped and counted
(`bad_samples`; --noskip_bad_samples makes them errors). Writes `results.json`, `results.md`,
`ced.png` and, for videos, `error_over_frames.png` into --out.
"""

import json
import os
import sys

from absl import app, flags

from rednet_jax import cli
from rednet_jax.evaluation import protocols
from rednet_jax.evaluation import reports
from rednet_jax.inference.stabiliser import OneEuroSettings

_KIND = flags.DEFINE_enum("kind", None, ["image_folder", "300vw", "still_clips", "aflw",
                                          "talking_face", "image_sequences"],
                          "What --root holds.", required=True)
_ROOT = flags.DEFINE_string("root", None, "Dataset folder (AFLW: aflw.sqlite).", required=True)
_OUT = flags.DEFINE_string("out", None, "Folder for results.json, results.md, ced.png.",
                           required=True)
_LOAD_MODEL = cli.define_model_flags()
_SPLIT = flags.DEFINE_string("split", "", "image_folder / still_clips / image_sequences: "
                             "manifest split ('': all).")
_VIDEOS = flags.DEFINE_string("videos", "test", "300vw: 'test' (categories 1-3), 'rednet_test' "
                              "(RED-Net's 24 common + challenging), 'all', or ids 'a,b,c'.")
_FIRST_BOX = flags.DEFINE_enum("first_box", "annotation", ["annotation", "detector"],
                               "Box of an image / a video's first frame.")
_MIN_CONFIDENCE = flags.DEFINE_float("min_confidence", 0.0, "Videos: re-detect below this "
                                     "confidence (0: never, the papers' protocol).")
_NO_CARRY = flags.DEFINE_bool("reset_temporal_state", False, "Videos: zero the LSTM state at "
                              "every frame (ablation of the temporal module).")
_OCCLUDER_PROB = flags.DEFINE_float("occluder_prob", 0.5, "still_clips: share of occluded clips.")
_CLIP_SIZE = flags.DEFINE_integer("clip_frame_size", 128, "still_clips: frame side in pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate only the first N images / videos (0: all; "
                              "talking_face: frames).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad_samples", True, "Images: leave out faces whose image or "
                              ".pts is missing or unreadable, and count them (else an error).")
_TF_ORIGIN = flags.DEFINE_integer("talking_face_origin", 0, "talking_face: whether its points "
                                  "are 0- or 1-based pixels (the release does not say).")
_FPS = flags.DEFINE_float("fps", 25.0, "Videos: frame rate the stabiliser assumes.")
_MIN_CUTOFF = flags.DEFINE_float("stabiliser_min_cutoff", OneEuroSettings.min_cutoff_hz,
                                 "One-Euro cut-off of a still landmark (Hz).")
_BETA = flags.DEFINE_float("stabiliser_beta", OneEuroSettings.beta, "One-Euro speed coefficient "
                           "(per face size / s).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  model = _LOAD_MODEL()
  root = os.path.expanduser(_ROOT.value)
  limit = _LIMIT.value
  bad_samples = [] if _SKIP_BAD.value else None
  if _KIND.value == "image_folder":
    faces = protocols.image_folder_faces(root, _SPLIT.value, model.num_landmarks, limit,
                                         bad_samples)
  elif _KIND.value == "aflw":
    faces = protocols.aflw_faces(root, limit)
  elif _KIND.value == "300vw":
    videos = protocols.videos_300vw(root, _VIDEOS.value, limit)
  elif _KIND.value == "image_sequences":
    videos = protocols.image_sequence_videos(root, _SPLIT.value, model.num_landmarks, limit)
  elif _KIND.value == "talking_face":
    videos = protocols.talking_face_video(root, _TF_ORIGIN.value, limit)
  else:
    videos = protocols.still_clip_videos(root, _SPLIT.value, model.num_landmarks,
                                         _OCCLUDER_PROB.value, _CLIP_SIZE.value, limit)
  is_video = _KIND.value not in ("image_folder", "aflw")
  if is_video:
    result = protocols.evaluate_videos(model, videos, _FIRST_BOX.value, _MIN_CONFIDENCE.value,
                                       carry_state=not _NO_CARRY.value)
  else:
    result = protocols.evaluate_images(model, faces, _FIRST_BOX.value,
                                       skip_bad_samples=_SKIP_BAD.value)
  result.bad_samples[:0] = bad_samples or []
  for message in result.bad_samples:
    print(f"skipped: {message}", file=sys.stderr)
  rows = protocols.tables(result, protocols.SUBSET_ORDER)
  os.makedirs(_OUT.value, exist_ok=True)
  settings = {"checkpoint": model.path, "kind": _KIND.value, "root": root, "split": _SPLIT.value,
              "first_box": _FIRST_BOX.value, "reset_temporal_state": _NO_CARRY.value,
              "readout": model.description["model"].get("readout", "cluster_centroid"),
              "occluder_prob": _OCCLUDER_PROB.value if _KIND.value == "still_clips" else None,
              "command": " ".join(sys.argv)}
  report = {"settings": settings, "subsets": rows, "bad_samples": result.bad_samples}
  text = protocols.markdown_table(rows)
  if is_video:
    stabiliser = OneEuroSettings(_MIN_CUTOFF.value, _BETA.value)
    smooth = result.stabilised(stabiliser, _FPS.value)
    report["stabilised"] = protocols.tables(smooth, protocols.SUBSET_ORDER)
    report["settings"]["stabiliser"] = {"min_cutoff_hz": stabiliser.min_cutoff_hz,
                                        "beta": stabiliser.beta, "fps": _FPS.value}
    text += ("\n\nWith the One-Euro stabiliser (min cut-off "
             f"{stabiliser.min_cutoff_hz} Hz, beta {stabiliser.beta}, {_FPS.value} frames/s):\n\n"
             + protocols.markdown_table(report["stabilised"]))
    reports.error_over_frames_plot(
        {"raw": 100 * protocols.errors_by_subset(result)["all"],
         "stabilised": 100 * protocols.errors_by_subset(smooth)["all"]},
        os.path.join(_OUT.value, "error_over_frames.png"), _KIND.value)
  if is_video and "frames_per_second" in rows["all"]:
    text += (f"\n\nTracking speed: {rows['all']['frames_per_second']:.1f} frames/s "
             "(Tracker.update after each video's first frame; decoding excluded).")
  if result.bad_samples:
    text += f"\n\n{len(result.bad_samples)} bad sample(s) skipped (listed in results.json)."
  with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(_OUT.value, "results.md"), "w", encoding="utf-8") as f:
    f.write(f"`{settings['command']}`\n\n{text}\n")
  reports.ced_plot(protocols.errors_by_subset(result), os.path.join(_OUT.value, "ced.png"))
  print(text)


if __name__ == "__main__":
  cli.run(main)
