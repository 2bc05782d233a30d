"""Shared fixtures: the repository's test data (the LQER authors' and
microxcaling's reference vectors, copied from shared/testdata/reference)."""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


@pytest.fixture
def data():
    return DATA


def load(name: str) -> np.ndarray:
    return np.load(DATA / f"{name}.npy")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
