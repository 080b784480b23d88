"""Full float32 for LRP on CUDA, whatever the global TF32 settings.

PyTorch lets CUDA convolutions use TF32 (10-bit mantissa) by default. LRP divides by the
layers' pre-activations, and TF32 rounding there breaks it: measured on an H200, concept
maps differed from the CPU's by 10.8 % of their maximum and conservation held only to
1.8e-4 (4.6e-5 and 2.6e-7 in full float32). :class:`~zennit_drsa.DRSAAttributor`,
:func:`~zennit_drsa.collect` and :func:`~zennit_drsa.patch_flipping` therefore compute in
full float32 (``precision="full"``) unless asked to keep TF32 for speed
(``precision="tf32"``, which leaves the global settings alone).

:func:`lrp_precision` turns TF32 off for the duration of a block and restores the previous
settings afterwards, also when the block raises; ``import zennit_drsa`` changes nothing.
The settings are process-global, so threads running CUDA work concurrently see them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

__all__ = ["PRECISIONS", "Precision", "check_precision", "lrp_precision"]

#: ``"full"``: float32 without TF32; ``"tf32"``: leave PyTorch's TF32 settings as they are.
Precision = Literal["full", "tf32"]
PRECISIONS: tuple[str, ...] = ("full", "tf32")


def check_precision(precision: str) -> Precision:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}, got {precision!r}; 'full' computes LRP "
            "in float32 without TF32, 'tf32' keeps PyTorch's (faster, less exact) settings"
        )
    return precision


@contextmanager
def lrp_precision(precision: Precision = "full") -> Iterator[None]:
    """Run a block with TF32 off for CUDA convolutions and matmuls (``precision="full"``).

    Sets ``torch.backends.cudnn.allow_tf32 = False`` and float32 matmul precision
    ``"highest"`` (``torch.backends.cuda.matmul.allow_tf32 = False``) and restores the
    previous values on leaving, also after an exception; blocks nest. Where PyTorch has the
    newer per-operator settings (``torch.backends.cudnn.conv.fp32_precision`` ...), their
    values are restored too; if they were set in a way the legacy flags cannot express
    (PyTorch then refuses to read those), convolutions and matmuls are set to ``"ieee"``
    through them instead.

    Parameters
    ----------
    precision : {"full", "tf32"}
        ``"full"`` for the above; ``"tf32"`` leaves every setting as it is (faster on
        Ampere and newer GPUs, at the cost of LRP's accuracy).

    Examples
    --------
    >>> with lrp_precision():
    ...     output = model(x)  # doctest: +SKIP
    """
    if check_precision(precision) == "tf32":
        yield
        return
    nodes = _per_operator_settings()
    saved_nodes = [node.fp32_precision for node in nodes]
    legacy = _legacy_settings()
    try:
        if legacy is None:
            torch.backends.cudnn.conv.fp32_precision = "ieee"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        else:
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")
        yield
    finally:
        if legacy is not None:
            torch.backends.cudnn.allow_tf32 = legacy[0]
            torch.set_float32_matmul_precision(legacy[1])
        # The legacy setters write these too, sometimes to equivalent but different values.
        for node, value in zip(nodes, saved_nodes, strict=True):
            node.fp32_precision = value


def _legacy_settings() -> tuple[bool, str] | None:
    """``(cudnn.allow_tf32, float32 matmul precision)``, or ``None`` where PyTorch refuses to
    read them because the per-operator settings were used."""
    try:
        return torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


def _per_operator_settings() -> list[object]:
    """PyTorch's per-operator float32 settings touched here (none before PyTorch 2.9)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        return []
    return [torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul]
