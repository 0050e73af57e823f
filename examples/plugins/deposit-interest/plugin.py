"""deposit-interest: interest on a fixed deposit, in the box's confined plugin runtime.

The box fills the skill's parameters with a constrained tool call; when the model could not,
the numbers are read from the request itself, so the answer never depends on the model.
"""

from __future__ import annotations

import re

from appliance_plugin import Box, Call, run, skill

NUMBER = r"(\d+(?:[.,]\d+)*(?:\.\d+)?)\s*(万|w|k)?"
CHINESE_DIGITS = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
                  "八": 8, "九": 9, "十": 10}


def _amount(text: str, unit: str | None) -> float:
    value = float(text.replace(",", ""))
    return value * {"万": 10000, "w": 10000, "k": 1000}.get((unit or "").lower(), 1)


def _normalise(text: str) -> str:
    """Chinese numerals that customers write (五万, 两年) as digits."""
    def digits(match: re.Match[str]) -> str:
        return str(CHINESE_DIGITS[match.group(1)]) + match.group(2)
    return re.sub(r"([一两二三四五六七八九十])(万|年|个?月)", digits, text)


def read_request(request: str) -> dict[str, float | bool]:
    """principal, rate_percent and years as a customer writes them, in English or Chinese."""
    text = _normalise(request)
    found: dict[str, float | bool] = {}
    rate = re.search(r"(\d+(?:\.\d+)?)\s*(%|percent|厘)", text)
    if rate:
        found["rate_percent"] = float(rate.group(1))
        text = text[:rate.start()] + " " + text[rate.end():]
    years = re.search(r"(\d+(?:\.\d+)?)\s*(years?|yrs?|年)", text)
    if years:
        found["years"] = float(years.group(1))
        text = text[:years.start()] + " " + text[years.end():]
    amounts = [_amount(m.group(1), m.group(2)) for m in re.finditer(NUMBER, text)]
    if amounts:
        found["principal"] = max(amounts)
    found["compound"] = bool(re.search(r"compound|复利", request, re.IGNORECASE))
    return found


def interest_reply(principal: float, rate: float, years: float, compound: bool,
                   chinese: bool) -> str:
    if compound:
        final = principal * (1 + rate / 100) ** years
    else:
        final = principal * (1 + rate / 100 * years)
    earned = final - principal
    if chinese:
        how = "按年复利" if compound else "单利"
        return (f"本金 {principal:,.2f}，年利率 {rate:g}%，{years:g} 年（{how}）："
                f"利息 {earned:,.2f}，到期合计 {final:,.2f}。实际以本行挂牌利率为准。")
    how = "compounded yearly" if compound else "simple interest"
    return (f"{principal:,.2f} at {rate:g}% a year for {years:g} years ({how}): interest "
            f"{earned:,.2f}, {final:,.2f} at maturity. The branch's posted rates apply.")


@skill("interest")
def interest(call: Call, box: Box) -> str:
    values = read_request(call.request)
    for key in ("principal", "rate_percent", "years"):
        given = call.arguments.get(key)
        if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0 \
                and key not in values:
            values[key] = float(given)
    chinese = call.language == "zh"
    missing = [k for k in ("principal", "rate_percent", "years") if k not in values]
    if missing:
        if chinese:
            return "请告诉我本金、年利率（%）和存期（年），例如：10000元存3年，年利率2.5%。"
        return ("Tell me the amount, the yearly rate in percent and the years, e.g. "
                "'10000 at 2.5% for 3 years'.")
    return interest_reply(float(values["principal"]), float(values["rate_percent"]),
                          float(values["years"]), bool(values.get("compound")), chinese)


if __name__ == "__main__":
    run()
