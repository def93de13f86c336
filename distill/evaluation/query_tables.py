"""report.md's held-out query sections: the conversation table (LaViC's layout: the student alone per
conversation rule, the full persona as the upper reference, student + teacher re-rank) and the composed-query
tables (MVFT-JI's ablation: composed only / description only / joint, then the joint weight sweep)."""

from __future__ import annotations

from distill.evaluation.report import DISPLAY


def _label(name: str) -> str:
    return DISPLAY.get(name, name)


def _w(w: float) -> str:
    return {0.0: "0", 0.25: "¼", 0.5: "½", 0.75: "¾", 1.0: "1"}.get(float(w), f"{w:g}")


QUERY_LABELS = {"full": "full persona text (upper reference)", "recency": "conversation, recency rule",
                "concat": "conversation, concat rule"}


def _query_label(q: str, k: int) -> str:
    if q.endswith("+rerank"):
        return f"{QUERY_LABELS.get(q[:-7], q[:-7])} + teacher re-rank of top {k}"
    return QUERY_LABELS.get(q, q)


def conversation_markdown(table: dict, convs, persona_ids, ev, calls: dict | None, seconds: float, n_items: int,
                          no_rerank: str | None) -> str:
    from distill.retrieval.queries import query_text

    level = f"{100 * ev.ci_level:g}% CI"
    n_turns = [len(c.user_turns) for c in convs]
    lines = [
        "## Conversations (LaViC setting)", "",
        f"Each of the {len(persona_ids)} test personas told as a shop conversation of {min(n_turns)}-{max(n_turns)} "
        f"user turns (mean {sum(n_turns) / len(n_turns):.1f}; assistant questions in between; "
        "conversations.jsonl). Ground truth: the teacher's tournament winner for the FULL persona, among the "
        f"{n_items} pool images. HR@k: the winner in the top k (%); MPR as above. `recency`: the user turns' "
        "text embeddings weighted 1, ½, ¼, ... from the latest; `concat`: the user turns as one text "
        "(distill/retrieval/queries.py). The re-rank rows: the teacher orders the student's top "
        f"{ev.rerank_k} given the whole conversation (`query_text`).", "",
        f"| Model | Query | personas | HR@1 [{level}] | HR@10 [{level}] | MPR [{level}] |", "|---|---|---|---|---|---|",
    ]
    for name, t in table.items():
        for q, st in t["stats"].items():
            lines.append(f"| {_label(name)} | {_query_label(q, ev.rerank_k)} | {st['hr1'].n} | {st['hr1'].format(1)} | "
                         f"{st['hr10'].format(1)} | {st['mpr'].format(2)} |")
    if any(t["paired"] for t in table.values()):
        lines += ["", f"| Model | Rule | Δ HR@1 re-rank vs alone [paired {level}] | Validity@1 "
                      "| teacher answers / drops |",
                  "|---|---|---|---|---|"]
        for name, t in table.items():
            for rule, iv in t["paired"].items():
                v = t["validity"][rule]
                why = "; ".join(f"{r}: {c}" for r, c in v["reasons"].items())
                lines.append(f"| {_label(name)} | {rule} | {iv.format(1, signed=True)} | {v['validity']:.1f}% | "
                             f"{v['answers']} / {v['drops']}{f' ({why})' if why else ''} |")
        lines += ["", "Validity@1: the share of re-rank requests whose first pick is one of the candidates (a "
                  "usable teacher answer); a drop keeps the student's order."]
    if calls:
        lines += ["", f"Re-rank teacher requests: sent **{calls['sent']}**, {calls['cached']} from the label store "
                  f"(a rerun sends none)."]
    elif no_rerank:
        lines += ["", f"No teacher re-rank: {no_rerank}."]
    example = convs[0]
    lines += ["", f"Example ({persona_ids[0]}):", "", *[f"> {line}  " for line in query_text(example).splitlines()],
              "", f"Added wall time: {seconds:.1f} s.", ""]
    return "\n".join(lines)


def composed_markdown(table: dict, found, descriptions, desc_info: dict, ev, n_items: int, seconds: float) -> str:
    level = f"{100 * ev.ci_level:g}% CI"
    pairs = found.pairs
    kinds = {}
    for p in pairs:
        kinds[p.hint] = kinds.get(p.hint, 0) + 1
    drops = ", ".join(f"{r}: {c}" for r, c in sorted(found.dropped.items())) or "none"
    lines = [
        "## Composed queries (MVFT-JI setting)", "",
        f"{len(pairs)} queries (reference image + modification text -> target) from held-out `{ev.split}` pairs of "
        f"two different concepts of one category; {found.examined} pairs examined, dropped: {drops}. The "
        "modification never names the target's title; it says what the target is (hint: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) +
        ") and how it looks (composed_queries.jsonl; recipe in docs/evaluation.md). Relevant: the target item "
        f"alone, among the split's {n_items} images minus the reference. R@k in %.", "",
    ]
    if not pairs:
        return "\n".join(lines + ["No composed queries could be built.", ""])
    if desc_info.get("skipped"):
        lines += [f"No teacher descriptions: {desc_info['skipped']}; only the composed query is scored.", ""]
    else:
        d = desc_info
        lines += [f"Target descriptions by `{d['teacher_id']}` (`describe`): {d['described']} of {len(pairs)}, "
                  f"sent **{d['sent']}**, {d['cached']} from the label store"
                  + (f", dropped {d['dropped']}" if d["dropped"] else "") + ".", ""]
    rows_of = [(1.0, "Composed only (reference image + modification)"), (0.0, "Target description only"),
               (0.5, "Joint, ½ composed + ½ description")]
    lines += [f"| Model | Query | R@10 [{level}] | R@50 [{level}] | Avg | R@10, any drawing of the target |",
              "|---|---|---|---|---|---|"]
    for name, stats in table.items():
        for w, label in rows_of:
            if w not in stats:
                continue
            st = stats[w]
            avg = (st["r10"].mean + st["r50"].mean) / 2 if st["r10"].n else float("nan")
            lines.append(f"| {_label(name)} | {label} | {st['r10'].format(1)} | {st['r50'].format(1)} | "
                         f"{'-' if avg != avg else f'{avg:.1f}'} | {st['r10_concept'].format(1)} |")
    names = list(table)
    lines += ["", "Joint weight sweep: query = w · composed + (1 − w) · description (w = 1: composed only).", "",
              "| w | " + " | ".join(f"{_label(n)} R@10 | {_label(n)} R@50" for n in names) + " |",
              "|---|" + "---|---|" * len(names)]
    for w in ev.joint_weights:
        cells = []
        for n in names:
            st = table[n].get(w)
            cells += [st["r10"].format(1), st["r50"].format(1)] if st else ["-", "-"]
        lines.append(f"| {_w(w)} | " + " | ".join(cells) + " |")
    lines += ["", "Examples:", ""]
    for p, d in list(zip(pairs, descriptions))[:3]:
        lines.append(f"- {p.reference_title} (`{p.reference}`) + \"{p.modification}\" → {p.target_title} "
                     f"(`{p.target}`)" + (f"; teacher: \"{d}\"" if d else ""))
    lines += ["", f"Added wall time: {seconds:.1f} s.", ""]
    return "\n".join(lines)
