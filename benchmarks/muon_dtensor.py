"""CPU cost of `torch.optim.Muon` stepping FSDP2-style `Shard(0)` DTensor parameters, against
the same step on plain full matrices (what every DDP rank runs) and on each rank's shard alone.

    torchrun --standalone --nproc_per_node 2 benchmarks/muon_dtensor.py --preset small

The matrices are the hidden weights Muon trains in a preset (parallax_probe/optim.py: the
q, r, k, v, o and SwiGLU projections of every layer). Each row times `opt.step()` with fresh
gradients, the median of --repeats after one warm-up step. Newton-Schulz FLOPs per matrix with
m = min(rows, cols), n = max: 5 steps x (X X^T: 2 m^2 n, the Gram update: 2 m^3, the update
applied: 2 m^2 n), i.e. 5 * (4 m^2 n + 2 m^3). "orthogonalise each shard" is not Muon (the
shard's polar factor is not the matrix's); it is timed only as the floor a shard-local update
would cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as torch_dist
from results import add_result_args, write_result
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from parallax_probe.config import resolve_model_config
from parallax_probe.distributed import exit_without_teardown
from parallax_probe.model import ParallaxLM
from parallax_probe.optim import assign_parameter_groups


def newton_schulz_flops(shape: torch.Size) -> int:
    m, n = min(shape), max(shape)
    return 5 * (4 * m * m * n + 2 * m**3)


def time_steps(params: list[torch.nn.Parameter], make_grad, repeats: int) -> float:
    opt = torch.optim.Muon(params, lr=0.02, adjust_lr_fn="original")
    times = []
    for repeat in range(repeats + 1):
        for p in params:
            p.grad = make_grad(p)
        torch_dist.barrier()
        start = time.perf_counter()
        opt.step()
        torch_dist.barrier()
        if repeat:  # the first step allocates the momentum buffers
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def collectives_per_step(params: list[torch.nn.Parameter], mesh) -> dict[str, int]:
    """The collectives DTensor issues inside one Muon step over `params` (CommDebugMode counts them)."""
    from torch.distributed.tensor.debug import CommDebugMode

    opt = torch.optim.Muon(params, lr=0.02, adjust_lr_fn="original")
    for p in params:
        p.grad = distribute_tensor(torch.randn(p.shape), mesh, [Shard(0)])
    with CommDebugMode() as comm:
        opt.step()
    return {str(getattr(op, "__name__", op)).split(".")[-1]: count for op, count in comm.get_comm_counts().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--layers", type=int, default=1, help="layers of the preset to time (each has the same matrices)")
    parser.add_argument("--repeats", type=int, default=5)
    add_result_args(parser, "muon_dtensor")
    args = parser.parse_args()
    torch_dist.init_process_group("gloo")
    world, rank = torch_dist.get_world_size(), torch_dist.get_rank()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = ParallaxLM(resolve_model_config(args.preset, n_layers=args.layers, vocab_size=256))
    named = dict(model.named_parameters())
    weights = [named[n].detach() for n in assign_parameter_groups(model, "muon").muon]
    shapes = sorted({tuple(w.shape) for w in weights})
    flops = sum(newton_schulz_flops(w.shape) for w in weights)

    full = [torch.nn.Parameter(w.clone()) for w in weights]
    sharded = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)])) for w in weights]
    local = [torch.nn.Parameter(p.to_local().clone()) for p in sharded]
    rows = [
        ("full matrix on every rank (DDP)", time_steps(full, lambda p: torch.randn(p.shape), args.repeats)),
        (
            "Shard(0) DTensor (FSDP2)",
            time_steps(sharded, lambda p: distribute_tensor(torch.randn(p.shape), mesh, [Shard(0)]), args.repeats),
        ),
        ("each shard alone (not Muon)", time_steps(local, lambda p: torch.randn(p.shape), args.repeats)),
    ]
    collectives = collectives_per_step([torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)])) for w in weights], mesh)
    if rank == 0:
        print(f"{args.preset}, {args.layers} layer(s): {len(weights)} matrices of shapes {shapes}; "
              f"{world} CPU processes (gloo), torch {torch.__version__}, {torch.get_num_threads()} threads per process, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        print("| Muon step on | ms per step | x full matrix | Newton-Schulz GFLOP/s per rank |")
        print("|---|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds * 1e3:.1f} | {seconds / rows[0][1]:.2f} | {flops / seconds / 1e9:.1f} |")
        print(f"collectives DTensor issues in one Muon step over the {len(weights)} matrices: {collectives}")
        write_result(args, [{"step_on": name, "ms": seconds * 1e3, "vs_full": seconds / rows[0][1],
                             "gflops_per_rank": flops / seconds / 1e9} for name, seconds in rows],
                     config={"preset": args.preset, "layers": args.layers, "repeats": args.repeats, "world": world,
                             "shapes": shapes, "collectives": collectives})
    exit_without_teardown(0)  # closes the group; gloo's C++ teardown at exit can abort a finished worker


if __name__ == "__main__":
    main()
