"""Masking of logged query text (distill/querylog/masking.py) and what a logged row may hold."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from distill.querylog import QueryRecord, image_sha256, mask_text, to_row
from distill.querylog.masking import luhn_valid
from distill.schemas import QUERY_LOG


@pytest.mark.parametrize("text,masked", [
    ("mail me at jane.doe+shop@example.co.uk please", "mail me at [email] please"),
    ("Kontakt: jürgen.müller@beispiel.de", "Kontakt: [email]"),
    ("call +44 20 7946 0958 now", "call [phone] now"),
    ("(555) 123-4567 after six", "[phone] after six"),
    ("555.123.4567", "[phone]"),
    ("my mobile 07700900123", "my mobile [phone]"),
    ("電話090-1234-5678です", "電話[phone]です"),  # no space before the number
])
def test_emails_and_phone_numbers_are_masked(text, masked):
    assert mask_text(text) == masked


@pytest.mark.parametrize("text,masked", [
    ("pay with 4111 1111 1111 1111 please", "pay with [card] please"),
    ("4111-1111-1111-1111", "[card]"),
    ("5500005555555559", "[card]"),  # Mastercard test number
    ("amex 378282246310005", "amex [card]"),  # 15 digits
    ("card 4111 1111 1111 1111 exp 12 2030", "card [card] exp 12 2030"),  # the card inside a longer digit run
])
def test_luhn_valid_card_numbers_are_masked(text, masked):
    assert mask_text(text) == masked


@pytest.mark.parametrize("text", [
    "order 4111111111111112 has not arrived",  # 16 digits failing the Luhn check: an order number, not a card
    "tracking 12345678901234567",  # 17 digits, fails Luhn, too long for a phone number
    "size 42 shoes for a 3-year-old",
    "toys from 1990-1995",
    "delivered on 2024-05-01",
    "a 1.5 kg bag for 1299.00",
])
def test_order_numbers_sizes_years_and_prices_are_kept(text):
    assert mask_text(text) == text


def test_a_shorter_number_failing_luhn_is_never_a_card():
    assert not luhn_valid("1234567890123")
    assert mask_text("ref 1234567890123") == "ref [phone]"  # 13 digits: masked, but as a possible phone number
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_a_row_holds_only_the_schema_fields_masked_and_an_upload_as_its_hash():
    upload = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
    record = QueryRecord(ts=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), kind="conversation",
                         index_version="v1", k=5, item_ids=["a", "b"], scores=[0.5, 0.25], latency_ms=12.5,
                         turns=[("user", "a gift, write to ann@example.org"), ("assistant", "for whom?"),
                                ("user", "my sister, call 555 123 4567")], reference_image_sha256=image_sha256(upload))
    row = to_row(record)
    assert set(row) == set(QUERY_LOG.names)
    assert {f.name for f in dataclasses.fields(QueryRecord)} == set(QUERY_LOG.names)  # no room for headers
    assert row["turns"] == [{"role": "user", "content": "a gift, write to [email]"},
                            {"role": "assistant", "content": "for whom?"},
                            {"role": "user", "content": "my sister, call [phone]"}]
    assert row["reference_image_sha256"] == image_sha256(upload) and len(row["reference_image_sha256"]) == 64
    assert upload not in repr(row).encode()
