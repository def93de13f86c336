"""Simulated shoppers for the flywheel demo: what they type into /search, and many of them at once.

The queries are written here from the catalog's own words (item titles and categories), the way people use a
search box, and never from the world's persona generator (distill/data): short box queries ("rainbow",
"cheap umbrella"), gift requests ("a present for my dad who loves trains"), conversations with the shop
(a request, the shop's question, the answer), and "this, but ..." edits of a result they were just shown (a
composed query on that item). Titles are drawn with Zipf weights, so some queries are popular and repeat,
as in a real log. Everything is seeded: one seed, one stream of sessions.

    users = Shoppers(Vocabulary.from_catalog("runs/embedded/world/catalog"), seed=0)
    load = Load("http://127.0.0.1:8000", users, threads=4)
    load.run(500)                  # 500 requests, then return
    load.start(); ...; load.stop() # in the background until stopped
    print(load.summary())

Used by scripts/flywheel_demo.py and tests/flywheel/test_flywheel_turn.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

WHO = ("mum", "dad", "sister", "brother", "grandfather", "grandmother", "niece", "nephew", "best friend", "boss")
COLOURS = ("red", "blue", "green", "yellow", "black", "pink", "purple", "orange", "white", "gold")
BOX = ("{t}", "{t}", "{t} gift", "cheap {t}", "cute {t}", "{t} for kids", "{t} sticker", "best {t}", "{t} {colour}")
GIFTS = ("a present for my {who} who loves {t}", "gift for a {who} into {c}", "something with a {t} for my {who}",
         "birthday gift {who} {t}")
OPENERS = ("I'm looking for a present for my {who}", "hi, I need a gift", "what do you have for a {who}?")
QUESTIONS = ("What are they into?", "Any favourite things?", "What do they like?")
ANSWERS = ("{t}, mostly", "they love {t} and anything {c}", "{c}, I think. maybe a {t}")
EDITS = ("this, but {colour}", "this but in {colour}", "like this, but smaller", "same but more {c}",
         "this, but as a {t}")
FIRST = (("box", 0.5), ("gift", 0.25), ("conversation", 0.25))
NEXT = (("edit", 0.3), ("box", 0.3), ("gift", 0.1), ("conversation", 0.1), ("stop", 0.2))


@dataclass(frozen=True)
class Vocabulary:
    """The catalog's words a shopper may use: distinct titles and categories, lower-cased, sorted."""

    titles: tuple[str, ...]
    categories: tuple[str, ...]

    @classmethod
    def from_catalog(cls, catalog_dir: str | Path) -> "Vocabulary":
        from distill.data.layout import read_catalog

        table = read_catalog(catalog_dir, columns=["title", "category"])
        titles = sorted({t.lower() for t in table["title"].to_pylist() if t})
        categories = sorted({c.lower().replace("_", " ") for c in table["category"].to_pylist() if c})
        return cls(tuple(titles), tuple(categories or titles))


class Shoppers:
    """Seeded shoppers: each has a taste (a few titles, popular ones more often) and asks `next_query`."""

    def __init__(self, vocab: Vocabulary, seed: int = 0, k: int = 10):
        self.vocab, self.seed, self.k = vocab, seed, k
        order = random.Random(seed).sample(range(len(vocab.titles)), len(vocab.titles))
        self._titles = [vocab.titles[i] for i in order]
        self._weights = [1.0 / (rank + 1) for rank in range(len(order))]  # Zipf: a few titles are popular

    def session(self, user: int) -> "Session":
        rng = random.Random(f"{self.seed}-{user}")
        taste = rng.choices(self._titles, self._weights, k=3)
        return Session(self, rng, taste)

    def words(self, rng: random.Random, taste: list[str]) -> dict[str, str]:
        return {"t": rng.choice(taste), "c": rng.choice(self.vocab.categories), "who": rng.choice(WHO),
                "colour": rng.choice(COLOURS)}


@dataclass
class Session:
    """One shopper's visit: a first query, then edits and new queries until it stops (`next_query` -> None)."""

    users: Shoppers
    rng: random.Random
    taste: list[str]
    asked: int = 0

    def next_query(self, last_results: list[str]) -> dict | None:
        """The next /search body; `last_results` are the item ids the previous search returned."""
        kind = _pick(self.rng, FIRST if self.asked == 0 else NEXT)
        if self.asked >= 6 or kind == "stop" or (kind == "edit" and not last_results):
            return None
        self.asked += 1
        w = self.users.words(self.rng, self.taste)
        if kind == "edit":  # the shopper clicks one of the first results and asks for a change
            reference = self.rng.choice(last_results[:3])
            query = {"kind": "composed", "reference_item": reference,
                     "modification": self.rng.choice(EDITS).format(**w)}
        elif kind == "conversation":
            query = {"kind": "conversation", "turns": [
                {"role": "user", "content": self.rng.choice(OPENERS).format(**w)},
                {"role": "assistant", "content": self.rng.choice(QUESTIONS)},
                {"role": "user", "content": self.rng.choice(ANSWERS).format(**w)}]}
        else:
            query = self.rng.choice(BOX if kind == "box" else GIFTS).format(**w)
        return {"query": query, "k": self.users.k}


def _pick(rng: random.Random, choices) -> str:
    names, weights = zip(*choices)
    return rng.choices(names, weights, k=1)[0]


def query_kind(body: dict) -> str:
    return body["query"]["kind"] if isinstance(body["query"], dict) else "text"


@dataclass
class Tally:
    """What the load saw: answers by kind and by index version, failures with their reasons, when."""

    answered: int = 0
    failed: list[tuple[float, str]] = field(default_factory=list)  # (time, status or error)
    kinds: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # version -> time of its first answer
    last_seen: dict[str, float] = field(default_factory=dict)


class Load:
    """`threads` shoppers at a time against `url`, each running sessions back to back (users i, i + threads, ...)."""

    def __init__(self, url: str, users: Shoppers, threads: int = 4, timeout_s: float = 60.0, first_user: int = 0):
        self.url, self.users, self.threads, self.timeout_s = url, users, threads, timeout_s
        self.first_user = first_user
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget: int | None = None
        self._sent = 0
        self._workers: list[threading.Thread] = []

    def run(self, n_requests: int) -> Tally:
        """Send `n_requests` requests, then return what they got."""
        self.start(n_requests)
        for t in self._workers:
            t.join()
        return self.tally

    def start(self, n_requests: int | None = None) -> None:
        self._budget, self._sent = n_requests, 0
        self._stop.clear()
        self._workers = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.threads)]
        for t in self._workers:
            t.start()

    def stop(self) -> Tally:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout_s + 5)
        return self.tally

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or (self._budget is not None and self._sent >= self._budget):
                return False
            self._sent += 1
            return True

    def _worker(self, index: int) -> None:
        user = self.first_user + index
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                session, results = self.users.session(user), []
                while (body := session.next_query(results)) is not None:
                    if not self._take():
                        return
                    results = self._search(client, body)
                user += self.threads

    def _search(self, client: httpx.Client, body: dict) -> list[str]:
        try:
            r = client.post("/search", json=body)
        except httpx.HTTPError as err:
            self._record(body, None, f"{type(err).__name__}: {err}")
            return []
        if r.status_code != 200:
            self._record(body, None, f"HTTP {r.status_code}: {r.text[:200]}")
            return []
        answer = r.json()
        self._record(body, answer["version"], None)
        return [hit["item_id"] for hit in answer["results"]]

    def _record(self, body: dict, version: str | None, error: str | None) -> None:
        now = time.time()
        with self._lock:
            t = self.tally
            if error is not None:
                t.failed.append((now, error))
                return
            t.answered += 1
            t.kinds[query_kind(body)] += 1
            t.versions[version] += 1
            t.first_seen.setdefault(version, now)
            t.last_seen[version] = now
