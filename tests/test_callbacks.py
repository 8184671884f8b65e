"""The framework callbacks are optional: importing them needs no framework, and using one that
is not installed says what to install (the watcher tests cover the layouts they hand over)."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import ModelRepo

from cp_manage import CPVError
from cp_manage.callbacks import lightning_callback, trainer_callback


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None,
                    reason="transformers is installed here")
def test_trainer_callback_without_transformers(repo: ModelRepo) -> None:
    with repo.manager.background() as uploads, pytest.raises(CPVError, match="pip install "
                                                              "transformers"):
        trainer_callback(uploads)


@pytest.mark.skipif(any(importlib.util.find_spec(name) is not None
                        for name in ("lightning", "pytorch_lightning")),
                    reason="Lightning is installed here")
def test_lightning_callback_without_lightning(repo: ModelRepo) -> None:
    with repo.manager.background() as uploads, pytest.raises(CPVError, match="watch DIR"):
        lightning_callback(uploads)
