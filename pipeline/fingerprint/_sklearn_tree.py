"""A fitted scikit-learn tree (``sklearn.tree._tree.Tree``: every tree of a forest or a
boosting ensemble): its constructor arguments and the two arrays pickle saves, ``nodes``
(a structured array) and ``values``, fed zero-copy with dtype and shape through the numpy
path. Registered once ``sklearn.tree._tree`` is imported (a Tree can't exist before), so
hashing an estimator never imports sklearn.tree.

``nodes`` has padding (7 bytes after each node's last field) that holds whatever the memory
held: zero in a freshly fitted tree, anything in one unpickled. It is fed with the padding
zeroed (``_numpy.feed_buffer``), so a model and its joblib round trip hash equal.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from sklearn.tree._tree import Tree

from ._numpy import array_header, feed_buffer
from .encoder import Encoder
from .values import encode, encode_object

_TREE_STATE = frozenset({"max_depth", "node_count", "nodes", "values"})
_TREE_HEAD = functools.partial(struct.Struct("<13s4q").pack, b"sklearn.Tree\x00")


@encode.register(Tree)
def _tree(t: Tree, enc: Encoder) -> None:
    """What ``Tree.__reduce__`` saves: (n_features, n_classes, n_outputs) and its state."""
    if type(t) is not Tree:  # a subclass may add state of its own: the generic walk
        encode_object(t, enc)
        return
    _, (n_features, n_classes, n_outputs), state = t.__reduce__()
    if state.keys() != _TREE_STATE:  # another sklearn's layout: walk it, never guess
        encode_object(t, enc)
        return
    nodes, values = state["nodes"], state["values"]
    plain = type(n_classes) is type(nodes) is type(values) is np.ndarray
    plain = plain and n_classes.flags.c_contiguous and nodes.flags.c_contiguous and values.flags.c_contiguous
    if not plain or n_classes.dtype.hasobject or nodes.dtype.hasobject or values.dtype.hasobject:
        enc.tag(b"sklearn.Tree")
        _ints(enc, n_features, n_outputs, state["max_depth"], state["node_count"])
        enc.value_at(".n_classes", n_classes)
        enc.value_at(".nodes", nodes)
        enc.value_at(".values", values)
        return
    # the same stream as above in few updates: the small tokens joined
    head = _TREE_HEAD(n_features, n_outputs, state["max_depth"], state["node_count"])
    enc.update(b"".join((head, array_header(n_classes), n_classes.tobytes(), array_header(nodes))))
    feed_buffer(nodes, enc)  # its padding bytes zeroed
    enc.update(array_header(values))
    enc.update(values)  # C-contiguous, plain: its buffer is what feed_buffer would feed


def _ints(enc: Encoder, *numbers: int) -> None:
    for n in numbers:
        enc.int(n)
