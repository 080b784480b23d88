"""What both command-line programs (``audio-cnn`` and ``zennit-drsa``) share.

:func:`read_settings` reads a ``--config`` JSON file and lays the given flags over it;
:func:`run_command` runs a command and turns the failures a user can fix into one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from atomic_io import read_json
from audio_cnn.audio_io import AudioDecodeError
from audio_cnn.train import TrainingDivergedError

__all__ = ["read_settings", "run_command"]


def read_settings(
    config_file: str | os.PathLike[str] | None, flags: Mapping[str, Any], *, what: str
) -> dict[str, Any]:
    """The settings of a ``--config`` file with the command-line flags laid over them.

    Parameters
    ----------
    config_file:
        A JSON file holding one object of settings, or ``None`` for flags only.
    flags:
        Setting name → value from the command line; ``None`` means "flag not given" and
        leaves the file's value (or the default) in place.
    what:
        What the settings are, for messages, e.g. ``"training settings"``.

    Returns
    -------
    dict
        The file's settings, updated with the flags that are not ``None``. The names are not
        checked here: the configuration class that receives them reports unknown ones.

    Raises
    ------
    ValueError
        One line naming the file, if it is missing or unreadable, not UTF-8 JSON, or not a
        JSON object.
    """
    settings: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = read_json(config_file, what=f"a JSON object of {what}")
        except OSError as error:
            # A missing or unreadable --config file is a bad setting like bad JSON in it.
            raise ValueError(str(error)) from error
        if not isinstance(loaded, dict):
            shown = json.dumps(loaded)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"{config_file} holds {shown}, not a JSON object of {what}")
        settings = loaded
    settings.update({name: value for name, value in flags.items() if value is not None})
    return settings


def run_command(
    program: str,
    run: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    interrupted: str = "interrupted",
) -> int:
    """Run ``run(args)`` and return the exit status.

    Failures a user can fix (bad settings or files, unreadable audio, a diverged training
    run, a full disk, a run directory in use) print one line
    ``<program> <command>: error: <message>`` and return 1 instead of a traceback (a message
    of several lines is joined into one); Ctrl-C prints ``interrupted`` and returns 130.
    Anything else is a bug and propagates with its traceback.
    """
    try:
        return run(args)
    except (ValueError, OSError, AudioDecodeError, TrainingDivergedError) as error:
        # Some libraries write paragraphs; on one line the message still reads as one error.
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"{program} {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of both commands: every option with its meaning and its default.

    A help text that already says its default (e.g. one found at run time, "from the data")
    is left as it is, and so are required options and positional arguments.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.required or not action.option_strings:
            return text
        return super()._get_help_string(action)
