"""Per-round memorisation diagnostics: how often the sampler redraws a persona's items, and
the gap between agreement on the groups a round trained on and on the held-out val groups.

RoundDriver writes them into each round's line of results.jsonl (and state.json's history);
`read_results` turns that file into one table with a column per key, for plotting scripts.
Columns (None/null where undefined; round -1, the base model, has none of them):

  redraw_rate          share of this round's new (persona, item) slots whose item was already in an
                       earlier round's group for that persona (0 in the first round, round 0)
  pair_repeat_rate     the same, counting repeats within this round too (earlier rounds or an earlier
                       group of this round)
  distinct_item_share  distinct items in this round's new groups / items in the train split
  cum_item_share       distinct items in all groups so far (this round included) / items in the train split
  train_agreement      pair agreement with the teacher of this round's exported student on the groups it
                       trained on this round (new + replayed); the same metric as val_agreement
  train_new_agreement  the same on this round's new groups only
  train_val_gap        train_agreement - val_agreement

`train_pair_acc` (already there) differs from `train_agreement`: it is the running accuracy during the
round's last epoch, measured before each optimizer step, in the training loop's precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from distill.sampling.remedies import draw_counts

DIAGNOSTIC_COLUMNS = ("redraw_rate", "pair_repeat_rate", "distinct_item_share", "cum_item_share",
                      "train_agreement", "train_new_agreement", "train_val_gap")


def redraw_stats(new: pa.Table, earlier: pa.Table, n_items: int | None) -> dict:
    """Redraw diagnostics of one round's new groups against all earlier rounds' groups.

    Both tables have `persona_id` and `ranking` (labelled groups) or `item_ids` (sampler groups).
    `n_items` is the train split's item count (None: the shares are None)."""
    history = draw_counts(earlier)
    column = "item_ids" if "item_ids" in new.column_names else "ranking"
    slots = redraws = repeats = 0
    now: dict[str, set] = {}
    distinct: set = set()
    for persona, items in zip(new["persona_id"].to_pylist(), new[column].to_pylist()):
        past, here = history.get(persona, {}), now.setdefault(persona, set())
        for item in items or []:
            slots += 1
            redraws += item in past
            repeats += item in past or item in here
            here.add(item)
            distinct.add(item)
    everything = distinct.union(*(set(c) for c in history.values()))
    return {
        "redraw_rate": redraws / slots if slots else 0.0,
        "pair_repeat_rate": repeats / slots if slots else 0.0,
        "distinct_item_share": len(distinct) / n_items if n_items else None,
        "cum_item_share": len(everything) / n_items if n_items else None,
    }


def read_results(path: str | Path) -> pa.Table:
    """results.jsonl as one table: a column per key of any line (null where a line lacks it); dict values
    are flattened one level (`phase_seconds.train`, `dropped.bad_image`)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    flat = []
    for rec in records:
        row = {}
        for key, value in rec.items():
            if isinstance(value, dict):
                row.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                row[key] = value
        flat.append(row)
    names = list(dict.fromkeys(k for row in flat for k in row))
    return pa.table({name: pa.array([row.get(name) for row in flat]) for name in names})
