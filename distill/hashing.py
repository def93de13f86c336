"""Stable hashes of strings: the same value on every run, machine and Python (no PYTHONHASHSEED).

Request keys, group ids, split membership, cache keys and index version names are all built from these.
"""

from __future__ import annotations

import hashlib


def stable_hash(*parts: str) -> int:
    """64-bit hash that does not depend on PYTHONHASHSEED."""
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def hash_key(*parts: str) -> str:
    """24 hex characters (96 bits): a key for stores and caches."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
