"""The ``calc`` skill: arithmetic written in words or symbols, in English or Chinese, and
currency conversion with the rates table the admin keeps (``skills.rates_file``).

The arithmetic is evaluated by simpleeval (no names, no calls, bounded powers), never by
``eval``; the numbers are the message's own, so the model cannot make one up.

    base = "CNY"
    date = "2026-12-01"
    [rates]     # units of the base currency for one unit of each
    USD = 7.12
    EUR = 7.70
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from simpleeval import InvalidExpression, SimpleEval

from appliance.skills.language import chinese
from appliance.skills.toml_files import parse_toml

CURRENCIES = {
    "USD": ("usd", "us dollars", "us dollar", "dollars", "dollar", "美元", "美金", "$"),
    "EUR": ("eur", "euros", "euro", "欧元", "€"),
    "GBP": ("gbp", "pounds", "pound", "英镑", "£"),
    "CNY": ("cny", "rmb", "yuan", "renminbi", "人民币", "元", "¥", "￥"),
    "JPY": ("jpy", "yen", "日元", "円"),
    "HKD": ("hkd", "hong kong dollars", "港币", "港元"),
}
_ALIASES = sorted(((alias, code) for code, names in CURRENCIES.items() for alias in names),
                  key=lambda pair: -len(pair[0]))
CURRENCY = re.compile("|".join(
    re.escape(a) if not a.isascii() or not a.isalpha() else rf"\b{re.escape(a)}\b"
    for a, _ in _ALIASES), re.I)
NUMBER = r"\d+(?:\.\d+)?"
ZH_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9, "十": 10}
Replacement = str | Callable[[re.Match[str]], str]
WORDS: list[tuple[str, Replacement]] = [  # (pattern, replacement), applied in order
    (r"(\d),(\d{3})", r"\1\2"),
    (r"百分之([一二两三四五六七八九十])", lambda m: f"{ZH_DIGITS[m.group(1)]}%"),
    (r"百分之(" + NUMBER + ")", r"\1%"),
    (rf"({NUMBER})\s*(?:%|percent)\s*(?:\w+\s+)?(?:of|on)\s*({NUMBER})", r"(\1/100*\2)"),
    (rf"({NUMBER})\s*(?:元|块)?的\s*({NUMBER})\s*%", r"(\1*\2/100)"),
    (rf"({NUMBER})\s*%", r"(\1/100)"),
    (r"\bmultiplied by\b|\btimes\b|乘以|乘|×|(?<=\d)\s*x\s*(?=\d)", "*"),
    (r"\bdivided by\b|\bover\b|除以|÷", "/"),
    (r"\bplus\b|加上|加|＋", "+"),
    (r"\bminus\b|\bless\b|减去|减|－", "-"),
    (r"\bto the power of\b|\^", "**"),
    (r"\bsquared\b|的平方", "**2"),
    (r"（", "("), (r"）", ")"),
]
ARITHMETIC = re.compile(r"[\d.\s+\-*/()]+")


class RatesError(Exception):
    """The rates table cannot be used, phrased for the admin."""


class Rates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base: str = Field(pattern=r"^[A-Z]{3}$")
    date: str = Field("", max_length=40)
    rates: dict[str, float]

    @field_validator("rates")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [code for code, rate in value.items() if rate <= 0 or not re.match(r"^[A-Z]{3}$",
                                                                                   code)]
        if bad:
            raise ValueError(f"rates must be positive, keyed by 3-letter codes: {bad}")
        return value

    def rate(self, code: str) -> float | None:
        return 1.0 if code == self.base else self.rates.get(code)


def load_rates(path: Path) -> Rates | None:
    """None when the admin has uploaded none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RatesError(f"{path}: cannot read the rates: {exc}") from None
    return parse_toml(Rates, text, str(path), RatesError)


@dataclass(frozen=True)
class Conversion:
    amount: float
    source: str
    target: str


def conversion(text: str) -> Conversion | None:
    """An amount in one currency asked in another: the currency next to the number is the
    one it is in (``500 dollars``, ``$500``, ``500美元``), the other one is wanted."""
    mentions = [(m.start(), m.end(), _code(m.group(0))) for m in CURRENCY.finditer(text)]
    codes = list(dict.fromkeys(code for _, _, code in mentions))
    if len(codes) != 2:
        return None
    for match in re.finditer(NUMBER, text):
        for start, end, code in mentions:
            after = start >= match.end() and text[match.end():start].strip() == ""
            before = end <= match.start() and text[end:match.start()].strip() == ""
            if after or before:
                other = next(c for c in codes if c != code)
                return Conversion(float(match.group(0)), code, other)
    return None


def _code(alias: str) -> str:
    lowered = alias.lower()
    return next(code for a, code in _ALIASES if a == lowered)


# Digits joined by hyphens that are a number, not a subtraction: a phone or account number
# (555-0101, 4471-2209, 138-0013-8000), a date (2026-12-01).
IDENTIFIER = re.compile(r"\b\d+(?:-\d+){2,}\b|\b\d+-0\d*\b|\b\d{4,}-\d{4,}\b")


def arithmetic(text: str) -> str | None:
    """The arithmetic in ``text`` as a Python expression, or None when there is none."""
    normalized = IDENTIFIER.sub(lambda m: m.group(0).replace("-", "#"), text)
    for pattern, replacement in WORDS:
        normalized = re.sub(pattern, replacement, normalized, flags=re.I)
    spans = [m.group(0).strip() for m in ARITHMETIC.finditer(normalized)]
    spans = [s for s in spans if len(re.findall(NUMBER, s)) >= 2 and _balanced(s)
             and re.search(r"[\d)]\s*[-+*/]", s)]
    return max(spans, key=len) if spans else None


def _balanced(expression: str) -> bool:
    depth = 0
    for char in expression:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def evaluate(expression: str) -> float:
    evaluator = SimpleEval(names={}, functions={})
    result = evaluator.eval(expression)
    if not isinstance(result, int | float):
        raise ValueError("not a number")
    return float(result)


def number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.6g}" if abs(value) >= 1e6 else f"{round(value, 6):,}".rstrip("0") \
        .rstrip(".")


def calc_reply(text: str, rates: Rates | None, argument: str | None = None) -> str | None:
    """The answer, or None when neither the message nor ``argument`` holds a calculation."""
    zh = chinese(text)
    wanted = conversion(text) or (conversion(argument) if argument else None)
    if wanted is not None:
        return _convert(wanted, rates, zh)
    expression = arithmetic(text) or (arithmetic(argument) if argument else None)
    if expression is None:
        return None
    try:
        result = evaluate(expression)
    except ZeroDivisionError:
        return "不能除以零。" if zh else "That divides by zero, which has no answer."
    except (InvalidExpression, SyntaxError, ValueError, TypeError, OverflowError):
        return (f"这个算式算不了：{expression}" if zh else
                f"I cannot work out {expression}: it is not arithmetic with a finite answer.")
    if expression.startswith("(") and expression.endswith(")") and \
            expression.count("(") == 1:
        expression = expression[1:-1]
    shown = expression.replace("**", "^").replace("*", "×").replace("/", "÷")
    return f"{shown} = {number(result)}"


def _convert(wanted: Conversion, rates: Rates | None, zh: bool) -> str:
    if rates is None:
        return ("本机还没有汇率表，请管理员上传（appliance skills rates FILE）。" if zh else
                "No currency rates are loaded on this box; an admin can load them with "
                "`appliance skills rates FILE`.")
    source, target = rates.rate(wanted.source), rates.rate(wanted.target)
    missing = [c for c, r in ((wanted.source, source), (wanted.target, target)) if r is None]
    if missing or source is None or target is None:
        return (f"汇率表里没有{'、'.join(missing)}。" if zh else
                f"The rates table has no rate for {', '.join(missing)}.")
    result = wanted.amount * source / target
    dated = (f"（{rates.date}汇率，仅供参考）" if zh else f" (rates of {rates.date}; indicative)") \
        if rates.date else ("（仅供参考）" if zh else " (indicative)")
    return f"{number(wanted.amount)} {wanted.source} = {number(round(result, 2))} " \
        f"{wanted.target}{dated}"
