"""What the framework-callback tests share: a tiny LM that returns its loss, its data, and the
hand-written loop (README "Instrument your own training loop") that the callbacks must equal."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from parallax_probe import Probe, build_model, open_run

SEED = 3  # model init and data
VOCAB, SEQ_LEN, BATCH = 32, 16, 2
LR = 3e-3
MAX_GRAD_NORM = 1.0


class TinyLM(nn.Module):
    """parallax-probe's tiny model with a next-token loss: what a Trainer expects of a model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(SEED)
        self.lm = build_model("tiny", vocab_size=VOCAB)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.lm(input_ids)  # (B, T, vocab)
        return {"loss": F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())}


def examples(n: int) -> list[dict[str, torch.Tensor]]:
    """n sequences, each its own dict, in the order every loop reads them."""
    tokens = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=torch.Generator().manual_seed(SEED))
    return [{"input_ids": t, "labels": t} for t in tokens]


def lr_factor(step: int) -> float:
    return 1.0 / (1.0 + step)  # a schedule that changes every step, so a misplaced lr shows


def optimizer_and_schedule(model: nn.Module):
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def hand_written_run(
    run_dir, *, steps: int, accumulate: int, every: int, spectra_every: int, batch: int = BATCH, make_model=TinyLM
) -> None:
    """The README loop with gradient accumulation: the probe's step wraps the first micro-batch."""
    model = make_model()
    optimizer, schedule = optimizer_and_schedule(model)
    data = examples(steps * accumulate * batch)
    probe = Probe(model, run_dir, every=every, spectra_every=spectra_every)
    for step in range(steps):
        loss_sum = torch.zeros(())
        for micro in range(accumulate):
            first = (step * accumulate + micro) * batch
            inputs = {k: torch.stack([d[k] for d in data[first : first + batch]]) for k in data[0]}
            with probe.step(step) if micro == 0 else contextlib.nullcontext():
                loss = model(**inputs)["loss"] / accumulate
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        probe.log_scalars(step, loss=loss_sum, lr=lr, grad_norm=grad_norm)
    probe.record_spectra(steps)
    probe.close()


STATISTICS = ("step", "attn/", "wr/", "wrk/")


def assert_same_statistics(got_dir, want_dir, rtol=1e-5) -> None:
    """Same steps logged, every attention and spectrum column equal to float32 rounding."""
    got, want = open_run(got_dir), open_run(want_dir)
    names = sorted(n for n in want.names() if n.startswith(STATISTICS))
    assert names and sorted(n for n in got.names() if n.startswith(STATISTICS)) == names
    for name in names:
        a, b = got[name], want[name]
        if name.endswith("step"):
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-7, equal_nan=True, err_msg=name)


def assert_same_scalars(got_dir, want_dir, names=("loss", "lr", "grad_norm"), rtol=1e-5) -> None:
    got, want = open_run(got_dir), open_run(want_dir)
    np.testing.assert_array_equal(got["scalars/step"], want["scalars/step"])
    for name in names:
        np.testing.assert_allclose(got[f"scalars/{name}"], want[f"scalars/{name}"], rtol=rtol, err_msg=name)
