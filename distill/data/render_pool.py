"""Render the Iconify designers' drawings (Noto, Twemoji, Fluent) in worker processes.

resvg holds the GIL (two threads render no faster than one), and on a 2-core machine the three SVG sets were
75 of the world build's 88 s in one process. Workers are spawned, not forked: the world can be built inside a
job whose process already runs Ray's threads. Each job renders a contiguous chunk of one designer's entries and
returns PNG bytes (what the catalog stores) or the reason an entry was skipped, so the result, in entry order,
is the same as rendering in one process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from distill.data.emoji_meta import EmojiEntry
from distill.data.emoji_sets import IconSet, SvgRenderer
from distill.images import encode_png

log = logging.getLogger(__name__)

Rendered = tuple[bytes | None, str | None]  # (PNG bytes, None) or (None, why it was skipped)
CHUNK = 128  # entries per job: small enough to spread three designers evenly over the workers


def render_chunk(designer: str, entries: list[EmojiEntry], image_size: int) -> list[Rendered]:
    """One designer's drawings of `entries`, in order."""
    icons = IconSet.load(designer)
    renderer = SvgRenderer(image_size)
    out: list[Rendered] = []
    for e in entries:
        hit = icons.find(e.codepoints, e.name)
        if hit is None:
            out.append((None, "not_in_set"))
            continue
        img, reason = renderer.render_icon(icons, *hit)
        out.append((encode_png(img), None) if reason is None else (None, reason))
    return out


def render_workers() -> int:
    """The cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class RenderPool:
    """Submit every designer's chunks at once, then collect each designer's results in entry order.

    With one worker (or `workers=0`) nothing is spawned: `results` renders in this process."""

    def __init__(self, designers: list[str], entries: list[EmojiEntry], image_size: int,
                 workers: int | None = None):
        self.entries, self.image_size = entries, image_size
        self.workers = render_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: dict[str, list[Future]] = {}
        if self.workers > 1 and designers and entries:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            chunks = [entries[i:i + CHUNK] for i in range(0, len(entries), CHUNK)]
            self._jobs = {d: [self._pool.submit(render_chunk, d, c, image_size) for c in chunks] for d in designers}

    def results(self, designer: str) -> list[Rendered]:
        """`designer`'s (PNG bytes or None, reason) per entry, in entry order."""
        if designer not in self._jobs:
            return render_chunk(designer, self.entries, self.image_size)
        try:
            return [r for job in self._jobs[designer] for r in job.result()]
        except BrokenProcessPool as err:  # a worker died (memory, a signal): render here, lose nothing
            log.warning("world: a render worker died (%s); rendering %s in this process", err, designer)
            return render_chunk(designer, self.entries, self.image_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
