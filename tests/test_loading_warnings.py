"""Warnings while a trusted checkpoint is unpickled: torch's own ``UserWarning`` about legacy
formats is kept from the user (nothing to act on), any other warning, such as one raised by
the user's own class as it is rebuilt, still reaches them.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch

from cnnreport.io.loading import read_checkpoint


class Noisy:
    """Warns with its category when it is unpickled."""

    def __init__(self, category: type[Warning]) -> None:
        self.category = category

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        warnings.warn(f"rebuilt a {self.category.__name__} object", self.category, stacklevel=1)


def checkpoint_with(tmp_path, category):
    path = tmp_path / "noisy.pt"
    torch.save({"state_dict": OrderedDict([("w", torch.ones(1))]), "extra": Noisy(category)}, path)
    return path


def test_a_warning_of_the_users_class_reaches_the_user(tmp_path):
    path = checkpoint_with(tmp_path, RuntimeWarning)
    with pytest.warns(RuntimeWarning, match="^rebuilt a RuntimeWarning object$"):
        checkpoint = read_checkpoint(path, trust_checkpoint=True)
    assert checkpoint.notes == ["used checkpoint key 'state_dict'"]


def test_a_user_warning_while_unpickling_is_kept_from_the_user(tmp_path):
    path = checkpoint_with(tmp_path, UserWarning)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        checkpoint = read_checkpoint(path, trust_checkpoint=True)
    assert [str(w.message) for w in seen] == []
    assert checkpoint.notes == ["used checkpoint key 'state_dict'"]
