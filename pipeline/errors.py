"""The error family. Every error names the offending value and says what to do."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(PipelineError):
    """Malformed or contradictory configuration."""


class FingerprintError(PipelineError, TypeError):
    """A value (or a function's code) could not be fingerprinted."""


class StoreError(PipelineError):
    """The checkpoint store cannot be opened, read or written."""


class StoreUnreachable(StoreError):
    """The server of a store (an S3 endpoint) does not answer: down, a closed port, a wrong address."""


class IntegrityError(StoreError):
    """An object's bytes do not match its checksum (corrupt or tampered)."""


class CheckpointError(PipelineError):
    """A training checkpoint cannot be saved or restored."""


class UnsignedError(IntegrityError):
    """An object whose codec executes code on load (joblib) is not signed with the store's
    signing key: it is refused before any of its bytes is unpickled."""
