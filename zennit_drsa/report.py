"""Deprecated alias of :mod:`audio_concepts.report` (the audio application); removed in 0.3."""

from zennit_drsa._moved import forwarder

__getattr__ = forwarder(__name__, "audio_concepts.report")
