"""The Lightning private members behind ``scalelong.lightning_internals``, observed in a tiny fit: a
Lightning upgrade that changes one fails here, naming the adapter to fix."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from scalelong import lightning_internals as internals


class Line(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.w(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.w(batch[0]).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Rows(Logger):
    """Records the step of every metrics row it is given."""

    name, version = "rows", "0"

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "train/loss" in metrics:
            self.steps.append(step)

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


class Probe(L.Callback):
    """Reads the adapter at the end of each training step; at step 3 (validation follows) defers a save
    of ``checkpoint`` to the end of that validation, at step 4 logs the training row early."""

    def __init__(self, checkpoint: ModelCheckpoint, rows: Rows) -> None:
        self.checkpoint, self.rows = checkpoint, rows
        self.seen: list[tuple[int, bool, bool]] = []
        self.events: list[str] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        self.seen.append((step, internals.validation_follows(trainer), internals.training_row_pending(trainer)))
        if step == 3:
            assert not internals.saving_skipped(self.checkpoint, trainer)
            internals.defer_save_to_validation_end(self.checkpoint)
        if step == 4:
            internals.log_training_row(trainer)
            self.events.append(f"rows {self.rows.steps}")

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.events.append(f"validated {trainer.global_step}")

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self.events.append(f"saved {trainer.global_step}")


def test_validation_rows_and_checkpoint_deferral_are_read_where_lightning_keeps_them(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=0, save_top_k=-1)  # saves when deferred
    rows = Rows()
    probe = Probe(checkpoint, rows)
    trainer = L.Trainer(max_steps=6, val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=1,
                        log_every_n_steps=2, logger=rows, callbacks=[probe, checkpoint], accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    assert internals.checkpoint_interval(ModelCheckpoint(every_n_train_steps=4)) == 4
    assert internals.checkpoint_interval(checkpoint) == 0
    assert internals.saving_skipped(checkpoint, trainer)  # not fitting yet
    data = DataLoader(TensorDataset(torch.ones(32, 1)), batch_size=1)
    trainer.fit(Line(), train_dataloaders=data, val_dataloaders=data)
    assert probe.seen == [(1, False, False), (2, False, True), (3, True, False), (4, False, True),
                          (5, False, False), (6, True, True)]
    assert probe.events == ["validated 3", "saved 3", "rows [1, 3]", "validated 6"]
    assert rows.steps == [1, 3, 3, 5]  # step 4's row early, then again where Lightning logs it
