r"""How many channels RED-Net v2's 1x1 regression head needs: the best read-out any head of C
input channels could give on real faces.

A 1x1 convolution maps each pixel's C features linearly to the L regression maps, so at every
pixel the L map values lie in a C-dimensional subspace. This script renders the Gaussian
targets of real annotated faces (crops by the training crop rule), finds the best C-dimensional
subspace of their per-pixel L-vectors (SVD), projects the targets onto it and reads landmarks
out of the projection with the model's read-out (peak, centroid in a 5-px window). Whatever the
network learns, a head on C channels does no better than this (on these faces).

  python benchmarks/regression_head_rank.py --root=/path/to/300w --split=train
"""

import numpy as np
from absl import app, flags

from data_pipelines.face_crops import crop_matrix, face_box, transform_points
from rednet_jax.evaluation import protocols

flags.DEFINE_string("root", None, "Image folder with 68-point annotations (e.g. 300-W).",
                    required=True)
flags.DEFINE_string("split", "train", "Manifest split ('': all).")
flags.DEFINE_integer("faces", 256, "Faces used (the first N of the split).")
flags.DEFINE_integer("size", 128, "Input crop side (px); maps are half of it.")
flags.DEFINE_float("box_scale", 1.3, "Crop side / landmark box side (the training crop rule).")
flags.DEFINE_float("sigma", 2.5, "Gaussian sigma in map px (the CPU presets' 2.5).")
flags.DEFINE_list("channels", ["7", "16", "32", "48", "64", "68"], "head input widths C")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rednet_jax.models.readout import peak_positions, windowed_centroid  # pylint: disable=g-import-not-at-top
  from rednet_jax.models.targets import (render_gaussian_heatmaps, to_input_pixels,  # pylint: disable=g-import-not-at-top
                                         to_map_pixels)
  shapes = []
  for _, truth, _ in protocols.image_folder_faces(FLAGS.root, FLAGS.split, 68, FLAGS.faces):
    centre, side = face_box(truth, FLAGS.box_scale)
    shapes.append(transform_points(crop_matrix(centre, side, FLAGS.size), truth))
  if not shapes:
    raise SystemExit(f"{FLAGS.root}: no faces in split {FLAGS.split!r}")
  shapes = np.stack(shapes)
  size = (FLAGS.size // 2, FLAGS.size // 2)
  maps = np.asarray(render_gaussian_heatmaps(to_map_pixels(jnp.asarray(shapes)), size,
                                             FLAGS.sigma, 1.0))
  per_pixel = maps.reshape(-1, maps.shape[-1])                          # (N*h*w, L)
  _, singular, basis = np.linalg.svd(per_pixel, full_matrices=False)
  inter_ocular = np.linalg.norm(shapes[:, 36] - shapes[:, 45], axis=-1)
  print(f"\n{len(shapes)} faces of {FLAGS.root} ({FLAGS.split or 'all'}), {FLAGS.size}-px crops, "
        f"{size[0]}-px maps, sigma {FLAGS.sigma}\n")
  print("| head input channels C | target energy kept (%) | best read-out NME io (%) |")
  print("| --- | --- | --- |")
  for c in (int(c) for c in FLAGS.channels):
    projected = (per_pixel @ basis[:c].T @ basis[:c]).reshape(maps.shape)
    projected = jnp.maximum(jnp.asarray(projected), 0.0)
    points = np.asarray(to_input_pixels(windowed_centroid(projected, peak_positions(projected),
                                                          5)))
    nme = (np.linalg.norm(points - shapes, axis=-1).mean(-1) / inter_ocular).mean() * 100
    kept = (singular[:c] ** 2).sum() / (singular ** 2).sum() * 100
    print(f"| {c} | {kept:.1f} | {nme:.2f} |")


if __name__ == "__main__":
  app.run(main)
