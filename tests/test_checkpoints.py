"""Orbax round trip and the stage-to-stage hand-over (right leaves restored, and only those)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rednet_jax.training.configs import ConfigError
from rednet_jax.training.checkpoints import checkpoint_manager, init_from_previous_stage, restore, save
from test_rednet_v1 import init_variables, small_model


def flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep="/")


def test_round_trip_and_latest_step(tmp_path):
  variables = init_variables(small_model(use_shape_regression=True))
  manager = checkpoint_manager(str(tmp_path / "image_stage"))
  save(manager, 10, {"variables": variables, "step": jnp.int32(10)})
  bumped = jax.tree.map(lambda a: a + 1, variables)
  save(manager, 20, {"variables": bumped, "step": jnp.int32(20)})
  back = restore(manager, {"variables": variables, "step": jnp.int32(0)})
  assert int(back["step"]) == 20
  jax.tree.map(np.testing.assert_array_equal, back["variables"], bumped)
  assert manager.latest_step() == 20


def test_next_stage_takes_shared_leaves_and_keeps_new_modules_fresh(tmp_path):
  image_model = small_model(use_shape_regression=True)
  trained = jax.tree.map(lambda a: a + 0.5, init_variables(image_model))  # "trained" values
  manager = checkpoint_manager(str(tmp_path / "image_stage"))
  save(manager, 100, {"variables": trained, "step": jnp.int32(100)})
  manager.close()

  video_model = small_model(use_shape_regression=True, use_identity=True, num_identities=4,
                            use_temporal=True)
  fresh = init_variables(video_model)
  restored, new_paths = init_from_previous_stage(fresh, str(tmp_path / "image_stage"))
  restored_flat, fresh_flat, trained_flat = flat(restored), flat(fresh), flat(trained)
  for path, value in restored_flat.items():
    expected = trained_flat[path] if path in trained_flat else fresh_flat[path]
    np.testing.assert_array_equal(value, expected, err_msg=path)
  assert new_paths and all("/identity/" in p or "/temporal/" in p for p in new_paths)
  assert any(p.startswith("batch_stats/") for p in trained_flat)       # BN statistics carried
  assert set(new_paths) == set(fresh_flat) - set(trained_flat)


def test_missing_previous_stage_and_shape_mismatch_are_clear(tmp_path):
  with pytest.raises(ConfigError, match="holds no complete checkpoint of the previous stage"):
    init_from_previous_stage(init_variables(small_model()), str(tmp_path / "nothing"))
  manager = checkpoint_manager(str(tmp_path / "narrow"))
  save(manager, 1, {"variables": init_variables(small_model()), "step": jnp.int32(1)})
  manager.close()
  with pytest.raises(ConfigError, match=r"\S+ has shape \(\S+ \S+ in \S+narrow and .* must "
                     r"match the previous stage's, or add .* init_keep_fresh"):
    init_from_previous_stage(init_variables(small_model(width=1 / 8)), str(tmp_path / "narrow"))


@pytest.mark.parametrize("old_k, new_k", [(3, 2), (2, 4)])
def test_a_change_of_k_carries_per_step_statistics_by_the_documented_rule(tmp_path, old_k, new_k):
  """Steps the previous stage had keep their BN statistics; new steps copy the last one's."""
  trained = dict(init_variables(small_model(num_steps=old_k)))    # a copy: the init is cached
  stats = flat(trained["batch_stats"])
  trained["batch_stats"] = flax.traverse_util.unflatten_dict(
      {p: v + jnp.arange(old_k, dtype=v.dtype).reshape((old_k,) + (1,) * (v.ndim - 1))
       for p, v in stats.items()}, sep="/")                  # step i's statistics + i
  manager = checkpoint_manager(str(tmp_path / "k"))
  save(manager, 1, {"variables": trained, "step": jnp.int32(1)})
  manager.close()
  restored, new_paths = init_from_previous_stage(init_variables(small_model(num_steps=new_k)),
                                                 str(tmp_path / "k"))
  assert new_paths == []
  old_flat, new_flat = flat(trained), flat(restored)
  for path, value in new_flat.items():
    if path.startswith("batch_stats/"):
      assert value.shape[0] == new_k
      expected = [old_flat[path][min(i, old_k - 1)] for i in range(new_k)]
      np.testing.assert_array_equal(value, np.stack(expected), err_msg=path)
    else:
      np.testing.assert_array_equal(value, old_flat[path], err_msg=path)


def test_keep_fresh_leaves_are_not_restored(tmp_path):
  """A classifier whose classes changed (identity stage -> video stage on other people) keeps
  its fresh init when named in keep_fresh; everything else still comes from the checkpoint."""
  before = small_model(use_shape_regression=True, use_identity=True, num_identities=4)
  trained = jax.tree.map(lambda a: a + 0.5, init_variables(before))
  manager = checkpoint_manager(str(tmp_path / "identity"))
  save(manager, 5, {"variables": trained, "step": jnp.int32(5)})
  manager.close()
  after = small_model(use_shape_regression=True, use_identity=True, num_identities=7)
  fresh = init_variables(after)
  restored, new_paths = init_from_previous_stage(fresh, str(tmp_path / "identity"),
                                                 keep_fresh=[r"params/identity/logits/.*"])
  assert new_paths == ["params/identity/logits/bias", "params/identity/logits/kernel"]
  restored_flat, fresh_flat, trained_flat = flat(restored), flat(fresh), flat(trained)
  for path, value in restored_flat.items():
    expected = fresh_flat[path] if path in new_paths else trained_flat[path]
    np.testing.assert_array_equal(value, expected, err_msg=path)


def test_a_save_cut_off_midway_is_ignored_and_cleaned_up(tmp_path):
  """kill -9 during a save leaves Orbax's temporary folder behind: the next manager must
  resume from the last complete step and remove the leftover."""
  variables = init_variables(small_model())
  manager = checkpoint_manager(str(tmp_path))
  save(manager, 1, {"variables": variables, "step": jnp.int32(1)})
  manager.close()
  leftover = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "half_written").write_bytes(b"\0" * 10)
  manager = checkpoint_manager(str(tmp_path))
  assert manager.latest_step() == 1 and manager.all_steps() == [1]
  back = restore(manager, {"variables": variables, "step": jnp.int32(0)})
  assert int(back["step"]) == 1
  assert not leftover.exists()
