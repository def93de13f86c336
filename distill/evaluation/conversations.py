"""Conversational evaluation (the LaViC setting): the test personas told over 2-4 user turns.

`build_conversation(persona_id, text, seed)` turns a persona into a shop conversation, deterministic per
(seed, persona id). The persona's own clauses (`distill.teacher.taste.split_persona`) are revealed in order:

1. user: who the gift is for / who they are (the first sentence up to its "loves ..."), after an opener
   ("Hi! I need a present. It's for a sports therapist in their 50s.");
2. assistant: "What are they into?"; user: what they love ("They're really into travelling and motorbikes.");
3. assistant: "Anything they avoid, or a look they like?"; user: the persona's next sentence, verbatim
   ("Never buys anything green.");
4. assistant: "Anything else?"; user: the rest of the persona's sentences.

A persona with nothing after its first sentence gives 2 user turns, one with two or more further sentences 4.
The ground truth stays the teacher's tournament winner for the FULL persona: the question is how much of it
the student finds from the conversation (`conversation_rule` recency / concat, distill.retrieval.queries), and how much
the teacher gets back by re-ranking the student's top k with the whole conversation (`query_text`).
`evaluate_conversations` scores that; `distill.evaluation.query_sections` puts it in the report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from distill.hashing import stable_hash
from distill.retrieval.queries import CONVERSATION_RULES, ConversationQuery, Turn

OPENERS = ("Hi! I need a present.", "Hello, can you help me find a gift?", "I'm shopping for someone.")
ASK_WHO = ("Of course! Who is it for?", "Happy to help. Tell me about them?")
ASK_LIKES = ("Lovely! What are they into?", "Great. What do they enjoy?", "Nice. Any hobbies or favourite things?")
LIKES = ("They love {}.", "They're really into {}.", "Big fan of {}.")
ASK_MORE = ("Anything they avoid, or a look they like?", "Any colours, styles or things to steer clear of?",
            "Good to know. Anything I should keep in mind?")
ASK_LAST = ("Anything else?", "Noted. Anything more I should know?", "Got it. Anything else?")
MORE = ("{}", "Oh, and: {}", "Also: {}")
MAX_USER_TURNS = 4

_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_GIFT_START = re.compile(r"^(?:looking|shopping|searching) for (?:a |an |some )?(?:gift|present)s?\b", re.I)
_TRAILING = re.compile(r"(?:[\s,;:]+|\b(?:who|and|that|is|are)\s*)$", re.I)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(" ".join(text.split())) if s.strip()]


def _strip_trailing(text: str) -> str:
    prev = None
    while prev != text:
        prev, text = text, _TRAILING.sub("", text).rstrip()
    return text


def persona_parts(text: str) -> tuple[str | None, str | None, list[str]]:
    """(who they are, what they love, the remaining sentences) of a persona, from its first sentence's
    like clause (`split_persona`); who = the first sentence when it names no likes."""
    from distill.teacher.taste import _LIKE, split_persona

    sentences = _sentences(text)
    if not sentences:
        return None, None, []
    first, rest = sentences[0].rstrip(".!?"), sentences[1:]
    parts = split_persona(first)
    for phrase, _ in parts.likes:
        clause = parts.like_clause.get(phrase, "")
        match = _LIKE.search(clause)
        if match and match.group("what").strip(" .") == phrase and first.endswith(clause):
            start = len(first) - len(clause) + match.start()
            who = _strip_trailing(first[:start])
            return (who or None), phrase, rest
    return first, None, rest


def _who_turn(who: str, opener: str) -> str:
    if _GIFT_START.match(who):
        return f"Hi! {who}."
    if re.match(r"^(?:an?|the|my|our)\s", who, re.I):
        return f"{opener} It's for {who[0].lower()}{who[1:]}."
    return f"{opener} {who}."


def build_conversation(persona_id: str, text: str, seed: int = 0) -> ConversationQuery:
    """The persona as a 2-4 user-turn conversation (assistant turns in between); seeded per persona."""
    rng = np.random.default_rng([seed, stable_hash("conversation", persona_id) % (2**63)])

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    who, likes, rest = persona_parts(text)
    turns: list[tuple[str, str]] = []
    if who is None or (likes is None and not rest):  # nothing to spread out: the persona after an opener
        turns += [("user", pick(OPENERS)), ("assistant", pick(ASK_WHO)),
                  ("user", " ".join(_sentences(text)) or text.strip())]
        return ConversationQuery(kind="conversation", turns=[Turn(role=r, content=c) for r, c in turns])
    turns.append(("user", _who_turn(who, pick(OPENERS))))
    if likes is not None:
        turns += [("assistant", pick(ASK_LIKES)), ("user", pick(LIKES).format(likes))]
    room = MAX_USER_TURNS - sum(r == "user" for r, _ in turns)
    groups = rest[: room - 1] + [" ".join(rest[room - 1:])] if len(rest) > room else rest
    for i, group in enumerate(groups):
        turns += [("assistant", pick(ASK_MORE if i == 0 else ASK_LAST)), ("user", pick(MORE).format(group))]
    return ConversationQuery(kind="conversation", turns=[Turn(role=r, content=c) for r, c in turns])


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class ConversationResult:
    """Per model: per query ("full", "recency", "concat", "recency+rerank", ...) the winner's rank per persona."""

    model: str
    ranks: dict[str, np.ndarray]  # query -> [P] 1-based rank of the winner among n_items
    n_items: int
    reranked: dict[str, list[bool]] = field(default_factory=dict)  # rule -> per persona: the teacher answered
    reasons: dict[str, Counter] = field(default_factory=dict)  # rule -> drop reasons


def _scores(student, queries: list, items: np.ndarray, missing_cols: list[int], rule: str) -> np.ndarray:
    from distill.evaluation.baselines import MISSING_SCORE
    from distill.retrieval.queries import encode_queries

    out = encode_queries(student, queries, conversation_rule=rule) @ items.T
    if missing_cols:
        out[:, missing_cols] = MISSING_SCORE
    return out


def evaluate_conversations(name: str, scorer, persona_texts: list[str], conversations: list[ConversationQuery],
                           pool: list[str], winner_idx: np.ndarray, reranker=None, candidates=None,
                           k: int = 10, rules: tuple[str, ...] = CONVERSATION_RULES,
                           student=None) -> ConversationResult:
    """Rank the pool for the full persona text and for each conversation rule; with `reranker` (a
    `StoredReranker`) and `candidates` (item id -> teacher Candidate), also after the teacher re-ranks the
    student's top k of each rule, given the whole conversation (`query_text`). `student`: the scorer's
    student, or a stand-in with its text tower (query_sections.MemoStudent)."""
    from distill.evaluation.metrics import ranks_in_orders, target_ranks
    from distill.retrieval.queries import TextQuery, query_text

    scorer.load()
    items = scorer.item_embeddings(pool)
    missing = set(getattr(scorer, "missing", ()))
    missing_cols = [j for j, i in enumerate(pool) if i in missing]
    student = student if student is not None else scorer._student
    full = _scores(student, [TextQuery(text=t) for t in persona_texts], items, missing_cols, "recency")
    res = ConversationResult(name, {"full": target_ranks(full, winner_idx)}, len(pool))
    texts = [query_text(c) for c in conversations]
    for rule in rules:
        scores = _scores(student, conversations, items, missing_cols, rule)
        alone = target_ranks(scores, winner_idx)
        res.ranks[rule] = alone
        if reranker is None or k < 2:
            continue
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        answers = reranker.rerank_many([(t, [candidates[pool[j]] for j in row]) for t, row in zip(texts, top)])
        winners = [pool[j] for j in winner_idx]
        in_top = ranks_in_orders([a.order for a in answers], winners)
        res.ranks[f"{rule}+rerank"] = np.where(alone <= k, in_top, alone)  # below the top k nothing moves
        res.reranked[rule] = [a.ok and bool(a.order) and a.order[0] in {pool[j] for j in row}
                              for a, row in zip(answers, top)]
        res.reasons[rule] = Counter(a.reason for a in answers if not a.ok)
    return res
