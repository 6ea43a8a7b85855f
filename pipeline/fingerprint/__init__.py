"""Content fingerprints of values and of code.

``values`` holds the one registry; importing ``code`` registers the function and class
handlers into it (so the package always has both).
"""

from .code import code_components, code_fingerprint
from .component import Component
from .values import fingerprint, fingerprint_entries, register

__all__ = ["fingerprint", "fingerprint_entries", "code_fingerprint", "code_components", "register", "Component"]
