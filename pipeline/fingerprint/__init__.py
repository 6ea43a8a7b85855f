"""Content fingerprints of values and of code."""

from .code import code_components, code_fingerprint
from .values import fingerprint, register

__all__ = ["fingerprint", "code_fingerprint", "code_components", "register"]
