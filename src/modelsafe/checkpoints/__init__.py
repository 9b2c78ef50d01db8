"""``ms.Checkpointer`` and its parts: writing, the directory and its index, training state, restore.

``checkpointer``: the public class; ``write``: one checkpoint artifact (straight away or from a
host snapshot); ``directory`` and ``index``: what a checkpoint folder holds, retention and the
writer lock; ``remote``: a directory on a remote store (conditional index writes instead of the
lock); ``state`` and ``keras``: the training state of PyTorch and Keras runs; ``restore``:
reading a checkpoint back into live objects.
"""

from __future__ import annotations

from modelsafe.checkpoints.checkpointer import Checkpointer

__all__ = ["Checkpointer"]
