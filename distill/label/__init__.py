"""The label stage: (persona, candidate items) requests -> the teacher's rankings, stored once and forever.

    round0.py         the world and base student a run needs, and the seeded round-0 groups
    pipeline.py       requests -> screened -> the teacher stage -> committed to the store, resumably
    teacher_stage.py  the teacher behind Ray Data: a pool of actors (cpu/openai) or ray.data.llm (vllm)
    store.py          the label store: append-only Parquet parts keyed by request, read by every stage

Artifacts: the label store (schema LABELS, errors LABEL_ERRORS; docs/artifacts.md).
"""

from distill.label.pipeline import (
    IncompleteLabels,
    LabelSummary,
    label_groups,
    label_requests,
    reason_class,
    transient_drops,
)
from distill.label.round0 import RoundZero, draw_round0_groups, ensure_base_model, ensure_world
from distill.label.store import LabelStore

__all__ = [
    "IncompleteLabels", "LabelSummary", "label_groups", "label_requests", "reason_class", "transient_drops",
    "RoundZero", "draw_round0_groups", "ensure_base_model", "ensure_world", "LabelStore",
]
