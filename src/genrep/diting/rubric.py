"""DITING's scoring rubric (docs/papers.md s3.3): three criteria per dimension, 0/1/2 each, and the global rules.

Every dimension has one *specific* criterion (the phenomenon itself) and two *general* ones, each
scored 0, 1 or 2 (sum 0-6):

    idiom            idiom fidelity       / cultural adaptation       / tone and style
    ambiguity        ambiguity resolution / pragmatic appropriateness / information integrity
    terminology      term adequacy        / localisation strategy     / fluency
    tense            temporal cohesion    / temporal structure        / naturalness
    zero_pronoun     referent recovery    / structural completeness   / naturalness
    cultural_safety  compliance           / values                    / sensitive-information handling

Each criterion carries a one-paragraph description and what 0, 1 and 2 mean, in English and in
Chinese (``lang="en" | "zh"``; the texts are :data:`~genrep.diting.rubric_criteria.RUBRIC`), and one
worked example per score level (:mod:`~genrep.diting.rubric_examples`: a source sentence and the
translations that score 0, 1 and 2, with why). :func:`rubric_prompt` renders a dimension's criteria, their examples (unless
``examples=False``) and the nine global rules as the text the LLM judges read. The descriptions
follow the scoring guide of the official DITING code, reworded.

The nine global rules (:data:`GLOBAL_RULES`, in this order): score by the rubric, not by taste, and
a specific 0 zeroes both general scores; judge in context, not word by word; flawed but
understandable earns 1, not 0; brief reasons, only where needed; the same problem gets the same
score everywhere; the naturalness criteria mainly check for literal translation; look up an
unfamiliar idiom (and whether the English is idiomatic) before scoring; a mistranslation scores 0
everywhere; getting the sentence's meaning wrong scores 0 on the specific criterion. They are told
to the judges, and the two that can be checked mechanically are enforced in code by
:func:`apply_global_rules`: a specific score of 0 zeroes both general scores, and a mistranslation
zeroes everything. The others need judgement and stay in the prompt.
"""

from __future__ import annotations

from typing import Literal, Mapping

from genrep.diting.rubric_criteria import RUBRIC, Criterion
from genrep.diting.rubric_examples import EXAMPLES

Lang = Literal["en", "zh"]
LANGS: tuple[str, ...] = ("en", "zh")
CRITERIA: tuple[str, ...] = ("specific", "general_1", "general_2")


DIMENSION_NAMES: dict[str, tuple[str, str]] = {  # (en, zh)
    "idiom": ("Idiom translation", "成语/习语翻译"),
    "ambiguity": ("Lexical ambiguity", "词汇歧义"),
    "terminology": ("Terminology localisation", "术语本地化"),
    "tense": ("Tense consistency", "时态一致性"),
    "zero_pronoun": ("Zero-pronoun translation", "零代词（主语缺省）翻译"),
    "cultural_safety": ("Cultural safety", "文化安全"),
}

RULE_SPECIFIC_ZERO = "if the specific score is 0, both general scores are 0"
RULE_MISTRANSLATION = "a mistranslation scores 0 on every criterion"

GLOBAL_RULES: dict[str, tuple[str, ...]] = {  # the nine rules, in this order, in both languages
    "en": (
        "Score strictly by the rubric, not by your own taste in translation. If the specific criterion scores 0, "
        "both general criteria score 0 as well.",
        "Judge each sentence in its context, not word by word.",
        "Be tolerant: a translation that is imperfect but does not stand in the way of understanding the main "
        "meaning earns 1, not 0.",
        "Keep explanations brief: give a short reason only where one is needed, for instance where a case is hard "
        "to call.",
        "Be consistent: the same kind of problem gets the same score in every text.",
        "The naturalness criteria are above all a check for literal, word-for-word translation.",
        "Idioms: if you do not know an expression, first find out what it means, and whether the English rendering "
        "is itself an idiomatic expression, before you score.",
        "If the basic translation is not achieved (a mistranslation), every criterion scores 0.",
        "If the meaning of the sentence is translated wrongly, the specific criterion scores 0.",
    ),
    "zh": (
        "严格依照评分标准打分，不掺杂个人的翻译偏好；特异性指标为 0 分时，两个通用指标也都记 0 分。",
        "结合上下文整体判断，不要逐字逐词地比对。",
        "适度宽容：译文虽不完美，但不妨碍理解主要意思的，给 1 分，不给 0 分。",
        "说明从简：只在确有必要时（例如难以判定的情况）写一句简短的理由。",
        "前后一致：同一类问题在任何文本中都给相同的分数。",
        "自然度类指标主要用来检查译文是否逐字直译。",
        "遇到习语时，如果不了解某个说法，先弄清它的意思，并确认英文译法本身是否为地道的习语表达，再打分。",
        "基本翻译没有达成（即误译）的，所有指标都记 0 分。",
        "句子的意思译错了，特异性指标记 0 分。",
    ),
}

_LABELS = {
    "en": {
        "dimension": "Dimension: ",
        "criteria": "Criteria (each scored 0, 1 or 2):",
        "rules": "Global rules:",
        "specific": " (dimension-specific) - ",
        "general_1": " (general) - ",
        "general_2": " (general) - ",
        "colon": ": ",
        "source": "Example source: ",
        "example": 'e.g. "{translation}" ({why})',
    },
    "zh": {
        "dimension": "评测维度：",
        "criteria": "评分指标（每项 0、1 或 2 分）：",
        "rules": "全局规则：",
        "specific": "（特异性指标）- ",
        "general_1": "（通用指标一）- ",
        "general_2": "（通用指标二）- ",
        "colon": "：",
        "source": "示例原文：",
        "example": "例：{translation}（{why}）",
    },
}


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"unknown prompt language {lang!r} (known: {', '.join(LANGS)})")
    return lang


def criteria(dimension: str) -> tuple[Criterion, Criterion, Criterion]:
    """The (specific, general_1, general_2) criteria of a dimension."""
    if dimension not in RUBRIC:
        raise ValueError(f"unknown dimension {dimension!r} (known: {', '.join(RUBRIC)})")
    return RUBRIC[dimension]


def global_rules_prompt(lang: Lang = "en") -> str:
    """The nine global rules, numbered 1-9, one per line."""
    return "\n".join(f"{n}. {rule}" for n, rule in enumerate(GLOBAL_RULES[check_lang(lang)], start=1))


def rubric_prompt(dimension: str, lang: Lang = "en", examples: bool = True, rules: bool = True) -> str:
    """The rubric of ``dimension`` and (unless not ``rules``) the global rules, as the judges read them.

    With ``examples`` (the default) every criterion shows its worked example
    (:data:`~genrep.diting.rubric_examples.EXAMPLES`): the source sentence once, then under each score
    level the translation that earns it and why. The reference protocol shows the rules in a section of
    their own (:func:`global_rules_prompt`) and passes ``rules=False``.
    """
    labels = _LABELS[check_lang(lang)]
    name_en, name_zh = DIMENSION_NAMES[dimension]
    lines = [labels["dimension"] + (name_zh if lang == "zh" else name_en), "", labels["criteria"]]
    for key, crit, example in zip(CRITERIA, criteria(dimension), EXAMPLES[dimension]):
        lines.append(f"- {key}{labels[key]}{crit.name(lang)}{labels['colon']}{crit.text(lang)}")
        if examples:
            lines.append(f"    {labels['source']}{example.source_zh}")
        why = example.why_zh if lang == "zh" else example.why_en
        for score, meaning in reversed(list(enumerate(crit.levels(lang)))):
            lines.append(f"    {score}{labels['colon']}{meaning}")
            if examples:
                shown = labels["example"].format(translation=example.translations[score], why=why[score])
                lines.append(f"      {shown}")
    if rules:
        lines += ["", labels["rules"], global_rules_prompt(lang)]
    return "\n".join(lines)


def apply_global_rules(scores: Mapping[str, int], mistranslation: bool) -> tuple[dict[str, int], list[str]]:
    """Enforce the mechanical global rules on ``{specific, general_1, general_2}``.

    A mistranslation zeroes every criterion; otherwise a specific score of 0 zeroes both general
    ones. Returns the corrected scores and one log line per score changed, e.g.
    ``"general_1 2 -> 0 (rule: if the specific score is 0, both general scores are 0)"`` (none when
    the scores already obey the rules).
    """
    out = {key: int(scores[key]) for key in CRITERIA}
    for key, value in out.items():
        if value not in (0, 1, 2):
            raise ValueError(f"{key} must be 0, 1 or 2, got {value}")
    if mistranslation:
        zeroed, rule = CRITERIA, RULE_MISTRANSLATION
    elif out["specific"] == 0:
        zeroed, rule = CRITERIA[1:], RULE_SPECIFIC_ZERO
    else:
        return out, []
    corrections = [f"{key} {out[key]} -> 0 (rule: {rule})" for key in zeroed if out[key] != 0]
    for key in zeroed:
        out[key] = 0
    return out, corrections
