"""The calc skill: arithmetic in words or symbols, English or Chinese, and currency
conversion from the admin's rates table; never Python's eval."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.skills.calc import Rates, RatesError, arithmetic, calc_reply, conversion, load_rates

RATES = Rates(base="CNY", date="2026-12-01", rates={"USD": 7.0, "EUR": 7.7, "GBP": 9.0})


@pytest.mark.parametrize(("text", "answer"), [
    ("What is 12 times 7?", "12 × 7 = 84"),
    ("what is (45 + 55) * 3", "(45 + 55) × 3 = 300"),
    ("1200 divided by 12", "1200 ÷ 12 = 100"),
    ("What's 20% of 480?", "= 96"),
    ("compute 2^10", "2^10 = 1,024"),
    ("12乘以7等于多少？", "12×7 = 84"),
    ("算一下3000减去450", "3000-450 = 2,550"),
    ("480的20%是多少？", "= 96"),
    ("2000元的百分之五是多少？", "= 100"),
    ("What is 1,500 plus 250?", "1500 + 250 = 1,750"),
])
def test_arithmetic_in_words_or_symbols_is_worked_out(text: str, answer: str) -> None:
    reply = calc_reply(text, None)
    assert reply is not None and reply.endswith(answer) and answer in reply


def test_a_division_by_zero_is_said_to_have_no_answer() -> None:
    assert calc_reply("what is 1/0", None) == "That divides by zero, which has no answer."


def test_a_power_too_large_is_refused_not_computed() -> None:
    reply = calc_reply("what is 9 ** 9 ** 9", None)
    assert reply is not None and reply.startswith("I cannot work out")


def test_a_message_without_a_calculation_is_handed_back() -> None:
    assert calc_reply("I have 3 children", None) is None
    assert arithmetic("hello there") is None


def test_names_and_calls_are_never_evaluated() -> None:
    assert arithmetic("__import__('os').system('id')") is None
    assert calc_reply("open('/etc/passwd') + 1", None) is None


@pytest.mark.parametrize(("text", "source", "target"), [
    ("Convert 100 USD to CNY", "USD", "CNY"),
    ("How many euros is 500 dollars?", "USD", "EUR"),
    ("$20 in yuan", "USD", "CNY"),
    ("100美元换多少人民币？", "USD", "CNY"),
    ("2000人民币能换多少美元？", "CNY", "USD"),
])
def test_the_currency_next_to_the_amount_is_the_one_it_is_in(text: str, source: str,
                                                             target: str) -> None:
    wanted = conversion(text)
    assert wanted is not None and (wanted.source, wanted.target) == (source, target)


def test_a_conversion_uses_the_rates_table_and_says_its_date() -> None:
    assert calc_reply("Convert 100 USD to CNY", RATES) == \
        "100 USD = 700 CNY (rates of 2026-12-01; indicative)"
    assert calc_reply("1000欧元能换多少人民币？", RATES) == \
        "1,000 EUR = 7,700 CNY（2026-12-01汇率，仅供参考）"


def test_a_cross_rate_goes_through_the_base_currency() -> None:
    assert calc_reply("How much is 77 EUR in USD?", RATES) == \
        "77 EUR = 84.7 USD (rates of 2026-12-01; indicative)"


def test_without_a_rates_table_the_person_is_told_how_to_get_one() -> None:
    reply = calc_reply("Convert 100 USD to CNY", None)
    assert reply is not None and "appliance skills rates" in reply


def test_a_currency_missing_from_the_table_is_named() -> None:
    assert calc_reply("100 JPY in USD", RATES) == "The rates table has no rate for JPY."


def test_a_rates_file_with_a_mistake_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "rates.toml"
    path.write_text('base = "CNY"\n[rates]\nUSD = -7\n')
    with pytest.raises(RatesError, match="rates must be positive"):
        load_rates(path)
    assert load_rates(tmp_path / "none.toml") is None


@pytest.mark.parametrize("text", ["My account number is 4471-2209.", "call me at 555-0101",
                                  "my phone is 138-0013-8000", "I was there on 2026-12-01"])
def test_phone_account_and_date_numbers_are_not_subtractions(text: str) -> None:
    assert arithmetic(text) is None


def test_a_plain_subtraction_with_a_hyphen_still_is_one() -> None:
    assert calc_reply("what is 100-37?", None) == "100-37 = 63"
