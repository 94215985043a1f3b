"""Landmark schemes: mirror permutations and the 68 -> 7 mapping."""

import numpy as np
import pytest

from data_pipelines.landmarks import (FLIP_7, FLIP_68, IBUG68_TO_7, flip_landmarks,
                                      flip_permutation, to_7_points)


def test_mirror_permutations_are_involutions_with_the_right_fixed_points():
  assert sorted(FLIP_68) == list(range(68)) and np.all(FLIP_68[FLIP_68] == np.arange(68))
  assert set(np.nonzero(FLIP_68 == np.arange(68))[0]) == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
  assert FLIP_68[36] == 45 and FLIP_68[0] == 16 and FLIP_68[48] == 54 and FLIP_68[60] == 64
  np.testing.assert_array_equal(FLIP_7, [3, 2, 1, 0, 4, 6, 5])


def test_flip_commutes_with_the_7_point_subset():
  points = np.random.default_rng(0).uniform(0, 100, size=(3, 68, 2))
  np.testing.assert_array_equal(to_7_points(flip_landmarks(points, 128)),
                                flip_landmarks(to_7_points(points), 128))
  assert IBUG68_TO_7 == (36, 39, 42, 45, 30, 48, 54)


def test_flipping_twice_is_identity_and_left_eye_goes_right():
  points = np.random.default_rng(1).uniform(0, 64, size=(68, 2))
  np.testing.assert_allclose(flip_landmarks(flip_landmarks(points, 64), 64), points)
  flipped = flip_landmarks(points, 64)
  np.testing.assert_allclose(flipped[45], [63 - points[36, 0], points[36, 1]])


def test_unknown_schemes_are_errors():
  with pytest.raises(ValueError, match="21 landmarks"):
    flip_permutation(21)
  with pytest.raises(ValueError, match="expected 68"):
    to_7_points(np.zeros((7, 2)))
