"""Signing keys and a pickle that runs code when loaded, for the tests of signed stores."""

from __future__ import annotations

import os

from pipeline.store.seal import Hmac

K1, K2 = Hmac(b"key one: a long random secret"), Hmac(b"key two: another secret")


class Payload:
    """Unpickling it runs code: it creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
