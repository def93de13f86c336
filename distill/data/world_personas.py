"""Synthetic shopping personas of the embedded world: seeded Faker names and jobs, interests, and for some a
modifier that rules things out ("Doesn't drink alcohol.") and/or a visual taste ("Only wears black.")."""

from __future__ import annotations

import random

from distill.data.interests import INTERESTS, MODIFIER_CONFLICTS, MODIFIERS, RELATIONS, VISUAL_TASTES

MODIFIER_SHARE = 0.35  # personas with an extra constraint (MODIFIERS)
TASTE_SHARE = 0.4  # personas with a visual taste (VISUAL_TASTES), drawn independently


def _article(word: str) -> str:
    w = word.lower()
    if w[:1].isdigit():
        return "an" if (w.startswith("8") or w.startswith("11-") or w.startswith("18-")) else "a"
    if w.startswith(("uni", "use", "usu", "eu", "one")):
        return "a"
    if w.startswith(("hour", "honest", "honor", "honour")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


def _job_title(raw: str) -> str:
    words = raw.split()
    return " ".join(w if (w.isupper() and len(w) > 1) or w == "English" else w.lower() for w in words)


def _listing(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def persona_id_digits(n: int) -> int:
    """Zero padding of the ids of n personas: p0000 .. p1199 for 1,200."""
    return max(4, len(str(max(n - 1, 0))))


def make_personas(n: int, seed: int = 0, id_digits: int | None = None) -> list[dict]:
    """`n` seeded synthetic shopping personas: dicts with persona_id, text, interests (keys) and taste (a
    VISUAL_TASTES key, or None). Persona i is the same for every n > i (one seeded sequence); `id_digits`
    fixes the ids' zero padding (default: enough for n, at least 4)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(f"personas-{seed}")
    keys = sorted(INTERESTS)
    width = id_digits or persona_id_digits(n)
    out = []
    for i in range(n):
        age = rng.randint(18, 84)
        name = fake.first_name()
        job = fake.job()
        while len(job) < 5 or any(ch in job for ch in ",/("):  # plain titles ("Architect", "Water engineer")
            job = fake.job()
        job = _job_title(job)
        if age <= 22 and rng.random() < 0.7:
            job = rng.choice(["student", "university student", "college student"])
        elif age >= 67 and rng.random() < 0.8:
            job = f"retired {job}"
        chosen = rng.sample(keys, rng.choice([1, 2, 2, 2, 3]))
        likes = _listing([INTERESTS[k] for k in chosen])
        age_s = f"{age}-year-old"
        t = rng.randrange(5)
        if t == 0:
            text = f"{_article(age_s).capitalize()} {age_s} {job} who loves {likes}."
        elif t == 1:
            verb = "is" if job.startswith("retired") or job.endswith("student") else "works as"
            text = f"{name}, {age}, {verb} {_article(job)} {job} and is into {likes}."
        elif t == 2:
            text = f"{name} is {_article(age_s)} {age_s} {job}, passionate about {likes}."
        elif t == 3:
            rel = rng.choice(RELATIONS)
            if rel.startswith("teenage"):
                job = "high school student"
            elif rel.startswith("grand") and not job.startswith("retired"):
                job = f"retired {job}"
            text = f"Looking for a gift for my {rel}, {_article(job)} {job} who loves {likes}."
        else:
            text = f"{_article(job).capitalize()} {job} in their {age // 10 * 10}s who enjoys {likes}."
        if rng.random() < MODIFIER_SHARE:
            fits = [m for m in MODIFIERS
                    if not (age >= 55 and "children" in m) and not (job.startswith("retired") and "Works" in m)
                    and not MODIFIER_CONFLICTS.get(m, frozenset()) & set(chosen)]
            text += " " + rng.choice(fits)
        taste = None
        if rng.random() < TASTE_SHARE:
            taste, sentence = rng.choice(VISUAL_TASTES)
            text += " " + sentence
        out.append({"persona_id": f"p{i:0{width}d}", "text": text, "interests": chosen, "taste": taste})
    return out

