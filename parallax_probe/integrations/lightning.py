"""`ProbeLightningCallback`: a `Probe` run by `lightning.pytorch.Trainer` (extra `[lightning]`).

    trainer = lightning.pytorch.Trainer(max_steps=1000,
                                        callbacks=[ProbeLightningCallback("runs/pl-adamw", every=50)])
    trainer.fit(module, loader)

Named for its framework beside the Trainer one (`ProbeCallback`), so both import side by side.

Which forward a row covers: the step's *first* micro-batch. The logging step of optimizer
step `trainer.global_step` (0-based) opens at the first `on_train_batch_start` of that step and
closes at `on_before_backward`, right after `training_step`'s forward, so the spectra see the
weights that forward used, before the optimizer step. Under DDP every rank opens and closes
the same steps (the probe gathers every rank's rows), and only global rank 0 writes.

Scalars, once per optimizer step: `loss` (the mean over the step's micro-batches of the loss
`training_step` returns, this rank's), `lr` (the first parameter group's, the one the step
used) and `grad_norm` (the 2-norm of all gradients after accumulation, before clipping).

Checkpoints: the callback's state (run folder, step) travels in Lightning's checkpoint; a
`fit(ckpt_path=...)` that restores it resumes the run folder at the checkpoint's step (mode
"resume"): rows the first run wrote past the checkpoint are superseded, none are repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from parallax_probe.config import PROBE_EVERY, SPECTRA_EVERY
from parallax_probe.hooks import Probe

from .common import OpenStep, framework_distributed, model_device, optimizer_meta, provenance, storable

SCALARS = ("loss", "lr", "grad_norm")


class ProbeLightningCallback(Callback):
    """Attach a `Probe` to the LightningModule at `on_train_start`; close it at `on_train_end`.

    run_dir, every, spectra_every, meta and `probe_options` are `Probe`'s. The run's metadata
    gets `meta`, the module's `hparams`, the Trainer's settings (`trainer`), the optimizer,
    code and package versions and the device; `meta` wins where it names the same key.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        every: int = PROBE_EVERY,
        spectra_every: int = SPECTRA_EVERY,
        meta: dict[str, Any] | None = None,
        **probe_options,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.every, self.spectra_every = every, spectra_every
        self.meta = dict(meta or {})
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self._step: OpenStep | None = None
        self._resuming = False  # set by load_state_dict: the fit restored a checkpoint
        self._loss_sum: torch.Tensor | None = None
        self._lr = self._grad_norm = None

    # ---- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The step to resume from is the Trainer's own global_step, restored with the checkpoint.
        return {"run_dir": str(self.run_dir)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if Path(state_dict["run_dir"]) != self.run_dir:
            raise ValueError(
                f"ProbeLightningCallback: the checkpoint's probe wrote {state_dict['run_dir']}, this callback writes "
                f"{self.run_dir}; give the callback the checkpoint's run folder to resume it"
            )
        self._resuming = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.probe is not None:
            self.probe.flush()  # the rows up to the checkpoint are on disk with it

    # ---- attach and detach -----------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        device = model_device(pl_module)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        settings = {"max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs, "precision": trainer.precision,
                    "accumulate_grad_batches": trainer.accumulate_grad_batches, "gradient_clip_val": trainer.gradient_clip_val,
                    "gradient_clip_algorithm": trainer.gradient_clip_algorithm, "world_size": trainer.world_size,
                    "strategy": type(trainer.strategy).__name__, "optimizers": len(trainer.optimizers)}
        meta = (optimizer_meta(optimizer) | {"framework": "lightning.pytorch.Trainer", "hparams": storable(dict(pl_module.hparams)),
                                             "trainer": storable(settings)}
                | provenance(device, ("lightning",)) | self.meta)
        options = dict(self.probe_options)
        options["scalar_names"] = (*SCALARS, *options.get("scalar_names", ()))
        if self._resuming:
            options["mode"] = "resume"
        self.probe = Probe(
            pl_module, self.run_dir, every=self.every, spectra_every=self.spectra_every, meta=meta,
            start_step=trainer.global_step, distributed=framework_distributed(device), **options,
        )
        self._step = OpenStep(self.probe)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.probe is None:
            return
        self._step.close()
        self.probe.record_spectra(trainer.global_step)  # the final weights, whatever the cadence
        self._detach()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._detach()

    def _detach(self) -> None:
        if self.probe is not None:
            self._step.close()
            self.probe.close()
        self.probe = self._step = None

    # ---- one optimizer step ------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._step.step != trainer.global_step:  # the step's first micro-batch
            self._step.open(trainer.global_step)
            self._loss_sum = None

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._step.close()
        # Lightning divides the loss by accumulate_grad_batches before backward: the sum is the mean
        loss = loss.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._lr = optimizer.param_groups[0]["lr"]
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self._grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step.close()  # a training_step that returned no loss ran no backward
        step = self._step.step
        if trainer.global_step > step and self._loss_sum is not None:  # the optimizer stepped
            values = {"loss": self._loss_sum, "lr": self._lr, "grad_norm": self._grad_norm}
            self.probe.log_scalars(step, **{k: v for k, v in values.items() if v is not None})
            self._loss_sum = None
