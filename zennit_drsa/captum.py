"""DRSA for Captum: :class:`DRSAAttribution` and :class:`LayerDRSAAttribution`.

Importing this module does not import Captum: the classes subclass Captum's base classes, so
they are defined in :mod:`zennit_drsa._captum`, which this module imports on first access to
either name (module ``__getattr__``, PEP 562). Code that never touches them, e.g. the Zennit
attributor, never pays for importing Captum.

>>> from zennit_drsa.captum import DRSAAttribution  # imports captum here  # doctest: +SKIP
>>> attribution = DRSAAttribution(model, "features.10", drsa, composite=composite)
... # doctest: +SKIP
>>> heatmap = attribution.attribute(x, target=3, concept=0)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._captum import DRSAAttribution, LayerDRSAAttribution

__all__ = ["DRSAAttribution", "LayerDRSAAttribution"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            implementation = importlib.import_module("zennit_drsa._captum")
        except ImportError as error:
            raise ImportError(
                f"zennit_drsa.captum.{name} needs captum; install it with `pip install captum`"
            ) from error
        value = getattr(implementation, name)
        # Cache it, so that later lookups (and pickle) find it like a regular attribute.
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
