"""Mask what identifies a person in logged query text: e-mail addresses, phone numbers, payment card numbers.

    mask_text("mail jane@example.com or call +44 20 7946 0958")  ->  "mail [email] or call [phone]"

A run of digits (with the separators people type: spaces, dots, dashes, parentheses, a leading +) is
    [card]   when it holds 13..19 consecutive digits, whole groups, that pass the Luhn check
    [phone]  else when it holds 7..15 digits (E.164's longest number) and is not a date or a year range
    left as typed otherwise: sizes, years and prices are short; an order number of 16+ digits that fails
             the Luhn check is neither a card nor a phone.
Erring towards masking: a 7..15 digit order number is masked as [phone]. The rules are language-agnostic
(digits and `\\w` are Unicode-aware), with no word lists.
"""

from __future__ import annotations

import re

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"

_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# A digit, then digits with at most 3 separator characters between them; a leading "+" or "(" belongs to it.
# Bounded by non-digits only, not by word boundaries: Chinese or Japanese text puts no space before a number.
_NUMBER = re.compile(r"(?<!\d)[+(]?\d(?:[ ().\-/]{0,3}\d)*\)?(?!\d)")
_DATES = (re.compile(r"\d{4}-\d{1,2}-\d{1,2}"), re.compile(r"\d{1,2}[./-]\d{1,2}[./-]\d{4}"),
          re.compile(r"\d{4}\s*[-/]\s*\d{4}"))  # 2024-05-01, 01.05.2024, 1990-1995
CARD_DIGITS = (13, 19)
PHONE_DIGITS = (7, 15)


def luhn_valid(digits: str) -> bool:
    """The Luhn check digit test every payment card number passes (and 9 in 10 random numbers fail)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _holds_card(groups: list[str]) -> bool:
    """Whether some consecutive whole groups of a digit run form a Luhn-valid 13..19 digit number: a card
    typed in a longer run ("4111 1111 1111 1111 exp 12 2030" gives one run up to "exp")."""
    low, high = CARD_DIGITS
    for start in range(len(groups)):
        joined = ""
        for group in groups[start:]:
            joined += group
            if len(joined) > high:
                break
            if len(joined) >= low and luhn_valid(joined):
                return True
    return False


def _mask_number(match: re.Match) -> str:
    run = match.group(0)
    groups = re.findall(r"\d+", run)
    if _holds_card(groups):
        return CARD
    digits = sum(len(g) for g in groups)
    low, high = PHONE_DIGITS
    core = run.strip("+()")
    if low <= digits <= high and not any(p.fullmatch(core) for p in _DATES):
        return PHONE
    return run


def mask_text(text: str | None) -> str | None:
    """`text` with e-mail addresses, card and phone numbers replaced by [email], [card], [phone]."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL, text)
    return _NUMBER.sub(_mask_number, text)
