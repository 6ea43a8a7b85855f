"""One recipe for every key: stage keys, Prefect task keys and search keys.

key = xxh3_128 of ``[version, kind name, code fingerprint, sorted((argument, fingerprint))]``

- ``version`` names the recipe (``stage/3``); it changes whenever the recipe or what a
  fingerprint covers changes, so an old key can never match a new one by accident.
- the code fingerprint is the digest of typed components ``(kind, name, digest)`` (see
  :mod:`pipeline.fingerprint.code`), or of the pin ``version="..."``.
- each argument contributes its content fingerprint under its name; the order arguments
  were passed in is not part of the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .fingerprint import Component, code_components, fingerprint
from .fingerprint.component import digest_components

STAGE = "stage/3"
PREFECT_TASK = "prefect-task/3"
SEARCH = "search/3"


@dataclass(frozen=True)
class CodeKey:
    """The code part of a key: its digest and the typed components it was made of."""

    digest: str
    components: tuple[Component, ...]


def code_key(func: Callable[..., Any], version: str | None = None) -> CodeKey:
    """The code part of ``func``'s key; ``version`` pins it by hand."""
    components = code_components(func, version=version)
    return CodeKey(digest_components(components), components)


def derive(recipe: str, name: str, code: str, arguments: Mapping[str, str]) -> str:
    """The key of one call: ``recipe`` (``STAGE``...), the stage/task/search name, its code
    fingerprint and each argument's fingerprint by name."""
    return fingerprint([recipe, name, code, sorted(arguments.items())])


def stage_key(name: str, code: str, arguments: Mapping[str, str]) -> str:
    return derive(STAGE, name, code, arguments)


def task_key(name: str, code: str, arguments: Mapping[str, str]) -> str:
    """A Prefect task's cache key (``StageCachePolicy``): the same recipe, bare hex."""
    return derive(PREFECT_TASK, name, code, arguments).partition(":")[2]


def search_key(name: str, train_fn: Callable[..., Any], **settings: Any) -> str:
    """A search's key: its name, its training function's code and its settings by name.

    The training function also counts by value: the data a ``functools.partial`` binds or
    a closure holds is part of what the search searches over."""
    arguments = {k: fingerprint(v, name=f"search setting {k!r}") for k, v in settings.items()}
    arguments["<train_fn>"] = fingerprint(train_fn, name="the training function")
    return derive(SEARCH, name, code_key(train_fn).digest, arguments)


__all__ = ["STAGE", "PREFECT_TASK", "SEARCH", "CodeKey", "code_key", "derive", "stage_key", "task_key", "search_key"]
