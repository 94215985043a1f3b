r"""Landmarks for every image in a folder, as JSON.

  python experiments/predict.py --input=photos/ --out=landmarks.json
  python experiments/predict.py --checkpoint=/path/to/exported_model --input=... --out=...

Every image under --input (recursively; .jpg .jpeg .png .bmp) gets an entry
`"relative/path.jpg": {"pts": [[x, y], ...], "confidence": c}` with 68 points in 0-based pixels
of the original image and the model's confidence (mean peak landmark probability, 0-1; the
tracker re-detects below 0.5), or `null` when no face was found or the image cannot be read.

Face box: an image with a `.pts` beside it (iBUG format) is cropped the way the model was
trained: the box of those points, made square on its larger side, centred on the box, times
1.3 (the model's box_scale). Other images use OpenCV's Haar face detector (its largest face),
calibrated to the same rule (rednet_jax/inference/detection.py). Problems (unreadable image, malformed
.pts, no face) are reported naming the file; the run goes on and the summary counts them.
Without --checkpoint the model shipped in `rednet_jax/assets/faces300w_cpu` is used.
"""

import dataclasses
import json
import os
import sys

from absl import app, flags

from rednet_jax import cli
from rednet_jax.inference.landmark_model import predict_folder

_INPUT = flags.DEFINE_string("input", None, "Folder of images.", required=True)
_OUT = flags.DEFINE_string("out", None, "JSON file to write.", required=True)
_LOAD_MODEL = cli.define_model_flags()
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Faces per model call.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  model = _LOAD_MODEL()
  results, counts = predict_folder(
      model, _INPUT.value, batch_size=_BATCH_SIZE.value,
      report=lambda message: print(f"warning: {message}", file=sys.stderr))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(results, f)
  print(json.dumps({"out": _OUT.value, **dataclasses.asdict(counts)}))


if __name__ == "__main__":
  cli.run(main)
