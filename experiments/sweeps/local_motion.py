"""The six local-motion models of Belmonte et al. (WACV 2019), each at its CPU-budget preset of
`experiments/configs/local_motion.py` (same data, optimiser and schedule; epochs as about 45
minutes on two cores give each, at most 100), evaluated on 300-W common:

  python experiments/sweep.py --config=local_motion --sweep=local_motion \
    --workdir=$HOME/sweeps/local_motion --config.data_root=$HOME/data/300w \
    --config.sequences_root=$HOME/data/ytf68

About 5.5 hours on 2 cores (each model: 300-W still clips, then one pass over ytf68's real
3-frame sequences); a stopped sweep resumes where it stopped. Pairs (2D vs 3D, with and
without late connectivity) answer the paper's question: does early temporal connectivity
help? ARG 'paper' runs the paper's presets instead (300-VW, 100 epochs; give
--config.data.root=/path/to/300vw).
"""

from rednet_jax.models.local_motion import VARIANTS
from rednet_jax.training.sweeps import sweep


def get_sweep(arg: str = ""):
  if arg not in ("", "paper"):
    raise ValueError(f"unknown arg {arg!r}; known: '' (CPU budget), 'paper'")
  suffix = "" if arg == "paper" else "_cpu"
  return sweep("preset", [v + suffix for v in VARIANTS])
