"""Punctuation marks that every CJK frontend maps the same way (upstream repeats this table per language).

Order matters to callers that build replacement patterns from the keys, so language tables extend this one with
`{**CJK_MARKS, ...}`, keeping these keys first.
"""

CJK_MARKS: dict[str, str] = {
    "：": ",",
    "；": ",",
    "，": ",",
    "。": ".",
    "！": "!",
    "？": "?",
    "\n": ".",
    "·": ",",
    "、": ",",
    "...": "…",
}
