"""Live tensor memory of a computation, measured op by op (works on fake tensors).

`LiveBytes` is a dispatch mode: every tensor an op returns is counted once per storage
(views share it) until Python and autograd both drop it (a weak reference on the storage,
which torch keeps alive as long as any tensor or saved-for-backward slot holds it). Run under
FakeTensorMode, the storages are shape-only, so an SD-sized step is measured exactly in
bytes without allocating them. Tensors that existed before the mode (weights, optimizer
state) are not counted, nor views of them once `ignore`d: the plan adds them from the
parameter counts.

The peak is kept with the storages alive at that moment, so a caller can split it (e.g. the
parameters' gradients vs the activations saved for backward).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors created inside the mode and still alive; their peak."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = WeakIdKeyDictionary()  # storage -> serial number
        self._sizes: dict[int, int] = {}  # serial -> bytes, for the storages alive now
        self._refs: dict[int, weakref.ref] = {}
        self._next = 0
        self.live = 0
        self.peak = 0
        self.peak_serials: frozenset[int] = frozenset()
        self._peak_dirty = False

    def ignore(self, tensors) -> None:
        """Storages that exist already (weights, buffers): views and aliases of them (a
        transposed weight saved for backward, `detach()`) are no new memory."""
        for t in tensors:
            self._ids.setdefault(t.untyped_storage(), -1)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._count(t.untyped_storage())
        return out

    def _count(self, storage) -> None:
        if storage in self._ids:
            return
        serial, self._next = self._next, self._next + 1
        self._ids[storage] = serial
        self._sizes[serial] = storage.nbytes()
        self._refs[serial] = weakref.ref(storage, lambda _r, s=serial: self._free(s))
        self.live += self._sizes[serial]
        if self.live > self.peak:
            self.peak = self.live
            self._peak_dirty = True  # the set is copied lazily, when the live set shrinks

    def _free(self, serial: int) -> None:
        if self._peak_dirty:
            self.peak_serials = frozenset(self._sizes)
            self._peak_dirty = False
        self.live -= self._sizes.pop(serial)
        self._refs.pop(serial, None)

    def peak_bytes_of(self, tensors: list[torch.Tensor]) -> int:
        """Bytes of these tensors' storages (each once) that were alive at the peak."""
        alive = frozenset(self._sizes) if self._peak_dirty else self.peak_serials
        sizes = {}
        for t in tensors:
            serial = self._ids.get(t.untyped_storage())
            if serial is not None and serial in alive:
                sizes[serial] = t.untyped_storage().nbytes()
        return sum(sizes.values())
