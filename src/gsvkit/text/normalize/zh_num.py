"""Chinese verbalisation of numbers, dates, times, phone numbers and units.

The rules (and their order, applied in ``normalize/zh.py``) follow PaddleSpeech's zh_normalization as vendored by
GPT-SoVITS, because official models were trained on its output: for example digit strings of three or more digits
are read one digit at a time with 幺 for 1 ("123" → 幺二三), and years are read digit by digit.
"""

from __future__ import annotations

import re

DIGITS = dict(zip("0123456789", "零一二三四五六七八九", strict=True))
# power of ten → unit, largest first when searching
_UNITS = {1: "十", 2: "百", 3: "千", 4: "万", 8: "亿"}
_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"


def _cardinal_parts(digits: str, use_zero: bool = True) -> list[str]:
    stripped = digits.lstrip("0")
    if not stripped:
        return []
    if len(stripped) == 1:
        if use_zero and len(stripped) < len(digits):
            return [DIGITS["0"], DIGITS[stripped]]
        return [DIGITS[stripped]]
    power = max(p for p in _UNITS if p < len(stripped))
    return _cardinal_parts(digits[:-power]) + [_UNITS[power]] + _cardinal_parts(digits[-power:])


def verbalize_cardinal(digits: str) -> str:
    """'1250' → 一千二百五十; '10' → 十; '0' → 零."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return DIGITS["0"]
    parts = _cardinal_parts(digits)
    if len(parts) >= 2 and parts[0] == DIGITS["1"] and parts[1] == _UNITS[1]:
        parts = parts[1:]  # 一十五 is said 十五
    return "".join(parts)


def verbalize_digit(digits: str, alt_one: bool = False) -> str:
    """Read a digit string one digit at a time ('110' → 幺幺零 with ``alt_one``)."""
    out = "".join(DIGITS[d] for d in digits)
    return out.replace("一", "幺") if alt_one else out


def num2str(value: str) -> str:
    """'12.50' → 十二点五零, '.5' → 零点五."""
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"number {value!r} has more than one decimal point")
    integer, decimal = (parts[0], "") if len(parts) == 1 else parts
    result = verbalize_cardinal(integer)
    decimal = decimal.rstrip("0") + "0" if decimal.endswith("0") else decimal.rstrip("0")
    if decimal:
        result = (result or "零") + "点" + verbalize_digit(decimal)
    return result


# ---- dates and times -----------------------------------------------------------------------------------------

RE_DATE = re.compile(r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
RE_DATE2 = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_TIME = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
RE_TIME = re.compile(_TIME)
RE_TIME_RANGE = re.compile(_TIME + r"(~|-)" + _TIME)


def replace_date(m: re.Match) -> str:
    year, month, day = m.group(1), m.group(3), m.group(5)
    out = f"{verbalize_digit(year)}年" if year else ""
    if month:
        out += f"{verbalize_cardinal(month)}月"
    if day:
        out += f"{verbalize_cardinal(day)}{m.group(9)}"
    return out


def replace_date2(m: re.Match) -> str:
    return f"{verbalize_digit(m.group(1))}年{verbalize_cardinal(m.group(3))}月{verbalize_cardinal(m.group(4))}日"


def _time_num2str(num: str) -> str:
    out = num2str(num.lstrip("0"))
    return DIGITS["0"] + out if num.startswith("0") else out


def _clock(hour: str, minute: str, second: str | None, half_if: str) -> str:
    out = f"{num2str(hour)}点"
    if minute.lstrip("0"):
        # upstream decides 半 from the *first* minute of a range for both ends; kept for parity
        out += "半" if int(half_if) == 30 else f"{_time_num2str(minute)}分"
    if second and second.lstrip("0"):
        out += f"{_time_num2str(second)}秒"
    return out


def replace_time(m: re.Match) -> str:
    out = _clock(m.group(1), m.group(2), m.group(4), m.group(2))
    if len(m.groups()) > 5:
        out += "至" + _clock(m.group(6), m.group(7), m.group(9), m.group(2))
    return out


# ---- numbers -------------------------------------------------------------------------------------------------

RE_FRAC = re.compile(r"(-?)(\d+)/(\d+)")
RE_PERCENTAGE = re.compile(r"(-?)(\d+(\.\d+)?)%")
RE_INTEGER = re.compile(r"(-)(\d+)")
RE_DEFAULT_NUM = re.compile(r"\d{3}\d*")
RE_DECIMAL_NUM = re.compile(r"(-?)((\d+)(\.\d+))|(\.(\d+))")
RE_NUMBER = re.compile(r"(-?)((\d+)(\.\d+)?)|(\.(\d+))")
_OPERAND = rf"((-?)((\d+)(\.\d+)?[{_SUP}]*)|(\.\d+[{_SUP}]*)|([A-Za-z][{_SUP}]*))"
RE_ASMD = re.compile(_OPERAND + r"([\+\-\×÷=])" + _OPERAND)
RE_POWER = re.compile(rf"[{_SUP}]+")
_UNIT_ALT = r"(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
_NUM_ALT = r"((-?)((\d+)(\.\d+)?)|(\.(\d+)))"
RE_TO_RANGE = re.compile(_NUM_ALT + _UNIT_ALT + r"[~]" + _NUM_ALT + _UNIT_ALT)
RE_RANGE = re.compile(r"(?<![\d\+\-\×÷=])((-?)((\d+)(\.\d+)?))[-~]((-?)((\d+)(\.\d+)?))(?![\d\+\-\×÷=])")
COM_QUANTIFIERS = (
    "(处|台|架|枚|趟|幅|平|方|堵|间|床|株|批|项|例|列|篇|栋|注|亩|封|艘|把|目|套|段|人|所|朵|匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|"
    "顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|"
    "跳|枝|件|贴|针|线|管|名|位|身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|毫|厘|(公)分|分|寸|尺|"
    "丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|"
    "箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|小时|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|"
    "片|张|颗|块|元|(亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|美|)元|(亿|千万|百万|万|千|百|十|)吨|(亿|千万|百万|万|千|百|)块|"
    "角|毛|分)"
)
RE_POSITIVE_QUANTIFIERS = re.compile(r"(\d+)([多余几\+])?" + COM_QUANTIFIERS)
_ASMD_WORDS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_POWER_CHARS = dict(zip(_SUP, "0123456789xyn", strict=True))


def replace_frac(m: re.Match) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}{num2str(m.group(3))}分之{num2str(m.group(2))}"


def replace_percentage(m: re.Match) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}百分之{num2str(m.group(2))}"


def replace_negative_num(m: re.Match) -> str:
    return ("负" if m.group(1) else "") + num2str(m.group(2))


def replace_default_num(m: re.Match) -> str:
    return verbalize_digit(m.group(0), alt_one=True)


def replace_asmd(m: re.Match) -> str:
    return m.group(1) + _ASMD_WORDS[m.group(8)] + m.group(9)


def replace_power(m: re.Match) -> str:
    return "的" + "".join(_POWER_CHARS[c] for c in m.group(0)) + "次方"


def replace_number(m: re.Match) -> str:
    if m.group(5):
        return num2str(m.group(5))
    return ("负" if m.group(1) else "") + num2str(m.group(2))


def replace_positive_quantifier(m: re.Match) -> str:
    extra = "多" if m.group(2) == "+" else (m.group(2) or "")
    number = num2str(m.group(1))
    return f"{'两' if number == '二' else number}{extra}{m.group(3)}"


def replace_range(m: re.Match) -> str:
    first = RE_NUMBER.sub(replace_number, m.group(1))
    second = RE_NUMBER.sub(replace_number, m.group(6))
    return f"{first}到{second}"


def replace_to_range(m: re.Match) -> str:
    return m.group(0).replace("~", "至")


# ---- phone numbers -------------------------------------------------------------------------------------------

RE_MOBILE_PHONE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
RE_TELEPHONE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
RE_NATIONAL_UNIFORM_NUMBER = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")


def replace_mobile(m: re.Match) -> str:
    return "，".join(verbalize_digit(p, alt_one=True) for p in m.group(0).strip("+").split())


def replace_phone(m: re.Match) -> str:
    return "，".join(verbalize_digit(p, alt_one=True) for p in m.group(0).split("-"))


# ---- temperatures and units ----------------------------------------------------------------------------------

RE_TEMPERATURE = re.compile(r"(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)")
# plain substring replacement in this order, as upstream does (so a stray "s" or "m" becomes 秒/米)
MEASURES = (
    ("cm2", "平方厘米"),
    ("cm²", "平方厘米"),
    ("cm3", "立方厘米"),
    ("cm³", "立方厘米"),
    ("cm", "厘米"),
    ("db", "分贝"),
    ("ds", "毫秒"),
    ("kg", "千克"),
    ("km", "千米"),
    ("m2", "平方米"),
    ("m²", "平方米"),
    ("m³", "立方米"),
    ("m3", "立方米"),
    ("ml", "毫升"),
    ("m", "米"),
    ("mm", "毫米"),
    ("s", "秒"),
)


def replace_temperature(m: re.Match) -> str:
    # upstream means to keep 摄氏度 but its comparison never matches: every unit is read 度 (verified on its output)
    sign = "零下" if m.group(1) else ""
    return f"{sign}{num2str(m.group(2))}度"


def replace_measure(sentence: str) -> str:
    for unit, word in MEASURES:
        sentence = sentence.replace(unit, word)
    return sentence
