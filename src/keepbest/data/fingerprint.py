"""Whether a resumed run sees the data the interrupted run would have seen next.

Every resume state records the sha256 of the batch that comes right after it
(``batch_fingerprint``); a resumed run hashes its own first batch the same way, and a
difference is said once, in the run's notes and on stderr (``inexact_resume``): the
resumed training goes on, but it is no longer bit-exact.

Example:

    >>> import numpy as np
    >>> from keepbest.data.fingerprint import batch_fingerprint
    >>> batch = (np.zeros((2, 3), "float32"), np.array([0, 1]))
    >>> batch_fingerprint(batch) == batch_fingerprint((np.zeros((2, 3), "float32"),
    ...                                                np.array([0, 1])))
    True
    >>> batch_fingerprint(batch) == batch_fingerprint((np.ones((2, 3), "float32"),
    ...                                                np.array([0, 1])))
    False
"""

from __future__ import annotations

import hashlib

import numpy as np

SCRIPT_FIX = (
    "give fit arrays with shuffle=False, or a dataset whose order does not depend on the "
    "process (a fixed shuffle seed and reshuffle_each_iteration=False)"
)
FACTORY_FIX = (
    "make the dataset deterministic (a fixed shuffle seed, reshuffle_each_iteration=False, "
    "or return arrays and let keepbest shuffle)"
)


def _leaves(batch) -> list:
    try:
        import tensorflow as tf
    except ImportError:  # plain numpy (the doctest): tuples and lists only
        return list(batch) if isinstance(batch, (tuple, list)) else [batch]
    return tf.nest.flatten(batch, expand_composites=True)


def batch_fingerprint(batch) -> str:
    """The sha256 of a batch: every tensor's dtype, shape and bytes, in order (a
    distributed batch: every replica's part)."""
    digest = hashlib.sha256()
    for tensor in _leaves(batch):
        array = np.asarray(tensor)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def inexact_resume(source: str, step: int, fix: str = SCRIPT_FIX) -> str:
    """The one line that says a resume could not be bit-exact, and how to fix that."""
    return (
        f"resumed at step {step}, but {source} gave a first batch other than the one the "
        f"interrupted run would have seen next: this run is not bit-exact from here on; {fix}"
    )
