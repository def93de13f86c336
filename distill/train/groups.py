"""The groups each round trains on: what was asked of the teacher, what it answered, what is replayed.

A round's new groups (and the val groups) live in two files in the train dir:
  groups/round-XX.drawn.parquet  what the round ASKED for: the sampler's groups, written before any
                                 teacher call, so a rerun asks for the same groups without resampling;
  groups/round-XX.parquet        what it GOT: the teacher's rankings, written only once the draw is
                                 complete (every group answered, or dropped for a reason that asking
                                 again cannot change).
A teacher that is down answers with `teacher_error` drops. Those groups are still owed: the draw is not
final, the run stops with `IncompleteLabels`, and a rerun asks the label store again for the whole draw,
which sends only the missing groups to the teacher (answered ones are cached by request key). Unusable
answers (`parse:*`) are settled by the labeller (resent only with `label.retry_dropped`), and bad
images / missing items / bad requests are dropped before the teacher: neither blocks a round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill import fsutil
from distill.label.pipeline import IncompleteLabels, transient_drops

if TYPE_CHECKING:
    from distill.config.pipeline import TrainConfig

log = logging.getLogger(__name__)

# One labelled group per row, as saved per round in train_dir/groups/round-XX.parquet.
ROUND_ROWS = pa.schema([pa.field("group_id", pa.string()), pa.field("persona_id", pa.string()),
                        pa.field("ranking", pa.list_(pa.string())), pa.field("round", pa.int32())])
LABEL_COLUMNS = ROUND_ROWS.names

@dataclass
class LabelledDraw:
    """One set of groups asked of the teacher (a round's new groups, or the val groups): its two files."""

    name: str  # for messages: "round 3", "val"
    drawn_path: Path
    final_path: Path

    def final(self) -> pa.Table | None:
        """The complete labels, if this draw was finished before."""
        return pq.read_table(self.final_path).cast(ROUND_ROWS) if self.final_path.exists() else None

    def drawn(self) -> pa.Table | None:
        return pq.read_table(self.drawn_path) if self.drawn_path.exists() else None

    def record_drawn(self, groups: pa.Table) -> pa.Table:
        fsutil.write_parquet(self.drawn_path, groups)
        return groups

    def finish(self, groups: pa.Table, labels: pa.Table, summary) -> pa.Table:
        """Save `labels` as final when no drawn group is still owed an answer; else raise IncompleteLabels."""
        owed = transient_drops(summary)
        if owed:
            raise IncompleteLabels(
                f"{self.name}: {owed} of {groups.num_rows} drawn groups got no teacher answer "
                f"({summary.format()}); rerun when the teacher is reachable: answered groups are cached, "
                "only the missing ones are asked again")
        fsutil.write_parquet(self.final_path, labels)
        log.info("%s: %d of %d drawn groups labelled (%d dropped for good)", self.name, labels.num_rows,
                 groups.num_rows, summary.n_dropped)
        return labels


def labels_for_groups(store, teacher_id: str, groups: pa.Table) -> pa.Table:
    """The store's rank answers for these groups (by group id), in LABEL_COLUMNS."""
    labels = store.read(teacher_id=teacher_id, task="rank", persona_ids=set(groups["persona_id"].to_pylist()))
    wanted = pa.array(sorted(set(groups["group_id"].to_pylist())), pa.string())
    return labels.filter(pc.is_in(labels["group_id"], wanted)).select(LABEL_COLUMNS).cast(ROUND_ROWS)


def round_zero_labels(store, teacher_id: str, train_personas: set[str]) -> pa.Table:
    """What label.py wrote: round-0 rank answers of this teacher for train personas."""
    labels = store.read(teacher_id=teacher_id, task="rank")
    keep = pc.and_(pc.equal(labels["round"], 0),
                   pc.is_in(labels["persona_id"], pa.array(sorted(train_personas), pa.string())))
    return labels.filter(keep).select(LABEL_COLUMNS).cast(ROUND_ROWS)


def new_groups_budget(tcfg: TrainConfig, used: int) -> int:
    """How many new groups the next round may label: groups_per_round, capped by the remaining budget."""
    if tcfg.budget is None:
        return tcfg.groups_per_round
    return max(0, min(tcfg.groups_per_round, tcfg.budget - used))


def drop_seen(groups: pa.Table, earlier: pa.Table) -> pa.Table:
    """The drawn groups not already trained on in an earlier round."""
    seen = pa.array(sorted(set(earlier["group_id"].to_pylist())), pa.string())
    return groups.filter(pc.invert(pc.is_in(groups["group_id"], seen)))


def replay_rows(earlier: pa.Table, fraction: float, seed: int, round_idx: int, decay: float = 1.0,
                source_rounds: np.ndarray | None = None) -> pa.Table:
    """A seeded `fraction` of the earlier rounds' groups (all of them at 1.0).

    With `decay` < 1, round r's groups (`source_rounds[i]` = the round that labelled row i) are replayed
    at the share min(1, fraction * decay**(round_idx - r)), each round's rows drawn on their own; at
    decay 1.0 the draw is the one from before the option existed."""
    if decay != 1.0 and earlier.num_rows:
        return _decayed_replay(earlier, fraction, seed, round_idx, decay, source_rounds)
    if earlier.num_rows == 0 or fraction >= 1.0:
        return earlier
    n = int(round(fraction * earlier.num_rows))
    rng = np.random.default_rng([seed, round_idx, 7])
    return earlier.take(pa.array(np.sort(rng.choice(earlier.num_rows, size=n, replace=False)), pa.int64()))


def _decayed_replay(earlier: pa.Table, fraction: float, seed: int, round_idx: int, decay: float,
                    source_rounds: np.ndarray | None) -> pa.Table:
    if source_rounds is None or len(source_rounds) != earlier.num_rows:
        raise ValueError("replay_decay needs the source round of every earlier group")
    rng = np.random.default_rng([seed, round_idx, 8])
    keep = []
    for r in np.unique(source_rounds).tolist():  # oldest round first: a fixed order for the seeded draws
        rows = np.flatnonzero(source_rounds == r)
        share = min(1.0, fraction * decay ** (round_idx - r))
        keep.append(np.sort(rng.choice(rows, size=int(round(share * len(rows))), replace=False)))
    return earlier.take(pa.array(np.sort(np.concatenate(keep)), pa.int64()))

