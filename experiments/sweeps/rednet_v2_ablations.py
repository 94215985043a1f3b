"""RED-Net v2 (IJCV 2018) ablations of the spatial recurrence.

Table 6 ('steps'): single-step detection, single-step regression, two-step detection +
detection, two-step detection + regression (the paper's model). Paper, AFLW common / challenging
NME %: 6.05 / 8.14, 5.92 / 7.87, 5.86 / 7.33, 5.71 / 6.97.
Table 7 ('cascade'): the recurrent model (shared weights) vs a cascade of two separately
weighted networks of the same architecture (here trained jointly, end to end). Paper: cascade
6.81 % / 468 MB, recurrent 6.33 % / 257 MB. The sweep's table reports each run's parameter count
(`benchmarks/model_step.py` measures memory).

At CPU size on real faces (300-W, the schedule of the v1-v2 comparison in the README; the
two-step variants take about 50 min each on 2 cores, the single-step ones about half, the
cascade more; a stopped sweep resumes where it stopped):

  python experiments/sweep.py --config=rednet_v2_faces300w:resnet --sweep=rednet_v2_ablations \
    --workdir=$HOME/sweeps/rednet_v2 --config.data.root=$HOME/data/300w
"""

from rednet_jax.training.sweeps import sweep


def get_sweep(arg: str = ""):
  steps = sweep("model.steps", [("detection",), ("regression",), ("detection", "detection"),
                                ("detection", "regression")])
  cascade = sweep("model.share_weights", [True, False])
  if arg == "steps":
    return steps
  if arg == "cascade":
    return cascade
  if arg == "":
    return steps + cascade[1:]          # the recurrent det + reg model is in both
  raise ValueError(f"unknown arg {arg!r}; known: '', 'steps', 'cascade'")
