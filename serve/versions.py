"""Index versions inside the Serve app: which version a request uses, and which versions a replica holds.

The index root holds versions and a CURRENT pointer (distill.index.build). Each request is served with one
version end to end: the ingress picks it (`VersionTracker.current`), and the encoder and the index load
that version on first use (`VersionCache`, keeping the previous one). The tracker notices a new CURRENT
(or a pinned `user_config: {index_version: ...}`), warms the new version up in both deployments, then
switches; a version that fails to load is reported (`swap_error`) and never served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from distill import index as idx

log = logging.getLogger(__name__)


class VersionCache:
    """Loaded versions (LRU, `keep` of them); a version loads once even under concurrent requests."""

    def __init__(self, load: Callable[[str], Any], validate: Callable[[Any], None] | None = None, keep: int = 2):
        self._load, self._validate, self.keep = load, validate, keep
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def put(self, version: str, value: Any) -> None:
        self._items[version] = value
        self._items.move_to_end(version)
        while len(self._items) > self.keep:
            self._items.popitem(last=False)

    def loaded(self) -> list[Any]:
        return list(self._items.values())

    async def get(self, version: str) -> Any:
        if version not in self._items:
            lock = self._locks.setdefault(version, asyncio.Lock())
            async with lock:
                if version not in self._items:
                    # Load (and validate) off the event loop so requests on the old version keep flowing.
                    value = await asyncio.to_thread(self._load_checked, version)
                    self.put(version, value)
            self._locks.pop(version, None)
        self._items.move_to_end(version)
        return self._items[version]

    def _load_checked(self, version: str) -> Any:
        value = self._load(version)
        if self._validate is not None:
            self._validate(value)
        return value


class VersionTracker:
    """The version the ingress serves: CURRENT under `index_dir` (or a pinned one), re-read every `poll_s`.

    `prepare(version)` must load and check the version in every backend; only when it succeeds does the
    tracker switch, so requests keep using the old version meanwhile and a bad version is never served.
    """

    def __init__(self, index_dir: str, poll_s: float, prepare: Callable[[str], Awaitable[Any]]):
        self.index_dir, self.poll_s, self._prepare = index_dir, poll_s, prepare
        self.pinned: str | None = None
        self.active = idx.current_version(index_dir)
        self.swap_error: str | None = None
        self._failed: str | None = None  # not retried until CURRENT (or the pin) names another version
        self._next_check = time.monotonic() + poll_s
        self._switching: asyncio.Task | None = None

    def pin(self, version: str | None) -> None:
        """Serve `version` from now on (after preparing it); None follows CURRENT again."""
        self.pinned = version
        self._next_check = 0.0

    async def current(self) -> str:
        """The version to serve this request with; starts a switch in the background when one is due."""
        now = time.monotonic()
        if now >= self._next_check and self._switching is None:
            self._next_check = now + self.poll_s
            wanted = await self._wanted()
            if wanted not in (self.active, self._failed):
                self._switching = asyncio.create_task(self._switch(wanted))
        return self.active

    async def _wanted(self) -> str:
        if self.pinned:
            return self.pinned
        try:
            return await asyncio.to_thread(idx.current_version, self.index_dir)
        except idx.IndexDirError as err:  # a missing or broken CURRENT: keep serving what we have
            self.swap_error = str(err)
            return self.active

    async def _switch(self, version: str) -> None:
        try:
            await self._prepare(version)
            log.info("index version %s -> %s", self.active, version)
            self.active, self.swap_error, self._failed = version, None, None
        except Exception as err:  # noqa: BLE001 - a bad version must never take serving down
            self.swap_error, self._failed = f"version {version} was not taken up: {err}", version
            log.error(self.swap_error)
        finally:
            self._switching = None
