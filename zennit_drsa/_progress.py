"""Progress bars for long core operations, without making tqdm a dependency of the core."""

from __future__ import annotations

import contextlib
from typing import Any


class _Silent(contextlib.AbstractContextManager):
    """Stands in for a tqdm bar when progress is off or tqdm is not installed."""

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        """Do nothing (tqdm's ``update``)."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Do nothing (tqdm's ``set_postfix``)."""


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    """A ``tqdm.auto`` bar if ``enabled`` and tqdm is installed, else a silent stand-in.

    tqdm comes with the ``[audio]`` extra; imported here, on first use, so that
    ``import zennit_drsa`` never needs it.
    """
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _Silent()
        return tqdm(total=total, desc=desc, unit=unit)
    return _Silent()
