"""`ProbeCallback`: a `Probe` run by `transformers.Trainer` (extra `[hf]`).

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[ProbeCallback("runs/hf-adamw", every=50, spectra_every=500)])
    trainer.train()

Which forward a row covers: the step's *first* micro-batch. The logging step opens at
`on_step_begin` (the Trainer calls it before the first micro-batch of step `state.global_step`)
and closes right after the model's forward of that micro-batch, so with gradient accumulation
the row holds that micro-batch's tokens (on every data-parallel rank), and the spectra are
those of the weights that forward used, before the optimizer step. Step numbers are the
Trainer's 0-based optimizer steps; `every=50` records steps 0, 50, 100, ...

Scalars: each `on_log` of training (`loss`, `learning_rate` as `lr`, `grad_norm`) and of
evaluation (`eval_*`, without the wall-clock ones) lands at step `state.global_step - 1`: the
last step the logged values cover. The Trainer's `loss` is the mean over the steps since its
previous log (of every micro-batch and rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from parallax_probe.config import PROBE_EVERY, SPECTRA_EVERY
from parallax_probe.hooks import Probe

from .common import OpenStep, framework_distributed, model_device, optimizer_meta, provenance, storable

# Trainer log name -> run scalar name (the names parallax-probe's own trainer uses)
TRAINER_SCALARS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm"}
WALL_CLOCK_SUFFIXES = ("_runtime", "_per_second")


class ProbeCallback(TrainerCallback):
    """Attach a `Probe` to the Trainer's model at `on_train_begin`; close it at `on_train_end`.

    run_dir, every, spectra_every, meta and `probe_options` (layouts, selector, serve, mode, ...)
    are `Probe`'s. The run's metadata gets `meta`, the `TrainingArguments` (`training_args`), the
    optimizer (`optimizer`, its class and parameter groups), code and package versions and the
    device; `meta` wins where it names the same key (say `optimizer="muon"` for a group name).
    A Trainer resuming from its checkpoint (`state.global_step > 0` at train begin) resumes
    the run folder from that step (mode "resume").
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
        self.run_dir = run_dir
        self.every, self.spectra_every = every, spectra_every
        self.meta = dict(meta or {})
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self._step: OpenStep | None = None
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            raise ValueError("ProbeCallback: the Trainer passed no model to on_train_begin; give the Trainer a `model`")
        device = model_device(model)
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
        meta = (optimizer_meta(optimizer) | {"framework": "transformers.Trainer", "training_args": storable(args.to_dict())}
                | provenance(device, ("transformers", "accelerate")) | self.meta)
        options = dict(self.probe_options)
        options["scalar_names"] = (*TRAINER_SCALARS.values(), *options.get("scalar_names", ()))
        if state.global_step > 0:
            options.setdefault("mode", "resume")
        self.probe = Probe(
            model, self.run_dir, every=self.every, spectra_every=self.spectra_every, meta=meta,
            start_step=state.global_step, distributed=framework_distributed(device), **options,
        )
        self._step = OpenStep(self.probe)
        # After the forward, never after the backward: the step's spectra must see the weights
        # before the optimizer step, and later micro-batches must not overwrite the row.
        self._hook = model.register_forward_hook(self._after_forward, always_call=True)

    def _after_forward(self, module, args, output):
        if self._step is not None and self._step.is_open:
            self._step.close()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step.open(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._step.close()  # only if no forward of the model ran (a compute_loss calling something else)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.probe is None or not logs or state.global_step == 0:
            return
        values = {TRAINER_SCALARS[k]: v for k, v in logs.items() if k in TRAINER_SCALARS}
        values |= {k: v for k, v in logs.items() if k.startswith("eval_") and not k.endswith(WALL_CLOCK_SUFFIXES)}
        values = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        self.probe.log_scalars(state.global_step - 1, **values)

    def on_train_end(self, args, state, control, **kwargs):
        if self.probe is None:
            return
        self._step.close()
        self._hook.remove()
        self.probe.record_spectra(state.global_step)  # the final weights, whatever the cadence
        self.probe.close()
        self.probe, self._step, self._hook = None, None, None
