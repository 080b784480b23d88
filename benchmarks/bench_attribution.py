"""Cost of DRSA concept heatmaps against a standard heatmap, the thesis approach and Captum.

On the reference 3 s architecture (``AudioCNN.preset("gtzan")``, random seeded weights; batch
16 of 1×128×128 inputs; K = 4 subspaces of d_k = 16 at the 4th block's ReLU, d = 64) this
measures, side by side over several rounds in rotating order (medians; a change in machine
load affects all methods alike):

1. ``DRSAAttributor`` (K concept maps + residual: one forward pass, one backward pass to the
   layer, one batched backward pass to the input) against one standard heatmap from Zennit's
   ``Gradient`` with the same composite (the reference rule map). Target: ≤ 3×.
2. The thesis approach, which replicates the input K + 1 times through the whole network (a
   forward and backward pass on a batch of (K + 1)·B), against ``DRSAAttributor``; the maps
   must be identical (the maximal absolute difference is printed). Target: ≥ 2.5× faster.
3. ``DRSAAttribution.attribute(..., concept=0)`` (one concept map, Captum API) against
   ``captum.attr.LRP`` on the same model with the same rules (ε on every layer, as Captum's
   LRP has no WSquare and a different γ rule); the standard maps of both are compared.

Ratios are printed for wall-clock time and for the process's CPU time (steadier on a shared
machine). Before and after the measurements, the fixed cost of one parallel operation is
printed: when other processes keep the cores busy, every parallel operation with several
threads waits for a descheduled thread (milliseconds instead of microseconds), so timings
with more than one thread then count operations rather than measure work, and the ratios
are not those of the methods. ``--propagation`` picks how the DRSA maps go below the layer
(``auto``, the default, takes the chain path on this architecture; ``generic`` measures
autograd's batched backward pass instead). Example::

    python benchmarks/bench_attribution.py --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from _machine import machine_check
from captum.attr import LRP
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite
from zennit.rules import Epsilon, Pass
from zennit.types import Activation, Convolution

from audio_cnn.model import AudioCNN
from zennit_drsa.attribution import PROPAGATIONS, DRSAAttributor
from zennit_drsa.captum import DRSAAttribution
from zennit_drsa.composites import reference_composite
from zennit_drsa.context import LayerContext

N_SUBSPACES = 4
SUBSPACE_DIM = 16
CAPTUM_EPSILON = 1e-9  # Captum's default ε


@dataclass
class Basis:
    """A random orthonormal basis with the estimator interface (components_, subspace_sizes_)."""

    components_: np.ndarray
    subspace_sizes_: list[int]


def _random_basis(dim: int, seed: int) -> Basis:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    sizes = [SUBSPACE_DIM] * N_SUBSPACES
    return Basis(q[:, : sum(sizes)].T.copy(), sizes)


def _thesis_maps(model, composite, layer, basis, x, attr_output) -> torch.Tensor:
    """Replicate the input K + 1 times; replica k carries a ⊙ P_k c down from the layer."""
    replicas = N_SUBSPACES + 1
    components = torch.as_tensor(basis.components_, dtype=x.dtype, device=x.device)
    blocks = components.split(basis.subspace_sizes_)
    projectors = [block.T @ block for block in blocks]
    projectors.append(torch.eye(components.shape[1], device=x.device) - sum(projectors))
    with LayerContext(model, composite, layer) as context:
        output = context.forward(x.repeat(replicas, *([1] * (x.dim() - 1))))
        _, c = context.backward(output, attr_output.repeat(replicas, 1), retain_graph=True)
        a = context.activation.detach()
        batch = len(x)
        relevance = torch.cat(
            [
                a[k * batch : (k + 1) * batch]
                * torch.einsum("ij,bj...->bi...", projector, c[k * batch : (k + 1) * batch])
                for k, projector in enumerate(projectors)
            ]
        )
        (heatmaps,) = torch.autograd.grad(context.activation, context.input, relevance)
        context.clear()
    return heatmaps.reshape(replicas, batch, *x.shape[1:]).transpose(0, 1)


def _epsilon_composite() -> LayerMapComposite:
    return LayerMapComposite(
        [
            (Activation, Pass()),
            (Convolution, Epsilon(epsilon=CAPTUM_EPSILON)),
            (nn.Linear, Epsilon(epsilon=CAPTUM_EPSILON)),
        ]
    )


def _captum_lrp(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    # Captum needs a rule on every leaf it does not know (Flatten) and removes rules after
    # each call, so they are set for every call.
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear | nn.MaxPool2d | nn.Flatten):
            module.rule = EpsilonRule(epsilon=CAPTUM_EPSILON)
    return LRP(model).attribute(x, target=target)


def _timed(run: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # kernels run asynchronously: time them to their end
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _median_times(methods: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Run every method once to warm up, then ``repeats`` rounds in rotating order."""
    results = {name: run() for name, run in methods.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    names = list(methods)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu, results[name] = _timed(methods[name])
            times[name].append((wall, cpu))
    medians = {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }
    return {"medians": medians, "results": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch", type=int, default=16, help="inputs per batch (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--propagation",
        choices=PROPAGATIONS,
        default="auto",
        help="how DRSA's maps go below the layer (default auto: the chain path here)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = AudioCNN.preset("gtzan").eval().to(device)
    layer = model.block_output(4)
    basis = _random_basis(64, args.seed)
    x = torch.randn(args.batch, 1, *model.config.input_shape).to(device)
    target = 3
    attr_output = nn.functional.one_hot(torch.full((args.batch,), target), 10).float().to(device)
    print(
        f"AudioCNN 'gtzan' (random weights), batch {args.batch} × 1×128×128, layer {layer}, "
        f"K = {N_SUBSPACES}, d_k = {SUBSPACE_DIM}, device {device}, {args.threads} threads, "
        f"{args.repeats} rounds (medians), propagation {args.propagation!r}"
    )
    machine_check(args.threads, "before")

    composite = reference_composite(model)
    standard = Gradient(model, reference_composite(model))
    attributor = DRSAAttributor(model, composite, layer, basis, propagation=args.propagation)
    zennit = _median_times(
        {
            "standard heatmap (Zennit Gradient)": lambda: standard(x, attr_output)[1],
            "DRSA: K maps + residual": lambda: attributor(x, attr_output)[1],
            "thesis: input replicated K + 1 times": lambda: _thesis_maps(
                model, reference_composite(model), layer, basis, x, attr_output
            ),
        },
        args.repeats,
    )

    drsa_attribution = DRSAAttribution(
        model, layer, basis, composite=_epsilon_composite(), propagation=args.propagation
    )
    captum = _median_times(
        {
            "DRSAAttribution (one concept map)": lambda: drsa_attribution.attribute(
                x, target=target, concept=0
            ),
            "captum.attr.LRP (standard map)": lambda: _captum_lrp(model, x, target),
        },
        args.repeats,
    )

    machine_check(args.threads, "after")
    for name, (wall, cpu) in {**zennit["medians"], **captum["medians"]}.items():
        print(f"  {name:<40s} {wall:7.2f} s wall  {cpu:7.2f} s CPU")

    def ratio(table: dict, numerator: str, denominator: str) -> str:
        (wall_n, cpu_n), (wall_d, cpu_d) = table[numerator], table[denominator]
        return f"{wall_n / wall_d:.2f}× wall, {cpu_n / cpu_d:.2f}× CPU"

    names = list(zennit["medians"])
    maps = zennit["results"]
    difference = float((maps[names[1]] - maps[names[2]]).abs().max())
    scale = float(maps[names[1]].abs().max())
    sum_error = float((maps[names[1]].sum(1) - maps[names[0]]).abs().max())
    print(f"1. DRSA (K + 1 maps) / standard heatmap: {ratio(zennit['medians'], names[1], names[0])}"
          f"   (target ≤ 3×; max |Σ maps − standard| = {sum_error:.2e})")  # fmt: skip
    print(f"2. thesis / DRSA: {ratio(zennit['medians'], names[2], names[1])}   (target ≥ 2.5×; "
          f"max |difference of maps| = {difference:.2e}, max |map| = {scale:.2e})")  # fmt: skip

    with torch.no_grad():
        ours = drsa_attribution.attribute(x, target=target)
    theirs = _captum_lrp(model, x, target).detach()
    agreement = float((ours - theirs).norm() / theirs.norm())
    captum_names = list(captum["medians"])
    print(f"3. DRSAAttribution (one concept) / captum LRP: "
          f"{ratio(captum['medians'], captum_names[0], captum_names[1])}   (standard maps with "
          f"the same ε rules differ by {agreement:.2e} relative)")  # fmt: skip


if __name__ == "__main__":
    main()
