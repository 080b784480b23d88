"""What both command-line programs do around a command: report expected failures briefly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from audio_cnn.audio_io import AudioDecodeError
from audio_cnn.train import TrainingDivergedError


def run_command(
    program: str,
    run: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    interrupted: str = "interrupted",
) -> int:
    """Run ``run(args)`` and return the exit status.

    Failures a user can fix (bad settings or files, unreadable audio, a diverged training
    run) print one line ``<program> <command>: error: <message>`` and return 1 instead of a
    traceback; Ctrl-C prints ``interrupted`` and returns 130. Anything else is a bug and
    propagates with its traceback.
    """
    try:
        return run(args)
    except (ValueError, OSError, AudioDecodeError, TrainingDivergedError) as error:
        print(f"{program} {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
