"""Deprecated alias of :mod:`audio_concepts.sonification` (the audio application)."""

from zennit_drsa._moved import forwarder

__getattr__ = forwarder(__name__, "audio_concepts.sonification")
