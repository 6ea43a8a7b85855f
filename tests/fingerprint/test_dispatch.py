"""The handler cache in front of the registry resolves as singledispatch does: a type's
handler changes with a registration after it was cached (for the type, a base of it, an
ABC it is a virtual subclass of) and with a virtual subclass registered afterwards."""

from __future__ import annotations

import abc

from pipeline.fingerprint import fingerprint, register


def test_a_registration_after_first_use_is_seen():
    class Base:
        def __init__(self, x):
            self.x = x

    class Child(Base):
        pass

    first = fingerprint(Child(1))  # the generic walk, now cached for Child
    register(Base)(lambda v: ("base", v.x))
    second = fingerprint(Child(1))
    assert second != first
    register(Child)(lambda v: ("child", v.x))
    assert fingerprint(Child(1)) not in (first, second)


def test_an_abc_gaining_a_virtual_subclass_after_first_use_is_seen():
    class Shape(abc.ABC):  # noqa: B024 - a plain ABC, used for virtual subclasses
        pass

    class Square:
        def __init__(self, side):
            self.side = side

    register(Shape)(lambda v: ("shape", vars(v)))
    before = fingerprint(Square(2))  # cached: the generic walk
    Shape.register(Square)
    after = fingerprint(Square(2))
    assert after != before
    assert after == fingerprint(Square(2))
