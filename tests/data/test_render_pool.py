"""The Iconify drawings rendered in worker processes are byte-identical to rendering in this process."""

from __future__ import annotations

from distill.data import render_pool
from distill.data.render_pool import RenderPool, render_chunk
from distill.data.world import parse_emoji_test, select_emoji


def _entries(n: int):
    return select_emoji(parse_emoji_test()[0])[0][:n]


def test_workers_return_the_in_process_drawings_in_entry_order(monkeypatch):
    entries = _entries(7)
    monkeypatch.setattr(render_pool, "CHUNK", 3)  # 3 chunks per designer: order across jobs matters
    expected = {d: render_chunk(d, entries, 64) for d in ("noto", "twemoji")}
    with RenderPool(["noto", "twemoji"], entries, 64, workers=2) as pool:
        assert pool._pool is not None  # really spawned
        got = {d: pool.results(d) for d in ("noto", "twemoji")}
    assert got == expected
    assert all(png is not None and png[:8] == b"\x89PNG\r\n\x1a\n" for png, _ in got["noto"])
    assert got["noto"] != got["twemoji"]  # two designers, two drawings


def test_one_worker_renders_in_process():
    entries = _entries(2)
    with RenderPool(["fluent"], entries, 64, workers=1) as pool:
        assert pool._pool is None
        assert pool.results("fluent") == render_chunk("fluent", entries, 64)


def test_a_dead_worker_falls_back_to_rendering_here(caplog):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    entries = _entries(2)
    dead = Future()
    dead.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    with RenderPool([], entries, 64, workers=1) as pool:
        pool._jobs = {"noto": [dead]}
        assert pool.results("noto") == render_chunk("noto", entries, 64)
    assert "render worker died" in caplog.text
