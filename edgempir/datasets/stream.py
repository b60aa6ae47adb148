"""The torch side of image folders: a map-style Dataset over a FolderSplit's rows. A module
of its own so that edgempir.datasets.folder imports without torch, and at module level so
that DataLoader workers started by spawn or forkserver can unpickle it."""
from __future__ import annotations

import numpy as np
import torch

from edgempir.datasets.folder import FolderSplit


class SplitRows(torch.utils.data.Dataset):
    """Row i -> (uint8 [3, S, S], label, decoded?, why not); a row that does not decode
    comes back as zeros with ok False, for the trainer to leave out and report."""

    def __init__(self, split: FolderSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        x, reason = self.split.try_load(int(i))
        ok = x is not None
        if x is None:
            s = self.split.image_size
            x = np.zeros((3, s, s), dtype=np.uint8)
        return torch.from_numpy(x), self.split.entries[int(i)].label, ok, reason
