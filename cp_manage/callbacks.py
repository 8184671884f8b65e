"""Optional callbacks that hand each checkpoint a framework saves to background uploads.

Neither framework is a dependency of cpv: each function imports its framework only when called,
and says what to install when it is missing. Both submit to the same durable queue as
``cpv model watch`` (which needs no callback at all)::

    uploads = ModelsCheckpointsManage(repo_path="bert-large").background()
    trainer = Trainer(..., callbacks=[trainer_callback(uploads)])   # transformers
    trainer = L.Trainer(callbacks=[lightning_callback(uploads)])     # Lightning

The callbacks wait for the queue when training ends; call ``uploads.close()`` (or use
``with``) to see a failure raised.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.errors import CPVError

if TYPE_CHECKING:
    from cp_manage.manage.background import BackgroundUploads
    from cp_manage.manage.queue import TagRequest


def _framework(*modules: str) -> Any:
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise CPVError(f"{modules[0]} is not installed",
                   hint=f"pip install {modules[0]} to use this callback, or run 'cpv model "
                   "watch DIR' beside the training instead (it needs no framework).")


def trainer_callback(uploads: BackgroundUploads, *, tag: TagRequest = True) -> Any:
    """A ``transformers.TrainerCallback`` submitting each ``checkpoint-N/`` folder the Trainer
    saves, with the latest ``eval_*`` metrics plus ``step`` and ``epoch``.

    Raises:
        CPVError: transformers is not installed.
    """
    base: Any = _framework("transformers").TrainerCallback
    from cp_manage.manage.watch import HF_STATE, trainer_metrics

    class CPVTrainerCallback(base):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (folder / HF_STATE).is_file():  # only the main process saves it
                uploads.submit(folder, metrics=trainer_metrics(folder), tag=tag)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            uploads.wait()

    return CPVTrainerCallback()


def lightning_callback(uploads: BackgroundUploads, *, tag: TagRequest = True) -> Any:
    """A Lightning ``Callback`` submitting each ``*.ckpt`` file the trainer's
    ``ModelCheckpoint`` wrote (checked at each epoch's start and when training ends), with
    the metrics in its name (``epoch=2-step=300-val_loss=0.12.ckpt``).

    Raises:
        CPVError: neither lightning nor pytorch_lightning is installed.
    """
    base: Any = _framework("lightning.pytorch", "pytorch_lightning").Callback
    from cp_manage.manage.watch import name_metrics

    class CPVLightningCallback(base):  # type: ignore[misc]
        def __init__(self) -> None:
            self.submitted: set[Path] = set()

        def _submit_new(self, trainer: Any) -> None:
            if not getattr(trainer, "is_global_zero", True):
                return
            for checkpoint in getattr(trainer, "checkpoint_callbacks", []):
                folder = getattr(checkpoint, "dirpath", None)
                if not folder or not Path(folder).is_dir():
                    continue
                new = [p for p in Path(folder).glob("*.ckpt")
                       if p not in self.submitted and not p.name.startswith("last")]
                for path in sorted(new, key=lambda p: p.stat().st_mtime_ns):
                    uploads.submit(path, metrics=name_metrics(path.stem), tag=tag)
                    self.submitted.add(path)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._submit_new(trainer)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._submit_new(trainer)
            uploads.wait()

    return CPVLightningCallback()
