"""RED-Net v1 (ECCV 2016) ablations: the number of spatial steps K (the paper uses K = 3 and
reports that a fourth step adds little; its Table 2 compares the recurrent steps with a cascade
of unshared ones, which this project does not build yet) and the temporal (f_tRNN) and identity
(f_CLS) modules (its Table 3: 300-VW NME 5.83 % without f_tRNN, 5.25 % with).

  python experiments/sweep.py --config=quickstart --sweep=rednet_v1_ablations \
    --workdir=/tmp/sweeps/rednet_v1
  python experiments/sweep.py --config=video_stage:cpu --sweep=rednet_v1_ablations:steps ...

Args: '' (both studies), 'steps' (K = 1..4), 'modules' (with / without f_tRNN and the identity
loss, at the config's K). On a curriculum config a field without a stage applies to every stage
(`model.num_steps`); `video.model.use_temporal` switches f_tRNN off in the video stage only
(the only stage that has it). Without the identity module the identity stage trains on the
same stills without f_CLS (the curriculum's length is kept, so only the module differs).
"""

from rednet_jax.training.sweeps import sweep


def get_sweep(arg: str = ""):
  steps = sweep("model.num_steps", [1, 2, 3, 4])
  modules = [{"video.model.use_temporal": False}, {"model.use_identity": False},
             {"model.use_identity": False, "video.model.use_temporal": False}]
  if arg == "steps":
    return steps
  if arg == "modules":
    return [{}] + modules
  if arg == "":
    return steps + modules
  raise ValueError(f"unknown arg {arg!r}; known: '', 'steps', 'modules'")

