"""State capture and restore per kind of object: torch, scikit-learn, numpy, plain values.

An adapter turns a live object into a *payload* (plain picklable data: numpy arrays, dicts,
an estimator copy) and puts a payload back into a live object, in place where it can:

- ``torch.nn.Module`` / ``torch.optim.Optimizer`` / LR scheduler: ``state_dict`` with every
  tensor as a numpy array (so joblib writes raw buffers), restored by ``load_state_dict``;
  ``torch.Generator`` by ``get_state`` / ``set_state``; a bare tensor by ``copy_``.
- scikit-learn estimators (``SGDClassifier``, ``MLPClassifier``… with ``partial_fit``): the
  whole fitted estimator, internal optimizer state (``_optimizer``, ``t_``, ``_random_state``)
  included; restored into the existing object's ``__dict__``.
- numpy ``Generator`` / ``RandomState``: bit-generator state; arrays: copied, restored in place.
- anything else: a deep copy, pickled by joblib (checked once, so a bad entry fails at once).

torch is imported only when a torch object is met (``pipeline.training`` works without it).
With ``copy=True`` a payload is a snapshot later training steps cannot touch (what an async
write needs); with ``copy=False`` it may share memory with the live object (sync writes).
"""

from __future__ import annotations

import array as _array
import copy as _copy
import pickle
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import CheckpointError
from ..store import codecs


@dataclass(frozen=True)
class Adapter:
    kind: str
    matches: Callable[[Any], bool]
    capture: Callable[[Any, bool], Any]
    """(live object, copy) -> payload"""
    apply: Callable[[Any, Any], Any]
    """(live object or None, payload) -> the restored object (the live one when in place)"""


def _module_of(obj: Any) -> str:
    return type(obj).__module__.partition(".")[0]


# -- torch -----------------------------------------------------------------------------------
def _tensor_out(t: Any, copy: bool) -> Any:
    """A tensor as a numpy array (a private copy when ``copy``); exotic dtypes as raw bytes."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()  # already a copy
    elif copy:
        t = t.clone()
    try:
        return t.numpy()
    except (TypeError, RuntimeError):  # bfloat16 & co. have no numpy dtype
        return {"__torch_dtype__": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                "bytes": t.contiguous().view(-1).view(_torch().uint8).numpy()}  # fmt: skip


def _tensor_in(v: Any) -> Any:
    torch = _torch()
    if isinstance(v, dict) and "__torch_dtype__" in v:
        return torch.from_numpy(v["bytes"]).view(getattr(torch, v["__torch_dtype__"])).reshape(v["shape"])
    return torch.from_numpy(v)


def _walk(obj: Any, leaf: Callable[[Any], Any], is_leaf: Callable[[Any], bool]) -> Any:
    if is_leaf(obj):
        return leaf(obj)
    if isinstance(obj, dict):
        out = type(obj)((k, _walk(v, leaf, is_leaf)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # torch state_dict: module versions for load_state_dict
            out._metadata = _copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        items = [_walk(v, leaf, is_leaf) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _torch() -> Any:
    import torch

    return torch


def _is_tensor(v: Any) -> bool:
    return _module_of(v) == "torch" and isinstance(v, _torch().Tensor)


def _is_ndarray(v: Any) -> bool:
    return _module_of(v) == "numpy" and type(v).__name__ == "ndarray"


def _is_array(v: Any) -> bool:
    """A tensor as :func:`_tensor_out` left it: an ndarray or a raw-bytes record."""
    return _is_ndarray(v) or (isinstance(v, dict) and "__torch_dtype__" in v)


def _torch_state_out(sd: Any, copy: bool) -> Any:
    out = _walk(sd, lambda t: _tensor_out(t, copy), _is_tensor)
    return _copy.deepcopy(out, {id(a): a for a in _arrays(out)}) if copy else out


def _arrays(obj: Any) -> list[Any]:
    found: list[Any] = []
    _walk(obj, lambda a: found.append(a), _is_array)
    return found


def _torch_state_in(payload: Any) -> Any:
    return _walk(payload, _tensor_in, _is_array)


def _torch_isinstance(obj: Any, path: str) -> bool:
    """isinstance against ``torch.<path>`` without importing torch (no torch loaded: False)."""
    target: Any = sys.modules.get("torch")
    if target is None:
        return False
    for part in path.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return isinstance(obj, target)


def _load_state(target: Any, payload: Any, what: str) -> Any:
    if target is None:
        raise CheckpointError(f"cannot restore a {what} without an object to load it into: add one to the default")
    target.load_state_dict(_torch_state_in(payload))
    return target


def _torch_tensor_apply(target: Any, payload: Any) -> Any:
    t = _tensor_in(payload)
    if target is not None and target.shape == t.shape and target.dtype == t.dtype:
        with _torch().no_grad():
            target.copy_(t)
        return target
    return t


def _torch_generator_apply(target: Any, payload: Any) -> Any:
    if target is None:
        raise CheckpointError("cannot restore a torch.Generator without one in the default state")
    target.set_state(_tensor_in(payload))
    return target


# -- scikit-learn ----------------------------------------------------------------------------
def _is_estimator(obj: Any) -> bool:
    return _module_of(obj) == "sklearn" or (hasattr(obj, "get_params") and hasattr(obj, "fit"))


def _estimator_apply(target: Any, payload: Any) -> Any:
    if target is not None and type(target) is type(payload) and hasattr(target, "__dict__"):
        target.__dict__.clear()
        target.__dict__.update(payload.__dict__)  # in place: references to the object stay valid
        return target
    return payload


# -- numpy -----------------------------------------------------------------------------------
def _np_type(obj: Any, name: str) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and _module_of(obj) == "numpy" and isinstance(obj, getattr(np.random, name, ()))


def _generator_apply(target: Any, payload: Any) -> Any:
    if target is None:
        import numpy as np

        target = np.random.default_rng()
    target.bit_generator.state = payload
    return target


def _random_state_apply(target: Any, payload: Any) -> Any:
    if target is None:
        import numpy as np

        target = np.random.RandomState()
    target.set_state(payload)
    return target


def _array_apply(target: Any, payload: Any) -> Any:
    if (
        target is not None
        and getattr(target, "shape", None) == payload.shape
        and target.dtype == payload.dtype
        and target.flags.writeable
    ):
        target[...] = payload
        return target
    return payload


ADAPTERS: list[Adapter] = [
    Adapter(
        "torch.module",
        lambda o: _torch_isinstance(o, "nn.Module"),
        lambda o, c: _torch_state_out(o.state_dict(), c),
        lambda t, p: _load_state(t, p, "torch module"),
    ),
    Adapter(
        "torch.optimizer",
        lambda o: _torch_isinstance(o, "optim.Optimizer"),
        lambda o, c: _torch_state_out(o.state_dict(), c),
        lambda t, p: _load_state(t, p, "torch optimizer"),
    ),
    Adapter(
        "torch.scheduler",
        lambda o: (
            _torch_isinstance(o, "optim.lr_scheduler.LRScheduler")
            or _torch_isinstance(o, "optim.lr_scheduler.ReduceLROnPlateau")
        ),
        lambda o, c: _torch_state_out(o.state_dict(), c),
        lambda t, p: _load_state(t, p, "learning-rate scheduler"),
    ),
    Adapter(
        "torch.generator",
        lambda o: _torch_isinstance(o, "Generator"),
        lambda o, c: _tensor_out(o.get_state(), c),
        _torch_generator_apply,
    ),
    Adapter("torch.tensor", _is_tensor, _tensor_out, _torch_tensor_apply),
    Adapter(
        "numpy.generator", lambda o: _np_type(o, "Generator"), lambda o, c: o.bit_generator.state, _generator_apply
    ),
    Adapter(
        "numpy.random_state", lambda o: _np_type(o, "RandomState"), lambda o, c: o.get_state(), _random_state_apply
    ),
    Adapter("numpy.array", _is_ndarray, lambda o, c: o.copy() if c else o, _array_apply),
    Adapter("sklearn.estimator", _is_estimator, lambda o, c: _copy.deepcopy(o) if c else o, _estimator_apply),
]


def register_adapter(
    kind: str,
    matches: Callable[[Any], bool],
    capture: Callable[[Any, bool], Any],
    apply: Callable[[Any, Any], Any],
) -> None:
    """Teach the Checkpointer a new kind of state (checked before the built-in ones)."""
    ADAPTERS.insert(0, Adapter(kind, matches, capture, apply))


def adapter_for(obj: Any) -> Adapter | None:
    for adapter in ADAPTERS:
        if adapter.matches(obj):
            return adapter
    return None


def _value_apply(target: Any, payload: Any) -> Any:
    return payload


PICKLED_KINDS = ("value", "sklearn.estimator")  # written by pickling the object itself
VALUE = Adapter("value", lambda o: True, lambda o, c: _copy.deepcopy(o) if c else o, _value_apply)


def capture(name: str, obj: Any, *, copy: bool, check: bool = False, pickle_now: bool = False) -> tuple[str, Any]:
    """``(kind, payload)`` of one state entry; a clear CheckpointError when it can't be captured.

    ``check`` additionally pickles a plain value once, so an entry that deep-copies but
    cannot be written (a lambda, a local class) fails here and not in a background thread.
    ``pickle_now`` (with ``copy``): an entry the store would pickle (an estimator, a plain
    object) is captured as the bytes it would write (``codecs.Pickled``) instead of a deep copy
    pickled later: one pass over the object instead of two, and nothing left to check."""
    adapter = adapter_for(obj) or VALUE
    if copy and pickle_now and adapter.kind in PICKLED_KINDS:
        payload = codecs.pickled(obj)
        if payload is not None:
            return adapter.kind, payload
    try:
        payload = adapter.capture(obj, copy)
        if check and adapter.kind in PICKLED_KINDS:
            pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise CheckpointError(
            f"cannot capture state entry {name!r} ({type(obj).__module__}.{type(obj).__qualname__}): {e}. "
            "Keep only picklable values, models, optimizers and RNGs in the training state, "
            "or teach the checkpointer this type with pipeline.training.register_adapter"
        ) from e
    return adapter.kind, payload


def restore(name: str, kind: str, target: Any, payload: Any) -> Any:
    """Put ``payload`` (captured as ``kind``) back; returns the object the state should hold."""
    adapter = next((a for a in ADAPTERS if a.kind == kind), VALUE if kind == "value" else None)
    if adapter is None:
        raise CheckpointError(f"state entry {name!r} was saved by an adapter {kind!r} that is not registered here")
    try:
        return adapter.apply(target, payload)
    except CheckpointError as e:
        raise CheckpointError(f"state entry {name!r}: {e}") from e
    except Exception as e:
        raise CheckpointError(
            f"cannot restore state entry {name!r} ({kind}) into {type(target).__name__}: {e}. "
            "The default state must be built the same way as the one that was saved"
        ) from e


# -- global RNG streams ----------------------------------------------------------------------
_UINT32 = _array.array("I").itemsize == 4


def capture_rng() -> dict[str, Any]:
    """The global random streams: Python ``random``, NumPy's global one, torch CPU (and CUDA)."""
    version, internal, gauss = random.getstate()
    np = sys.modules.get("numpy")
    # The Mersenne Twister's 625 words as one array: a tuple of 625 ints would go through
    # joblib's pure-Python pickler one int at a time, every checkpoint.
    # (Through array.array, a C copy of the tuple: 2.5x faster than np.asarray of it.)
    if np is None:
        words = internal
    elif _UINT32:
        words = np.frombuffer(_array.array("I", internal), dtype=np.uint32)
    else:
        words = np.asarray(internal, dtype=np.uint32)
    out: dict[str, Any] = {"python": (version, words, gauss)}
    if np is not None:
        out["numpy"] = np.random.get_state(legacy=False)
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["torch_cuda"] = [s.numpy() for s in torch.cuda.get_rng_state_all()]
    return out


def same_rng(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two ``capture_rng`` snapshots hold the same streams (compared, not hashed)."""
    return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)


def _same_state(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if _is_ndarray(a):
        return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    return bool(a == b)


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global streams back. torch's only when torch is loaded here: a program that
    uses torch has imported it before restoring, and one that doesn't should not pay for it."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(int(w) for w in words), gauss))
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    torch = sys.modules.get("torch")
    if "torch" in state and torch is not None:
        torch.set_rng_state(torch.from_numpy(state["torch"]))
        if "torch_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.from_numpy(s) for s in state["torch_cuda"]])


__all__ = ["Adapter", "ADAPTERS", "register_adapter", "adapter_for", "capture", "restore", "capture_rng", "same_rng",
           "restore_rng"]  # fmt: skip
