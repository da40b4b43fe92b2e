"""AgentEval's prompt text (docs/papers.md s3.4), in English and Chinese: each role's system prompt (an
expert, the judge, the single-agent judge) with the rubric and the JSON answer format, the item as
every role sees it, and the per-round requests the runner (:mod:`genrep.diting.agenteval`) sends.
"""

from __future__ import annotations

from typing import Literal

from genrep.diting.rubric import Lang, rubric_prompt
from genrep.diting.schema import Item, Translation

_FORMAT_SCORES = {
    "en": '"mistranslation": <true if the meaning of the text is rendered wrongly, else false>, '
    '"specific": <0, 1 or 2>, "general_1": <0, 1 or 2>, "general_2": <0, 1 or 2>}',
    "zh": '"mistranslation": <原文意思译错为 true，否则为 false>, '
    '"specific": <0、1 或 2>, "general_1": <0、1 或 2>, "general_2": <0、1 或 2>}',
}

PROMPTS: dict[str, dict[str, str]] = {
    "en": {
        "expert": "You are Expert {n} on a panel of two translation experts and a judge. You score one English "
        "translation of a passage from a Chinese web novel with the rubric below. Aim to agree with "
        "careful human raters: follow the rubric closely and do not be harsher than it asks. When you "
        "see the other expert's assessment or the judge's reasons, weigh them honestly: keep your view "
        "when you have good reasons, change it when they convince you, and never disagree just to "
        "disagree.",
        "judge": "You are the chief judge of a panel of two translation experts who score one English translation "
        "of a passage from a Chinese web novel with the rubric below. You add no views of your own: you "
        "weigh only the arguments the two experts give, decide whether they agree, and give the panel's "
        "scores.",
        "single": "You are a professional translator of Chinese web novels and an expert evaluator of "
        "translations. You score one English translation of a passage with the rubric below, aiming to "
        "agree with careful human raters.",
        "format_expert": "Reply with one JSON object only, no other text:\n"
        '{"reasons": "<brief reasons for your scores>", ' + _FORMAT_SCORES["en"],
        "format_judge": "Reply with one JSON object only, no other text:\n"
        '{"agree": "<yes if the two experts give the same score on all three criteria, else no>", '
        '"reasons": "<why they agree or not, and what your scores rest on>", ' + _FORMAT_SCORES["en"],
        "item": "Task given to the translation system: {instruction}\n"
        "Context (Chinese, comes before the text): {context}\n"
        "Source text (Chinese): {source}\n"
        "Translation to score (English): {translation}",
        "no_context": "(none)",
        "default_instruction": "Translate the Chinese text into English.",
        "e1_first": "Round 1. Score the translation.",
        "e1_later": "Round {round}. Expert 2's assessment in round {prev}: {answer}\n"
        "The judge's reasons: {reasons}\n"
        "Reconsider the translation and give your scores for round {round}.",
        "e2": "Round {round}. Expert 1's assessment: {answer}\nGive your own scores for round {round}.",
        "judge_round": "Round {round}.\nExpert 1: {e1}\nExpert 2: {e2}\n"
        "Decide whether the two experts agree, and give the scores.",
        "final": "This is the last round: you must conclude now. Your scores are final, whatever you answer for agree.",
        "single_ask": "Score the translation.",
    },
    "zh": {
        "expert": "你是翻译专家 {n}，与另一位翻译专家和一位裁判组成评审小组，按照下面的评分标准为一段中文网络小说的英文译文打分。"
        "你的目标是与认真的人类评分员保持一致：严格遵循评分标准，但不要比标准更苛刻。看到另一位专家的评价或裁判的理由时，"
        "请认真权衡：有充分理由时可以坚持自己的观点，被说服时就修改评分，不要为了反驳而反驳。",
        "judge": "你是首席评审，负责主持两位翻译专家对一段中文网络小说英文译文的评分，评分标准见下文。你不提出新的观点，"
        "只分析两位专家论据的质量，判断他们是否达成共识，并给出评审小组的分数。",
        "single": "你是一名中文网络小说的专业译者和译文评审专家。请按照下面的评分标准为一段英文译文打分，目标是与认真的人类评分员保持一致。",
        "format_expert": "只输出一个 JSON 对象，不要任何其他文字：\n"
        '{"reasons": "<简要说明打分理由>", ' + _FORMAT_SCORES["zh"],
        "format_judge": "只输出一个 JSON 对象，不要任何其他文字：\n"
        '{"agree": "<两位专家在三个指标上分数完全相同时为 yes，否则为 no>", '
        '"reasons": "<共识已达成或尚未达成的原因，以及你的分数依据>", ' + _FORMAT_SCORES["zh"],
        "item": "翻译任务：{instruction}\n上下文（中文，位于文本之前）：{context}\n源文本（中文）：{source}\n待评译文（英文）：{translation}",
        "no_context": "（无）",
        "default_instruction": "请将中文文本翻译成英文。",
        "e1_first": "第 1 轮。请为译文打分。",
        "e1_later": "第 {round} 轮。专家 2 在第 {prev} 轮的评价：{answer}\n裁判的理由：{reasons}\n请重新审视译文，给出你第 {round} 轮的评分。",
        "e2": "第 {round} 轮。专家 1 的评价：{answer}\n请给出你自己第 {round} 轮的评分。",
        "judge_round": "第 {round} 轮。\n专家 1：{e1}\n专家 2：{e2}\n请判断两位专家是否达成共识，并给出分数。",
        "final": "这是最后一轮：你必须现在作出结论。无论 agree 填什么，你给出的分数都是最终分数。",
        "single_ask": "请为译文打分。",
    },
}


PromptRole = Literal["expert", "judge", "single"]


def system_prompt(kind: PromptRole, dimension: str, lang: Lang, n: int = 0) -> str:
    """The system prompt of an expert (``n`` = 1 or 2), the judge or the single-agent judge."""
    if kind not in ("expert", "judge", "single"):
        raise ValueError(f"system_prompt: unknown role {kind!r} (expert, judge, single)")
    p = PROMPTS[lang]
    answer = p["format_judge"] if kind == "judge" else p["format_expert"]
    return f"{p[kind].format(n=n)}\n\n{rubric_prompt(dimension, lang)}\n\n{answer}"


def item_prompt(item: Item, translation: Translation, lang: str) -> str:
    """The item as every role sees it: the task, the context, the source and the translation (no reference,
    as in the official AgentEval)."""
    p = PROMPTS[lang]
    return p["item"].format(
        instruction=item.instruction.strip() or p["default_instruction"],
        context=item.context.strip() or p["no_context"],
        source=item.source_zh,
        translation=translation.output,
    )
