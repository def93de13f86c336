"""Ground truth: a single-elimination knockout per test persona, judged by the teacher.

The bracket loop (`run_knockout`) takes any judge callable, so a unit test can drive it with an
oracle; the real judge (`TeacherJudge`) sends each round's matches, for ALL personas at once, through
one `label_requests` call (Ray Data parallelises across personas) and reads the answers back from the
label store. The bracket depends only on (seed, persona, item pool), never on a model, and every
match is cached in the store, so a rerun or a second model costs no teacher calls.

Paper protocol (spec section 1.7): consecutive entrants meet, winners are reshuffled between rounds,
an odd entrant out gets a bye, and a failed or unparseable answer counts as "the first wins" (here:
the first in bracket order, which is itself random). We do the same and count those defaults.
Variant "fiveway" plays 5-item matches with the ranking prompt (about N/4 calls instead of N-1).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.hashing import stable_hash

if TYPE_CHECKING:
    from distill.config.pipeline import LabelConfig
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

VARIANT_MATCH_SIZE = {"pairwise": 2, "fiveway": 5}
VARIANT_TASK = {"pairwise": "compare", "fiveway": "rank"}

WINNERS_SCHEMA = pa.schema([
    pa.field("persona_id", pa.string(), nullable=False),
    pa.field("winner_item_id", pa.string(), nullable=False),
    pa.field("rounds", pa.int32(), nullable=False),
    pa.field("calls", pa.int32(), nullable=False),  # matches judged for this persona (= teacher calls uncached)
    pa.field("defaulted", pa.int32(), nullable=False),  # matches with no usable answer: first entrant won
    pa.field("n_items", pa.int32(), nullable=False),
    pa.field("variant", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class Match:
    persona_id: str
    items: tuple[str, ...]  # bracket order; items[0] wins when the judge has no usable answer


@dataclass
class Verdicts:
    """A judge's answer for one round: the winner per match (None = no usable answer)."""

    winners: list[str | None]
    sent: int = 0  # requests sent to the teacher (the rest were already answered in the label store)
    cached: int = 0  # answers already in the label store
    generations: int = 0  # teacher generations, repair retries included
    dropped: dict[str, int] = field(default_factory=dict)  # unusable answers by reason


Judge = Callable[[list[Match]], Verdicts]


@dataclass
class TeacherCalls:
    """What a whole tournament cost, summed over its rounds' Verdicts."""

    sent: int = 0
    cached: int = 0
    generations: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, verdicts: Verdicts) -> None:
        self.sent += verdicts.sent
        self.cached += verdicts.cached
        self.generations += verdicts.generations
        self.dropped.update(verdicts.dropped)


@dataclass
class TournamentResult:
    variant: str
    winners: dict[str, str]
    rounds: dict[str, int]
    matches: dict[str, int]
    defaulted: dict[str, int]
    n_items: dict[str, int]
    calls: TeacherCalls = field(default_factory=lambda: TeacherCalls())
    seconds: float = 0.0

    def to_table(self) -> pa.Table:
        pids = sorted(self.winners)
        return pa.table({
            "persona_id": pids,
            "winner_item_id": [self.winners[p] for p in pids],
            "rounds": [self.rounds[p] for p in pids],
            "calls": [self.matches[p] for p in pids],
            "defaulted": [self.defaulted[p] for p in pids],
            "n_items": [self.n_items[p] for p in pids],
            "variant": [self.variant] * len(pids),
        }, schema=WINNERS_SCHEMA)

    @property
    def total_matches(self) -> int:
        """Teacher calls a run from an empty label store makes."""
        return sum(self.matches.values())

    @property
    def total_defaulted(self) -> int:
        return sum(self.defaulted.values())

    def summary(self) -> dict:
        return {"variant": self.variant, "personas": len(self.winners), "matches": self.total_matches,
                "teacher_calls_sent": self.calls.sent, "teacher_generations": self.calls.generations,
                "cached": self.calls.cached, "defaulted_first_wins": self.total_defaulted,
                "dropped": dict(self.calls.dropped),
                "seconds": round(self.seconds, 1)}


def persona_rng(seed: int, persona_id: str) -> np.random.Generator:
    # One stream per persona: a persona's bracket does not change when others are added or removed.
    return np.random.default_rng([seed, stable_hash("bracket", persona_id) % (2**63)])


def split_into_matches(entrants: Sequence[str], match_size: int) -> tuple[list[tuple[str, ...]], list[str]]:
    """Consecutive entrants meet; a lone entrant left over gets a bye. Returns (matches, byes)."""
    matches = [tuple(entrants[i : i + match_size]) for i in range(0, len(entrants), match_size)]
    byes = [m[0] for m in matches if len(m) == 1]
    return [m for m in matches if len(m) > 1], byes


def run_knockout(entrants: dict[str, Sequence[str]], judge: Judge, *, variant: str = "pairwise",
                 seed: int = 0, progress: bool = True) -> TournamentResult:
    """Play every persona's knockout to one winner; one judge call per round across all personas."""
    if variant not in VARIANT_MATCH_SIZE:
        raise ValueError(f"unknown tournament variant {variant!r}; expected one of {sorted(VARIANT_MATCH_SIZE)}")
    size = VARIANT_MATCH_SIZE[variant]
    rngs = {p: persona_rng(seed, p) for p in entrants}
    alive: dict[str, list[str]] = {}
    for p, items in entrants.items():
        if len(set(items)) != len(items) or not items:
            raise ValueError(f"persona {p!r}: tournament entrants must be non-empty and unique")
        alive[p] = list(items)
        rngs[p].shuffle(alive[p])
    result = TournamentResult(variant, {}, {p: 0 for p in entrants}, {p: 0 for p in entrants},
                              {p: 0 for p in entrants}, {p: len(v) for p, v in entrants.items()})
    t0 = time.time()
    round_no = 0
    while any(len(v) > 1 for v in alive.values()):
        round_no += 1
        matches, byes = _round_matches(alive, size)
        verdicts = judge(matches)
        if len(verdicts.winners) != len(matches):
            raise RuntimeError(f"judge answered {len(verdicts.winners)} of {len(matches)} matches in round {round_no}")
        _advance(alive, matches, byes, verdicts, rngs, result)
        if progress:
            left = sum(len(v) for v in alive.values())
            log.info("%s knockout round %d: %d matches, sent %d, cached %d, %d entrants left (%.0fs)", variant,
                     round_no, len(matches), verdicts.sent, verdicts.cached, left, time.time() - t0)
    result.winners = {p: v[0] for p, v in alive.items()}
    result.seconds = time.time() - t0
    return result


def _round_matches(alive: dict[str, list[str]], size: int) -> tuple[list[Match], dict[str, list[str]]]:
    matches, byes = [], {}
    for p, items in alive.items():
        if len(items) < 2:
            continue
        groups, byes[p] = split_into_matches(items, size)
        matches.extend(Match(p, g) for g in groups)
    return matches, byes


def _advance(alive, matches: list[Match], byes, verdicts: Verdicts, rngs, result: TournamentResult) -> None:
    nxt: dict[str, list[str]] = {p: list(b) for p, b in byes.items()}
    for m, winner in zip(matches, verdicts.winners):
        result.matches[m.persona_id] += 1
        if winner is None or winner not in m.items:
            winner = m.items[0]
            result.defaulted[m.persona_id] += 1
        nxt[m.persona_id].append(winner)
    for p, items in nxt.items():
        rngs[p].shuffle(items)  # reshuffle between rounds, as the paper
        alive[p] = items
        result.rounds[p] += 1
    result.calls.add(verdicts)


def winner_agreement(a: dict[str, str], b: dict[str, str]) -> dict:
    """Share of shared personas on which two tournaments picked the same winner."""
    shared = sorted(set(a) & set(b))
    same = sum(a[p] == b[p] for p in shared)
    return {"personas": len(shared), "same_winner": same,
            "agreement": (100.0 * same / len(shared)) if shared else float("nan")}


def write_winners(result: TournamentResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(result.to_table(), str(path))
    return path


# ------------------------------------------------------------------------------ the teacher as judge


def eval_teacher_config(teacher_cfg: TeacherConfig) -> TeacherConfig:
    """The tournament is judged at temperature 0 (the paper's protocol), whatever training used."""
    zero = {"temperature": 0.0}
    return teacher_cfg.model_copy(update={
        "cpu": teacher_cfg.cpu.model_copy(update=zero),
        "openai": teacher_cfg.openai.model_copy(update=zero),
        "vllm": teacher_cfg.vllm.model_copy(update=zero),
    })


def _dropped_by_reason(summary) -> dict[str, int]:
    dropped = getattr(summary, "dropped", None) or {}
    return dict(dropped) if isinstance(dropped, dict) else {"dropped": int(dropped)}


class TeacherJudge:
    """Judges a round of matches through `label_requests` (one Ray Data pass, cached in the store).

    Presentation order is the labeller's business (seeded per request key, so a pair is shown in
    a random but reproducible order); the answer is looked up by the store key, which depends on the
    persona and the SET of items, so a rerun finds every match already answered.
    """

    def __init__(self, *, task: str, catalog_dir, personas_dir, teacher_cfg: TeacherConfig, label_cfg: LabelConfig,
                 store, progress=True):
        from distill.teacher import teacher_id_for

        self.task = task
        self.catalog_dir, self.personas_dir = str(catalog_dir), str(personas_dir)
        self.teacher_cfg, self.label_cfg, self.store = teacher_cfg, label_cfg, store
        self.teacher_id = teacher_id_for(teacher_cfg)
        self.progress = progress
        self.round = 0

    def __call__(self, matches: list[Match]) -> Verdicts:
        self.round += 1
        rankings, summary = self.rank(matches, round_no=self.round)
        winners = [r[0] if r else None for r in rankings]
        return Verdicts(winners, sent=int(summary.sent), cached=int(summary.cached),
                        generations=int(getattr(summary, "teacher_calls", summary.sent)),
                        dropped=_dropped_by_reason(summary))

    def rank(self, matches: list[Match], round_no: int = 0) -> tuple[list[list[str] | None], object]:
        """The teacher's ranking (best first) for each match, None where it gave no usable answer."""
        from distill.label.pipeline import label_requests
        from distill.teacher import request_key

        requests = pa.table({
            "persona_id": pa.array([m.persona_id for m in matches], pa.string()),
            "item_ids": pa.array([list(m.items) for m in matches], pa.list_(pa.string())),
            "round": pa.array([round_no] * len(matches), pa.int32()),
        })
        summary = label_requests(requests, task=self.task, catalog_dir=self.catalog_dir,
                                 personas_dir=self.personas_dir, teacher_cfg=self.teacher_cfg,
                                 label_cfg=self.label_cfg, store=self.store, progress=self.progress)
        keys = [request_key(self.teacher_id, self.task, m.persona_id, list(m.items)) for m in matches]
        answers = self.store.answered(self.teacher_id, self.task, keys)
        return [answers.get(k) or None for k in keys], summary


# ------------------------------------------------------------------------------ pools and groups


def tournament_pool(catalog_dir, split: str, n_items: int | None, seed: int,
                    keep: set[str] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The images every persona's tournament runs over, and the unreadable ones left out.

    A seeded subset (order by a hash of (seed, id): model-independent and stable when the catalog
    grows) or the whole split. Images that do not decode are skipped and counted, so the teacher
    never judges a blank and no model is scored on an image it cannot see. `keep` limits the split to
    those ids (an evaluation row's items) before the hash order, so the whole split kept is the whole split.
    """
    from distill.data.layout import catalog_root, read_catalog
    from distill.images import try_load_row_image

    table = read_catalog(catalog_dir, split, columns=["item_id", "image", "image_path"])
    if keep is not None:
        table = table.filter(pc.is_in(table["item_id"], pa.array(sorted(keep), pa.string())))
    if table.num_rows == 0:
        raise ValueError(f"catalog {catalog_dir} has no {split!r} items to evaluate on")
    order = sorted(range(table.num_rows), key=lambda i: stable_hash(f"pool-{seed}", table["item_id"][i].as_py()))
    want = table.num_rows if n_items is None else min(n_items, table.num_rows)
    root = catalog_root(catalog_dir)
    pool, skipped = [], []
    for i in order:
        if len(pool) == want:
            break
        row = {c: table[c][i].as_py() for c in ("item_id", "image", "image_path")}
        img, err = try_load_row_image(row, root, size=None)
        if img is None:
            skipped.append((row["item_id"], err))
        else:
            pool.append(row["item_id"])
    if len(pool) < 2:
        raise ValueError(f"only {len(pool)} readable {split!r} images in {catalog_dir}; a tournament needs 2")
    return pool, skipped


def random_groups(persona_ids: list[str], pool: list[str], per_persona: int, size: int, seed: int) -> list[Match]:
    """Seeded uniform groups of `size` pool items per persona, for NDCG/recall against teacher rankings."""
    groups = []
    for p in persona_ids:
        rng = np.random.default_rng([seed, stable_hash("eval-groups", p) % (2**63)])
        for _ in range(per_persona):
            picks = rng.choice(len(pool), size=min(size, len(pool)), replace=False)
            groups.append(Match(p, tuple(pool[i] for i in picks)))
    return groups
