"""Personas by "other writers": a second generator whose voice and length differ from world_personas.py.

A student trained on one template family can learn the templates instead of the people. These personas
are never used in training (val and test splits only) and check that it generalises to how real people
write: first-person gift requests ("I need a present for my sister, she's obsessed with knitting."),
narrative bios of several sentences, and short search-box queries ("gift dad fishing").

What people like comes from the same vocabularies as the world's personas (INTERESTS, the taste keys of
VISUAL_TASTES), so the teacher can judge them; every phrasing is this module's own. Dislikes and looks
use wordings the CPU teacher's clause reader (distill.teacher.taste) reads as likes / avoids: a ruled-out
thing always sits in a clause of its own that starts with a word it knows ("avoid", "won't eat",
"can't stand" ...), so the liked things in the other clauses are not lost with it.
"""

from __future__ import annotations

import random

from distill.data.interests import INTERESTS, MODIFIER_CONFLICTS

VOICES = ("request", "bio", "query")
DISLIKE_SHARE = 0.35  # as many as the world's personas with a modifier
LOOK_SHARE = 0.4  # as many as the world's personas with a visual taste

# (relation as written in a sentence, as typed in a search box, pronoun)
RECIPIENTS: tuple[tuple[str, str, str], ...] = (
    ("sister", "sister", "she"), ("brother", "brother", "he"), ("mum", "mum", "she"), ("dad", "dad", "he"),
    ("grandma", "grandma", "she"), ("grandpa", "grandpa", "he"), ("wife", "wife", "she"),
    ("husband", "husband", "he"), ("girlfriend", "gf", "she"), ("boyfriend", "bf", "he"),
    ("niece", "niece", "she"), ("nephew", "nephew", "he"), ("boss", "boss", "she"), ("flatmate", "flatmate", "he"),
    ("oldest friend", "best friend", "she"), ("fifteen-year-old son", "teen son", "he"),
    ("sixteen-year-old daughter", "teen daughter", "she"), ("uncle", "uncle", "he"), ("aunt", "aunt", "she"),
)

# Interest key -> what a search box gets (the key itself where it reads as a search word).
_QUERY_WORD = {"coffee": "coffee", "asian-food": "asian cooking", "healthy-eating": "healthy food",
               "cocktails": "cocktails", "fitness": "gym", "drawing": "sketching", "diy": "diy tools",
               "tech": "gadgets", "money": "finance", "medicine": "wellness", "ocean": "sea life",
               "aviation": "planes", "cleaning": "home cleaning", "parties": "party", "beach": "beach holiday",
               "mountains": "mountains", "fruit": "fruit", "bread": "bread baking", "space": "space",
               "martial-arts": "martial arts", "board-games": "board games", "video-games": "video games",
               "spicy-food": "spicy food", "home-decor": "home decor", "theatre": "theatre", "writing": "writing"}

# Ruled-out things: (what it must not go with, sentence forms, search-box form). Each sentence opens with
# a word the teacher reads as ruling out; "because ..." is cut off by its reader, so reasons may follow.
DISLIKES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Is vegetarian.", ("Please avoid anything with meat because {she} is vegetarian.", "{She} won't eat meat."),
     "avoid meat"),
    ("Doesn't drink alcohol.", ("Please steer clear of alcohol because {she} gave up drinking.",
                                "{She} won't drink wine or beer."), "avoid alcohol"),
    ("Avoids sugar.", ("Please avoid sweets because {she} is diabetic.", "{She} stays away from sugar."),
     "avoid sweets"),
    ("Can't stand seafood.", ("{She} won't eat fish or seafood.", "Please avoid seafood because {she} hates it."),
     "avoid seafood"),
    ("Is allergic to cats.", ("Please avoid anything with cats because {she} is allergic.",),
     "avoid cats"),
    ("Is wary of dogs.", ("{She} is not a fan of dogs.", "Please avoid dogs because {she} was bitten once."),
     "avoid dogs"),
    ("Never touches coffee.", ("{She} won't touch coffee.", "Please avoid coffee because {she} sleeps badly."),
     "avoid coffee"),
    ("Has no interest in sport whatsoever.", ("{She} has no time for sport.", "{She} is not a fan of sport."),
     "avoid sport"),
    ("Hates anything with spiders.", ("{She} can't bear spiders or insects.",), "avoid spiders"),
    ("Dislikes clutter.", ("{She} hates clutter because the flat is tiny.",), "avoid clutter"),
)

# Looks, by VISUAL_TASTES key: sentence forms and, for likes only, a search-box form (a bare look in a
# query is read as liked, so a dislike is never typed as one).
LOOKS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "likes-bright": (("{She} is into vivid, colourful stuff.", "{She} adores loud, happy colours."),
                     "bright colours"),
    "dislikes-bright": (("{She} hates loud, flashy colours.", "{She} can't stand garish colours."), None),
    "likes-dark": (("{She} is fond of black and charcoal.", "{She} only wears black."), "all black"),
    "dislikes-dark": (("{She} finds black depressing.",), None),
    "likes-pastel": (("{She} adores soft pastels.", "{She} is drawn to pale pastel colours."), "pastel colours"),
    "likes-earthy": (("{She} loves earthy, muted stuff.", "{She} likes earth tones."), "earth tones"),
    "dislikes-earthy": (("{She} finds beige boring.",), None),
    "likes-minimal": (("{She} is keen on simple, minimalist design.",), "minimalist design"),
    "dislikes-ornate": (("{She} can't stand fussy, busy designs.",), None),
    "likes-ornate": (("{She} is a fan of intricate, detailed patterns.",), "intricate patterns"),
    "dislikes-minimal": (("{She} finds minimalist stuff dull.",), None),
    "likes-red": (("Red is {her} favourite colour.",), "anything red"),
    "likes-orange": (("{She} is a big fan of orange.",), "anything orange"),
    "likes-yellow": (("Yellow is {her} favourite colour.",), "anything yellow"),
    "dislikes-yellow": (("{She} hates yellow.",), None),
    "likes-green": (("{She} is into anything green.",), "anything green"),
    "dislikes-green": (("{She} won't wear green.",), None),
    "likes-blue": (("Blue is {her} favourite colour.",), "anything blue"),
    "likes-purple": (("{She} adores purple.",), "anything purple"),
    "likes-pink": (("{She} is obsessed with pink.",), "anything pink"),
    "dislikes-pink": (("{She} can't stand pink.",), None),
    "likes-brown": (("{She} loves warm wood and brown tones.",), "wood tones"),
}

_REQUESTS = (
    "I need a present for my {rel}, {she} is obsessed with {likes}.",
    "Any ideas for my {rel}'s birthday? {She} is really into {likes}.",
    "Help me find something for my {rel} who can't get enough of {likes}.",
    "My {rel} has a birthday coming up and {she} is keen on {likes}. What should I get?",
    "Stuck on what to buy my {rel}. {She} is a huge fan of {likes}.",
)
_BIO_LIFE = (
    "{She} has just moved into a new flat.", "{She} recently changed jobs.",
    "{She} is the organised one in the family.",
    "{She} works long hours and rarely switches off.", "{She} is saving up for a long trip.",
    "{She} grew up in a small town and still visits often.", "{She} lives with two flatmates.",
    "{She} never sits still for long.", "{She} is the first to volunteer for anything.",
)
_BIO_LIKES = (
    "In {her} spare time {she} is fond of {likes}.", "Friends know {him} as someone who adores {likes}.",
    "{She} has a soft spot for {likes}.", "Lately {she} has been obsessed with {likes}.",
)
_QUERIES = ("gift {rel} {words}", "{words} gift for {rel}", "{words} present {rel}", "{rel} birthday {words}",
            "{words} stuff for {rel}")


def _listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _fill(template: str, pronoun: str, **kw) -> str:
    her, him = ("her", "her") if pronoun == "she" else ("his", "him")
    text = template.format(She=pronoun.capitalize(), she=pronoun, her=her, him=him, **kw)
    return text[0].upper() + text[1:]


def _job(fake) -> str:
    job = fake.job().split(",")[0]
    while len(job) < 5 or any(ch in job for ch in "/("):  # plain titles read as a person's job
        job = fake.job().split(",")[0]
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in job.split())


def _age_phrase(age: int) -> str:
    return f"is {age}" if age % 10 else f"has just turned {age}"


def make_other_personas(n: int, seed: int = 0) -> list[dict]:
    """`n` seeded personas in three voices: dicts with persona_id ("o0000" ..., never a world persona's id),
    text, voice, interests (INTERESTS keys), dislike (a MODIFIERS sentence it paraphrases, or None) and taste
    (a VISUAL_TASTES key, or None)."""
    from faker import Faker

    fake = Faker("en_GB")
    fake.seed_instance(seed + 7919)  # not the world personas' stream: other names, jobs and towns
    rng = random.Random(f"other-personas-{seed}")
    keys = sorted(INTERESTS)
    width = max(4, len(str(max(n - 1, 0))))
    out = []
    for i in range(n):
        voice = VOICES[i % len(VOICES)] if i < len(VOICES) else rng.choice(VOICES)
        rel, rel_short, she = rng.choice(RECIPIENTS)
        chosen = rng.sample(keys, rng.choice([1, 1, 2]) if voice == "query" else rng.choice([1, 2, 2, 3]))
        dislike = look = None
        if rng.random() < DISLIKE_SHARE:
            fits = [d for d in DISLIKES if not MODIFIER_CONFLICTS.get(d[0], frozenset()) & set(chosen)]
            dislike = rng.choice(fits)
        if rng.random() < LOOK_SHARE:
            looks = sorted(k for k, (_, word) in LOOKS.items() if voice != "query" or word is not None)
            look = rng.choice(looks)
        likes = _listing([INTERESTS[k] for k in chosen])
        if voice == "query":
            words = " ".join(_QUERY_WORD.get(k, k.replace("-", " ")) for k in chosen)
            parts = [rng.choice(_QUERIES).format(rel=rel_short, words=words)]
            if dislike:
                parts.append(dislike[2])
            if look:
                parts.append(LOOKS[look][1])
            text = "; ".join(parts)  # a search box has no full stops; the reader splits at ";"
        else:
            if voice == "request":
                parts = [_fill(rng.choice(_REQUESTS), she, rel=rel, likes=likes)]
            else:
                name = fake.first_name_female() if she == "she" else fake.first_name_male()
                job = _job(fake)
                age = rng.randint(19, 79)
                works = "used to work" if age >= 67 else "works"
                parts = [f"{name} {_age_phrase(age)} and {works} as {'an' if job[0] in 'aeiou' else 'a'} {job} "
                         f"in {fake.city()}.", _fill(rng.choice(_BIO_LIFE), she),
                         _fill(rng.choice(_BIO_LIKES), she, likes=likes)]
            if dislike:
                parts.append(_fill(rng.choice(dislike[1]), she))
            if look:
                parts.append(_fill(rng.choice(LOOKS[look][0]), she))
            text = " ".join(parts)
        out.append({"persona_id": f"o{i:0{width}d}", "text": text, "voice": voice, "interests": chosen,
                    "dislike": dislike[0] if dislike else None, "taste": look})
    return out
