"""Deprecated aliases of names that moved from :mod:`zennit_drsa` to the audio application.

The plugin core stands alone (torch, Zennit, NumPy, SciPy, scikit-learn); the audio analysis
(configuration, steps, figures, sonification, HTML report, sweep, demo, command line) lives in
:mod:`audio_concepts`. Old import paths keep working for one release: the first use of a moved
name imports the application (only then) and warns with a :class:`DeprecationWarning` naming
the new place.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Collection
from typing import Any

REMOVED_IN = "0.3"


def forwarder(
    old_module: str, new_module: str, names: Collection[str] | None = None
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that forwards ``names`` to ``new_module``.

    Parameters
    ----------
    old_module:
        Name of the module that used to define the names (for messages).
    new_module:
        Module that defines them now; imported on first use, never at import time.
    names:
        The moved names; ``None``: every public name of ``new_module``.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module = importlib.import_module(new_module)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{old_module}.{name} moved to {new_module}.{name}; the old name is removed in "
            f"zennit-drsa {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
