"""The flywheel demo's simulated shoppers (scripts/flywheel_users.py), without Serve: what they send."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from helpers.data import make_catalog

from distill.retrieval.queries import ComposedQuery, ConversationQuery, TextQuery, parse_query

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the demo's module, next to its script

from flywheel_users import Shoppers, Vocabulary, query_kind  # noqa: E402


def _visits(users: Shoppers, n: int, results: list[str]) -> list[list[dict]]:
    """n sessions, each answered with `results` after every search."""
    out = []
    for user in range(n):
        session, bodies = users.session(user), []
        while (body := session.next_query(results)) is not None:
            bodies.append(body)
        out.append(bodies)
    return out


def test_shoppers_use_the_catalogs_words_in_every_query_kind(tmp_path):
    vocab = Vocabulary.from_catalog(make_catalog(tmp_path / "catalog", n=18))
    assert vocab.titles == tuple(sorted({f"{c} {n}" for c in ("red", "green", "blue", "yellow", "purple", "orange")
                                         for n in ("ball", "box", "kite")}))
    visits = _visits(Shoppers(vocab, seed=3), 200, ["item-001", "item-002", "item-003"])
    bodies = [b for v in visits for b in v]
    kinds = Counter(query_kind(b) for b in bodies)
    assert set(kinds) == {"text", "conversation", "composed"} and kinds["text"] > kinds["composed"] > 0
    for body in bodies:
        query = parse_query(body["query"])  # every body is a valid /search query
        assert body["k"] == 10
        if isinstance(query, ComposedQuery):
            assert query.reference_item in {"item-001", "item-002", "item-003"}  # an edit of a shown result
        elif isinstance(query, ConversationQuery):
            assert [t.role for t in query.turns] == ["user", "assistant", "user"]
        else:
            assert isinstance(query, TextQuery) and query.text.strip()
    assert all(1 <= len(v) <= 6 for v in visits)
    texts = Counter(b["query"] for b in bodies if isinstance(b["query"], str))
    assert texts.most_common(1)[0][1] >= 5  # popular titles: the same query is typed again and again


def test_sessions_are_seeded_and_edits_need_a_result(tmp_path):
    vocab = Vocabulary.from_catalog(make_catalog(tmp_path / "catalog", n=18))
    shown = ["item-004", "item-005"]
    assert _visits(Shoppers(vocab, seed=1), 20, shown) == _visits(Shoppers(vocab, seed=1), 20, shown)
    assert _visits(Shoppers(vocab, seed=1), 20, shown) != _visits(Shoppers(vocab, seed=2), 20, shown)
    no_results = [b for v in _visits(Shoppers(vocab, seed=1), 100, []) for b in v]
    assert no_results and all(query_kind(b) != "composed" for b in no_results)  # nothing shown: nothing to edit
