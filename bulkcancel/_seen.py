"""A compact set of names already seen: 8-byte fingerprints in one flat open-addressing table.

A Python ``set`` of 16-byte digests costs about 90 MB per million names (a bytes object of ~50
bytes plus its slot and the set's spare room); this table costs 8 bytes per slot at a load of at
most one half, about 16-32 MB per million, and never holds the names themselves.

Why 8 bytes are enough: a fingerprint is the first 64 bits of BLAKE2b of the name, so two
different names collide with probability 2**-64, and among ``n`` names the chance that any two
collide is at most n**2 / 2**65: about 3 in 100 million for a million names, 3 in 10,000 for
100 million. A collision would make a later name look like a duplicate of an earlier one (it
would be skipped and counted as ``duplicate``); that is the whole risk, and it is far below the
chance of a bad input line. Fingerprint 0 marks an empty slot, so a name whose fingerprint is 0
is stored as 1 (doubling the odds for two values out of 2**64 changes nothing above).
"""

from __future__ import annotations

import hashlib
from array import array

_START = 1 << 12


def fingerprint(name: str) -> int:
    """The name's 64-bit fingerprint, never 0."""
    value = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return value or 1


class SeenNames:
    """``add`` returns whether the name is new; memory is a flat array, no object per name."""

    __slots__ = ("_count", "_mask", "_slots")

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * _START))
        self._mask = _START - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, name: str) -> bool:
        value = fingerprint(name)
        slots, mask = self._slots, self._mask
        index = value & mask
        while True:
            found = slots[index]
            if found == value:
                return True
            if not found:
                return False
            index = (index + 1) & mask

    def add(self, name: str) -> bool:
        """Remember ``name``; True when it was not seen before."""
        if self._insert(fingerprint(name)):
            self._count += 1
            if 2 * self._count > len(self._slots):
                self._grow()
            return True
        return False

    def _insert(self, value: int) -> bool:
        slots, mask = self._slots, self._mask
        # The low bits of a uniform hash are uniform: linear probing from them is fine.
        index = value & mask
        while True:
            found = slots[index]
            if not found:
                slots[index] = value
                return True
            if found == value:
                return False
            index = (index + 1) & mask

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        for value in old:
            if value:
                self._insert(value)
