"""`train_and_evaluate(config, workdir)`: one curriculum stage, or several in order.

A stage lives in `<workdir>/<config.name>/`:
  checkpoints/     Orbax: train state + Grain iterator position, every `checkpoint_every_steps`
  metrics.jsonl    one JSON object per log/eval point ({"step", "split", ...})
  tensorboard/     event files (tensorboardX; no TensorFlow needed)
  final.json       written when the stage is complete: final evaluation metrics
  ced.png, refinement.png, tracked.mp4   when listed in `config.outputs`

  config.json      the resolved config the stage was started with (`run_records.py`)
  runs.jsonl       one line per start or resume: versions, platform, devices, host, command

Re-running the same command resumes from the latest complete checkpoint with the same data
order; a stage with `final.json` is not retrained. Both only when the config matches the
recorded one (result-neutral fields aside); otherwise the run stops naming the fields that
differ. `restart` starts named stages over (their old folders are renamed, not deleted). One
process writes a stage at a time (`<workdir>/.<stage>.lock`). A stage starts from the previous
stage's checkpoint when `config.init_from` names it (a stage name under the same workdir, or a
path).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from data_pipelines.loader import make_loader
from rednet_jax.training import checkpoints
from rednet_jax.training import configs
from rednet_jax.evaluation import held_out
from rednet_jax.evaluation import reports
from rednet_jax.training import run_records
from rednet_jax.training.input_pipeline import build_stage_data
from rednet_jax.models import build_model
from rednet_jax.models.system import parameter_count
from rednet_jax.training.train_step import (TrainState, make_optimizer, make_train_step,
                                            shard_state, update_plateau)

DATA_AXIS = "data"


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss, gradient or parameter norm."""


def maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize()` when the environment describes a multi-process job: an
  explicit coordinator (JAX_COORDINATOR_ADDRESS, with JAX_NUM_PROCESSES / JAX_PROCESS_ID), a
  SLURM or Open MPI job of several tasks, or REDNET_DISTRIBUTED=1 (e.g. on a TPU pod slice,
  where JAX finds the other hosts itself)."""
  env = os.environ
  multi = ("JAX_COORDINATOR_ADDRESS" in env or env.get("REDNET_DISTRIBUTED") == "1"
           or int(env.get("SLURM_NTASKS", "1")) > 1
           or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
  if multi and not jax.distributed.is_initialized():
    kwargs = {}
    if "JAX_NUM_PROCESSES" in env:
      kwargs = {"num_processes": int(env["JAX_NUM_PROCESSES"]),
                "process_id": int(env["JAX_PROCESS_ID"])}
    jax.distributed.initialize(**kwargs)


def make_mesh(mesh_config) -> Mesh:
  """A 1-D data-parallel mesh over `mesh_config.num_devices` devices (-1: all). Auto axis types:
  the Explicit default rejects the pooling reshapes (docs/engineering_notes.md)."""
  devices = jax.devices()
  n = len(devices) if mesh_config.num_devices == -1 else mesh_config.num_devices
  if not 1 <= n <= len(devices):
    raise configs.ConfigError(f"mesh.num_devices={mesh_config.num_devices}, but {len(devices)} "
                              "devices are visible")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


class _StepProfiler:
  """`config.profile_steps = (first, last)`: a profiler trace of training steps first..last
  (0-based, the step counter before each step) in `<stage>/profile`, viewable with xprof /
  TensorBoard's profile plugin. () : none. The trace waits for the last step's results."""

  def __init__(self, steps, directory: str):
    self.first, self.last = tuple(steps) if steps else (-1, -1)
    self.directory, self.active = directory, False

  def before(self, step: int) -> None:
    if step == self.first and not self.active:
      jax.profiler.start_trace(self.directory)
      self.active = True
      logging.info("profiling steps %d-%d into %s", self.first, self.last, self.directory)

  def after(self, step: int | None, metrics) -> None:
    """`step`: the counter after the step just run, whose `metrics` the trace waits for;
    None: training ended (the last step's results were already pulled)."""
    if self.active and (step is None or step > self.last):
      if metrics is not None:
        jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
      self.active = False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       restart: tuple[str, ...] = (), only: tuple[str, ...] = ()
                       ) -> dict[str, dict]:
  """Trains the stage `config` describes, or, when it has a `curriculum` (a list of names of
  its sub-configs), each of those stages in order (`only`: just these, e.g. a video stage
  initialised from another run's identity stage). `restart` names stages to start over
  (`("all",)`: every stage). Returns {stage: final metrics}. Every stage's config is checked
  (values, and against what its folder records) before anything is built."""
  configs.validate(config)
  stages = configs.stage_configs(config)
  names = [c.name for _, c in stages]
  for flag, given in (("--stages", only), ("--restart", restart)):
    unknown = [n for n in given if n not in names and not (flag == "--restart" and n == "all")]
    if unknown:
      raise configs.ConfigError(f"{flag}={','.join(given)}: no stage {unknown} in this config; "
                                f"its stages: {names}" + (" (or 'all')" if flag == "--restart"
                                                          else ""))
  if only:
    stages = [(p, c) for p, c in stages if c.name in only]
    names = [c.name for _, c in stages]
  restart = tuple(names) if tuple(restart) == ("all",) else tuple(restart)
  _check_stage_folders(stages, workdir, restart)
  maybe_initialize_distributed()
  results = {}
  for prefix, stage in stages:
    results[stage.name] = train_stage(stage, workdir, field_prefix=prefix,
                                      restart=stage.name in restart)
  if "curriculum" in config and len(results) > 1 and jax.process_index() == 0:
    _write_curriculum_summary(results, workdir)
  return results


def _check_stage_folders(stages, workdir: str, restart: tuple[str, ...]) -> None:
  """Fails before any training when a stage folder that would be resumed or reused was made
  with another config, or from a stage this run starts over."""
  restarted = set(restart)
  for prefix, stage in stages:
    stage_dir = os.path.join(workdir, stage.name)
    if stage.name in restarted:
      continue
    if stage.init_from in restarted and run_records.has_results(stage_dir):
      raise run_records.ConfigMismatchError(
          f"{stage_dir} was trained from the {stage.init_from!r} stage, which --restart starts "
          f"over; start it over too (--restart={','.join(list(restart) + [stage.name])}) or "
          "use a new --workdir.")
    run_records.check_record(stage_dir, stage, prefix, _init_run_id(stage, workdir),
                             restart_hint=",".join(list(restart) + [stage.name]))


def _init_run_id(config, workdir: str) -> str | None:
  """The `run_id` recorded by the stage `config.init_from` names (None: no init_from, or a
  folder without a record)."""
  if not config.init_from:
    return None
  previous = _resolve_previous(config.init_from, workdir)
  stage_dir = os.path.dirname(previous) if os.path.basename(previous) == "checkpoints" else previous
  record = run_records.read_record(stage_dir)
  return record["run_id"] if record else None


def _write_curriculum_summary(results: dict[str, dict], workdir: str) -> None:
  errors = {}
  for name in results:
    path = os.path.join(workdir, name, "eval_errors.npy")
    if os.path.exists(path):
      errors[name] = np.load(path)
  if errors:
    reports.ced_plot(errors, os.path.join(workdir, "ced_by_stage.png"))
  lines = ["| stage | NME io (%) | FR@10 (%) | AUC@10 | eval frames | train time (s) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, m in results.items():
    lines.append(f"| {name} | {m['nme_io']:.2f} | {m['fr10_io']:.2f} | {m['auc10_io']:.3f} | "
                 f"{m['frames']} | {m.get('train_seconds', float('nan')):.0f} |")
  table = "\n".join(lines)
  with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  print("curriculum results (held-out):\n" + table, flush=True)


class _Log:
  """JSON lines + TensorBoard + progress lines, written by process 0 only."""

  def __init__(self, stage_dir: str, resumed_step: int):
    self.active = jax.process_index() == 0
    self.path = os.path.join(stage_dir, "metrics.jsonl")
    self.writer = None
    # Wall seconds the stage had spent when the checkpoint we resume from was written, so that
    # train_seconds counts every run of the stage (time spent past that checkpoint is lost work).
    self.seconds_before = 0.0
    if not self.active:
      return
    if os.path.exists(self.path):   # drop what was logged after the checkpoint we resume from
      with open(self.path, encoding="utf-8") as f:
        kept = [json.loads(line) for line in f if line.strip()]
      kept = [m for m in kept if m["step"] <= resumed_step]
      with open(self.path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(m) + "\n" for m in kept)
      self.seconds_before = max((m.get("train_seconds", 0.0) for m in kept), default=0.0)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.writer = SummaryWriter(os.path.join(stage_dir, "tensorboard"), purge_step=resumed_step + 1)

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    for key, value in metrics.items():
      self.writer.add_scalar(f"{split}/{key}", value, step)
    self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def _state_tree(state: TrainState, mean_shape) -> dict[str, Any]:
  return {"variables": {"params": state.params, "batch_stats": state.batch_stats},
          "opt_state": state.opt_state, "step": state.step, "mean_shape": mean_shape}


def _resolve_previous(init_from: str, workdir: str) -> str:
  """A stage name -> `<workdir>/<name>/checkpoints`; a path -> itself (its `checkpoints/`
  folder when it is a stage folder)."""
  path = init_from if os.sep in init_from else os.path.join(workdir, init_from)
  path = os.path.abspath(os.path.expanduser(path))
  nested = os.path.join(path, "checkpoints")
  return nested if os.path.isdir(nested) else path


def _init_variables(model, config, mesh: Mesh, mean_shape: np.ndarray):
  size, t, n = config.data.size, config.data.clip_length, config.model.num_landmarks
  frames = jnp.zeros((1, t, size, size, 3), jnp.float32)
  points = jnp.broadcast_to(jnp.asarray(mean_shape), (1, t, n, 2))
  variables = model.init_variables(frames, points, config.seed,
                                   out_shardings=NamedSharding(mesh, P()))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def train_stage(config: ml_collections.ConfigDict, workdir: str, field_prefix: str = "",
                restart: bool = False) -> dict[str, Any]:
  """Trains one stage to `config.num_epochs`, resuming if it was interrupted; evaluates it on
  the held-out data and writes `config.outputs`. Returns the final metrics. `field_prefix`
  ('image.' in a curriculum) is how messages name the stage's fields; `restart` renames an
  existing stage folder aside and starts over."""
  configs.validate(config)
  stage_dir = os.path.join(workdir, config.name)
  os.makedirs(workdir, exist_ok=True)
  # Process 0 holds the lock for the whole stage; the other processes of a multi-host job write
  # only their own data positions into the checkpoints.
  lock = (run_records.StageLock(stage_dir)
          if jax.process_index() == 0 else contextlib.nullcontext())
  with lock:
    if restart and jax.process_index() == 0:
      old = run_records.set_aside(stage_dir)
      if old:
        logging.warning("[%s] starting over; the previous folder is now %s", config.name, old)
    init_run_id = _init_run_id(config, workdir)
    record = run_records.check_record(stage_dir, config, field_prefix, init_run_id)
    final_path = os.path.join(stage_dir, "final.json")
    if os.path.exists(final_path):
      with open(final_path, encoding="utf-8") as f:
        final = json.load(f)
      logging.info("[%s] finished earlier with the same config (%s); not retrained",
                   config.name, final_path)
      return final
    os.makedirs(stage_dir, exist_ok=True)
    if jax.process_index() == 0:
      if record is None or not run_records.has_results(stage_dir):
        run_records.write_record(stage_dir, config, init_run_id)
      run_records.append_run(stage_dir, run_records.environment())
    return _train_stage(config, workdir, stage_dir, final_path, field_prefix)


def _train_stage(config, workdir: str, stage_dir: str, final_path: str, field_prefix: str
                 ) -> dict[str, Any]:
  host = (jax.process_index(), jax.process_count())
  data = build_stage_data(config, workdir, host)
  mesh = make_mesh(config.mesh)
  fields = dict(config.model)
  if fields.get("use_identity") and fields.get("num_identities", 0) == -1:
    fields["num_identities"] = data.num_identities       # -1: as many as the training data has
  model = build_model(fields)
  total_steps = config.total_steps or config.num_epochs * data.steps_per_epoch
  tx, schedule = make_optimizer(
      config.optimizer.learning_rate, config.optimizer.momentum, config.optimizer.decay_rate,
      config.optimizer.decay_every_epochs * data.steps_per_epoch, config.optimizer.weight_decay,
      config.optimizer.name, config.optimizer.schedule)
  logging.info("[%s] %s; %d steps/epoch x %d epochs = %d steps; %d devices, %d processes",
               config.name, data.description, data.steps_per_epoch, config.num_epochs,
               total_steps, mesh.size, host[1])

  variables = model.fit_to_shapes(_init_variables(model, config, mesh, data.mean_shape),
                                  data.training_shapes, config.seed)
  state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                     tx.init(variables["params"]))
  state_sharding = shard_state(state, mesh, config.mesh.state_sharding)
  state = jax.device_put(state, state_sharding)
  manager = checkpoints.checkpoint_manager(os.path.join(stage_dir, "checkpoints"),
                                           config.keep_checkpoints)
  loader = make_loader(data.train, workers=config.data.workers)
  iterator = iter(loader)
  mean_shape = jnp.asarray(data.mean_shape)
  if manager.latest_step() is not None:
    tree = checkpoints.restore(manager, _state_tree(state, mean_shape), data_iterator=iterator)
    state = TrainState(tree["step"], tree["variables"]["params"],
                       tree["variables"]["batch_stats"], tree["opt_state"])
    logging.info("[%s] resumed from step %d", config.name, int(state.step))
  elif config.init_from:
    previous = _resolve_previous(config.init_from, workdir)
    restored, fresh = checkpoints.init_from_previous_stage(
        {"params": state.params, "batch_stats": state.batch_stats}, previous,
        config.init_keep_fresh)
    state = jax.device_put(TrainState(state.step, restored["params"], restored["batch_stats"],
                                      tx.init(restored["params"])), state_sharding)
    logging.info("[%s] initialised from %s; fresh: %s", config.name, previous,
                 ", ".join(sorted({p.rsplit("/", 1)[0] for p in fresh})) or "nothing")
  elif config.pretrained_weights:
    loaded = model.load_pretrained(
        jax.device_get({"params": state.params, "batch_stats": state.batch_stats}),
        os.path.expanduser(config.pretrained_weights))
    state = jax.device_put(TrainState(state.step, loaded["params"], loaded["batch_stats"],
                                      tx.init(loaded["params"])), state_sharding)
    logging.info("[%s] encoder initialised from %s", config.name, config.pretrained_weights)

  train_step = make_train_step(model, tx, schedule, data.mean_shape, mesh,
                               loss_fields=config.loss.to_dict(), data_axis=DATA_AXIS,
                               state_sharding=state_sharding, init_from=config.z0_in_training,
                               cpu_conv_gradients=config.cpu_conv_gradients,
                               cpu_ynn_fusions=config.cpu_ynn_fusions)
  eval_step = held_out.make_eval_step(model, data.mean_shape, mesh, DATA_AXIS,
                                      config.cpu_ynn_fusions)
  by_batch = NamedSharding(mesh, P(DATA_AXIS))

  def to_global(batch):
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(by_batch, a), batch)

  def run_eval(step: int, split: str = "eval"):
    """Held-out metrics ('eval') or those of the validation share of the training data
    ('val'), logged under that split."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    batches = data.eval if split == "eval" else data.validation
    metrics, details = held_out.evaluate(eval_step, variables, iter(batches), to_global)
    log.write(step, split, metrics)
    logging.info("[%s] step %d %s: nme_io %.2f %%  fr10 %.2f %%  auc10 %.3f  (%d frames)",
                 config.name, step, split, metrics["nme_io"], metrics["fr10_io"],
                 metrics["auc10_io"], metrics["frames"])
    return metrics, details

  def run_validation(step: int):
    """The validation NME -> the plateau rule; returns the state with the new multiplier."""
    metrics, _ = run_eval(step, "val")
    opt_state = update_plateau(state.opt_state, metrics["nme_io"], config.optimizer.decay_rate,
                               config.optimizer.plateau_patience_epochs)
    return jax.device_put(state.replace(opt_state=opt_state), state_sharding)

  plateau = config.optimizer.schedule == "plateau"
  step = first_step = int(state.step)
  log = _Log(stage_dir, step)
  base_rng = jax.random.key(config.seed + 1)
  frames_per_step = config.data.batch_size * config.data.clip_length
  pending, window_start, window_steps = [], time.perf_counter(), 0
  stage_start = time.perf_counter()
  last_saved = manager.latest_step()
  profiler = _StepProfiler(config.profile_steps, os.path.join(stage_dir, "profile"))
  while step < total_steps:
    batch = next(iterator)
    profiler.before(step)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_step(state, to_global(batch), jax.random.fold_in(base_rng, step))
    pending.append(metrics)
    step += 1
    profiler.after(step, metrics)
    if not window_steps and len(pending) == 1 and step == int(first_step) + 1:
      # Rates exclude the first step of a run, which compiles.
      pending = [jax.device_get(metrics)]
      window_start, window_steps = time.perf_counter(), -1
    save_now = step % config.checkpoint_every_steps == 0 or step == total_steps
    if step % config.log_every_steps == 0 or save_now:
      # Pulling metrics syncs with the device; done every few steps, and always before a save
      # so that a non-finite state is never written.
      host_metrics = jax.device_get(pending)
      for offset, m in enumerate(host_metrics):
        if not all(math.isfinite(float(m[k])) for k in ("loss", "grad_norm", "param_norm")):
          bad_step = step - len(host_metrics) + offset + 1
          raise NonFiniteLossError(
              f"[{config.name}] step {bad_step}: loss {float(m['loss'])}, grad norm "
              f"{float(m['grad_norm'])}, param norm {float(m['param_norm'])}; stopped. "
              + (f"The last good checkpoint (step {last_saved}) is kept in {manager.directory}"
                 if last_saved is not None else "No checkpoint had been written yet")
              + f"; lower {field_prefix}optimizer.learning_rate or check the data before "
              "re-running.")
      mean = {k: float(np.mean([m[k] for m in host_metrics])) for k in host_metrics[-1]}
      elapsed = time.perf_counter() - window_start
      window_steps += len(host_metrics)
      rate = window_steps / elapsed if window_steps > 0 else float("nan")
      log.write(step, "train", {**mean, **({"steps_per_second": rate,
                                            "frames_per_second": rate * frames_per_step}
                                           if rate > 0 else {}),
                                "train_seconds": log.seconds_before + time.perf_counter()
                                - stage_start})
      logging.info("[%s] step %d/%d (epoch %.2f) loss %.4f nme_io %.2f %% lr %.2e | "
                   "%.2f steps/s %.1f frames/s ETA %s", config.name, step, total_steps,
                   step / data.steps_per_epoch, mean["loss"], mean["nme_io"],
                   mean["learning_rate"], rate, rate * frames_per_step,
                   _format_seconds((total_steps - step) / rate) if rate > 0 else "?")
      pending = []
      if window_steps >= 50:   # rates over a moving window of steps
        window_start, window_steps = time.perf_counter(), 0
    if plateau and step % data.steps_per_epoch == 0 and step < total_steps:
      state = run_validation(step)   # before a save at the same step, which then holds it
    if save_now:
      checkpoints.save(manager, step, _state_tree(state, mean_shape), iterator)
      last_saved = step
    if config.eval_every_steps and step % config.eval_every_steps == 0 and step < total_steps:
      run_eval(step)

  profiler.after(None, None)   # a trace still open when training ends (last > total_steps)
  train_seconds = log.seconds_before + time.perf_counter() - stage_start
  final, details = run_eval(total_steps)
  final["train_seconds"] = train_seconds
  final["parameters"] = parameter_count(state.params)
  if jax.process_index() == 0:
    np.save(os.path.join(stage_dir, "eval_errors.npy"), details["errors"])
    written = reports.write_stage_figures(details, stage_dir, config.outputs)
    for path in written:
      logging.info("[%s] wrote %s", config.name, path)
    with open(final_path + ".tmp", "w", encoding="utf-8") as f:
      json.dump(final, f, indent=1)
    os.replace(final_path + ".tmp", final_path)
  log.close()
  manager.close()
  return final
