"""The teacher interface: rank N candidate products for a persona (N=5 for training groups, N=2 for the
evaluation tournament's "compare").

Every backend goes through the same prompt -> raw text -> parser -> one repair retry path, so a
malformed answer is handled identically whether it came from a VLM or from the CPU teacher.
A backend only implements `_generate` (raw text for a batch of conversations); parsing, repair and
the mapping from "Image k" back to item ids live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from distill.hashing import hash_key, stable_hash
from distill.teacher.identity import teacher_id_for
from distill.teacher.prompt import ParsedDescription, ParsedRanking, parse_description, parse_ranking

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

TASKS = ("rank", "compare")


@dataclass
class Candidate:
    """One product shown to the teacher. `image` is the 224 px white-padded thumbnail."""

    item_id: str
    title: str = ""
    text: str = ""
    category: str = ""
    image: Image.Image | None = None


@dataclass
class TeacherRequest:
    """A persona and its candidates, already in presentation order ("Image 1" is candidates[0])."""

    key: str
    task: str
    persona_id: str
    persona_text: str
    candidates: list[Candidate]
    group_id: str | None = None
    round: int | None = None

    @property
    def presented(self) -> list[str]:
        return [c.item_id for c in self.candidates]

    @property
    def n(self) -> int:
        return len(self.candidates)


@dataclass
class Generation:
    """What a backend returns for one conversation: the raw text, or a transport error."""

    text: str | None
    error: str | None = None
    latency_s: float = 0.0


@dataclass
class TeacherAnswer:
    key: str
    presented: list[str]
    ranking: list[str] | None  # item ids best -> worst; None when dropped
    raw_output: str
    attempts: int
    latency_s: float
    error: str | None = None  # "parse:<reason>" or "teacher_error:<message>" when dropped
    repairs: list[tuple[str, str]] = field(default_factory=list)  # (raw, reason) of each failed attempt

    @property
    def ok(self) -> bool:
        return self.ranking is not None


@dataclass
class DescribeRequest:
    """A composed query's reference (item or upload, as a Candidate whose `image` is the 224 px thumbnail) and
    the modification; the teacher writes what the shopper wants (prompt describe-v1)."""

    key: str
    reference_id: str  # the catalog item id, or "upload:<sha256 of the image bytes>"
    reference: Candidate
    modification: str


@dataclass
class DescribeAnswer:
    key: str
    reference_id: str
    modification: str
    description: str | None  # cleaned; None when dropped
    raw_output: str
    attempts: int
    latency_s: float
    error: str | None = None  # "parse:<reason>" or "teacher_error:<message>" when dropped
    repairs: list[tuple[str, str]] = field(default_factory=list)
    cached: bool = False  # read from the label store, not asked

    @property
    def ok(self) -> bool:
        return self.description is not None


def upload_reference_id(image_bytes: bytes) -> str:
    """The reference id of an uploaded image: its bytes' sha256 (the same upload is one cached answer)."""
    import hashlib

    return "upload:" + hashlib.sha256(image_bytes).hexdigest()


def normalise_modification(modification: str) -> str:
    return " ".join(str(modification).split())


def describe_key(describe_id: str, reference_id: str, modification: str) -> str:
    return hash_key(describe_id, "describe", reference_id, normalise_modification(modification))


def make_describe_request(describe_id: str, reference: Candidate, modification: str,
                          reference_id: str | None = None) -> DescribeRequest:
    """`reference_id` defaults to the reference's item id (pass `upload_reference_id(bytes)` for uploads)."""
    modification = normalise_modification(modification)
    if not modification:
        raise ValueError("a describe request needs a non-blank modification")
    ref_id = reference_id or reference.item_id
    return DescribeRequest(describe_key(describe_id, ref_id, modification), ref_id, reference, modification)


class TeacherAnswerError(RuntimeError):
    """rank()/compare() could not get a usable answer (the batch path records these instead)."""

    def __init__(self, reason: str, raw: str):
        super().__init__(f"teacher answer unusable ({reason}): {raw[:200]!r}")
        self.reason = reason
        self.raw = raw


def request_key(teacher_id: str, task: str, persona_id: str, item_ids: list[str]) -> str:
    """The label store key: the same persona and *set* of items asked of the same teacher is one answer."""
    return hash_key(teacher_id, task, persona_id, *sorted(item_ids))


def presentation_order(key: str, item_ids: list[str], shuffle: bool = True) -> list[str]:
    """The order the items are shown in: a permutation seeded by the request key, so reruns are identical.

    Sorting first makes the shown order independent of the sampler's (bin) order, which would
    otherwise leak the student's opinion into the prompt as a position bias.
    """
    items = sorted(item_ids)
    if not shuffle:
        return list(item_ids)
    rng = np.random.default_rng(stable_hash("presentation", key))
    return [items[i] for i in rng.permutation(len(items))]


def make_request(teacher_id: str, task: str, persona_id: str, persona_text: str, candidates: list[Candidate],
                 *, shuffle: bool = True, group_id: str | None = None, round: int | None = None) -> TeacherRequest:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    by_id = {c.item_id: c for c in candidates}
    if len(by_id) != len(candidates):
        raise ValueError(f"duplicate item ids in request for persona {persona_id!r}: {[c.item_id for c in candidates]}")
    key = request_key(teacher_id, task, persona_id, list(by_id))
    order = presentation_order(key, list(by_id), shuffle)
    return TeacherRequest(key, task, persona_id, persona_text, [by_id[i] for i in order], group_id, round)


class Teacher(ABC):
    """Base class of every backend. Subclasses set `backend` and implement `_generate`."""

    backend: str = ""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self.teacher_id = teacher_id_for(cfg)

    def prepare(self, requests: list[TeacherRequest]) -> None:
        """Do the per-text work of many requests at once, before they are answered in small batches.
        A no-op unless the backend has such work (the CPU teacher embeds texts); answers do not change."""
        return None

    @abstractmethod
    def _generate(self, jobs: list[tuple[TeacherRequest, list[tuple[str, str]]]]) -> list[Generation]:
        """Raw answers for a batch. Each job is (request, repair history of (raw, reason) pairs)."""

    def answer(self, requests: list[TeacherRequest]) -> list[TeacherAnswer]:
        """Ask, parse, repair once (per config), and return one answer per request. Never raises on bad text."""
        answers = {r.key: TeacherAnswer(r.key, r.presented, None, "", 0, 0.0) for r in requests}

        def accept(ans: TeacherAnswer, req: TeacherRequest, parsed: ParsedRanking) -> None:
            ans.ranking = [req.presented[k - 1] for k in parsed.order]

        self._ask(list(requests), answers, self._generate, lambda raw, req: parse_ranking(raw, req.n), accept)
        return [answers[r.key] for r in requests]

    def _ask(self, pending: list, answers: dict, generate, parse, accept) -> None:
        """The one ask -> parse -> repair loop of rankings and descriptions. `generate(jobs)` gives raw texts
        for (request, repair history) jobs; `parse(raw, request)` a parsed answer or the reason it is not one
        (a str: asked again with the reason, up to `repair_retries` times); `accept(answer, request, parsed)`
        stores a parsed answer. Transport failures are not repaired: the backend already retried them."""
        for _ in range(1 + max(0, self.cfg.repair_retries)):
            if not pending:
                break
            still = []
            for req, gen in zip(pending, generate([(r, answers[r.key].repairs) for r in pending])):
                ans = answers[req.key]
                ans.attempts += 1
                ans.latency_s += gen.latency_s
                ans.raw_output = gen.text or ""
                if gen.error is not None:
                    ans.error = f"teacher_error:{gen.error}"
                    continue
                parsed = parse(ans.raw_output, req)
                if isinstance(parsed, str):
                    ans.error = f"parse:{parsed}"
                    ans.repairs.append((ans.raw_output, parsed))
                    still.append(req)
                else:
                    accept(ans, req, parsed)
                    ans.error = None
            pending = still

    # ---- one-off conveniences (the evaluation tournament, notebooks) -------------------------------
    def rank(self, persona_text: str, candidates: list[Candidate], persona_id: str = "adhoc",
             task: str = "rank") -> list[str]:
        """Item ids best -> worst; raises TeacherAnswerError when no usable answer came back."""
        req = make_request(self.teacher_id, task, persona_id, persona_text, candidates,
                           shuffle=self.cfg.shuffle_presentation)
        ans = self.answer([req])[0]
        if not ans.ok:
            raise TeacherAnswerError(ans.error or "unknown", ans.raw_output)
        return ans.ranking

    def compare(self, persona_text: str, a: Candidate, b: Candidate, persona_id: str = "adhoc") -> str:
        """The item id of whichever of `a`, `b` fits the persona better."""
        return self.rank(persona_text, [a, b], persona_id, task="compare")[0]

    # ---- target descriptions (describe-v1) -----------------------------------------------------------
    @property
    def describe_id(self) -> str:
        """The teacher id of describe answers: the describe prompt version in place of the rank one."""
        from distill.teacher.identity import describe_id_for

        return describe_id_for(self.cfg)

    def _generate_describe(self, jobs: list[tuple[DescribeRequest, list[tuple[str, str]]]]) -> list[Generation]:
        """Raw descriptions for a batch (request, repair history); backends that can describe override it."""
        raise NotImplementedError(f"the {self.backend!r} teacher cannot write target descriptions")

    def describe_many(self, requests: list[DescribeRequest]) -> list[DescribeAnswer]:
        """Ask, clean (`parse_description`), repair per `repair_retries`; one answer per request, never raises
        on bad text (the drop reason is in `error`)."""
        answers = {r.key: DescribeAnswer(r.key, r.reference_id, r.modification, None, "", 0, 0.0) for r in requests}

        def accept(ans: DescribeAnswer, req: DescribeRequest, parsed: ParsedDescription) -> None:
            ans.description = parsed.text

        self._ask(list({r.key: r for r in requests}.values()), answers, self._generate_describe,
                  lambda raw, req: parse_description(raw), accept)
        return [answers[r.key] for r in requests]

    def describe(self, reference: Candidate, modification: str, reference_id: str | None = None) -> str:
        """What the shopper wants: the reference with the modification applied, in one or two sentences.
        Raises TeacherAnswerError when no usable description came back. Not cached: see
        `distill.teacher.describe.describe_cached` for the label-store path."""
        ans = self.describe_many([make_describe_request(self.describe_id, reference, modification, reference_id)])[0]
        if not ans.ok:
            raise TeacherAnswerError(ans.error or "unknown", ans.raw_output)
        return ans.description
