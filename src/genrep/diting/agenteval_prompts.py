"""AgentEval's prompt text (docs/papers.md s3.4), in Chinese and English, for both protocols.

``reference`` (the default) carries, in genrep's own words, every instruction of the official
prompts (``code/Agent-ans.py`` system messages, ``code/debate_prompt.py``, ``code/metrics.py``'s
notes, ``code/single_baseline.py``): a short persona as the system message, then one user message
with the item, the role's constraint, the answer format (scores first), the nine global rules,
the rubric with its worked examples, and "no step-by-step reasoning". The docs/diting.md table
maps each reference instruction to the entry of :data:`REFERENCE_PROMPTS` that carries it.

``genrep`` is genrep's earlier variant (:data:`GENREP_PROMPTS`, not the paper's): the rubric in
the system prompt, reasons before scores, a mistranslation flag, per-round requests that name the
round and a last-round announcement.
"""

from __future__ import annotations

from typing import Literal

from genrep.diting.rubric import Lang, global_rules_prompt, rubric_prompt
from genrep.diting.schema import Item, Translation

_FORMAT_SCORES = {
    "en": '"mistranslation": <true if the meaning of the text is rendered wrongly, else false>, '
    '"specific": <0, 1 or 2>, "general_1": <0, 1 or 2>, "general_2": <0, 1 or 2>}',
    "zh": '"mistranslation": <原文意思译错为 true，否则为 false>, '
    '"specific": <0、1 或 2>, "general_1": <0、1 或 2>, "general_2": <0、1 或 2>}',
}

_SCORE = {"en": "0, 1 or 2", "zh": "0、1 或 2"}

REFERENCE_PROMPTS: dict[str, dict[str, str]] = {
    "zh": {
        # system messages (Agent-ans.py: both experts, the judge; single_baseline.py: the single agent)
        "expert_system": "你是一位翻译专家，任务是依照标注规则给一些中英句对的译文打分。你的打分要尽可能与人类标注者一致，"
        "所以请格外留意评分规则里的细节。注意：打分不要过于苛刻，也不必过分看重文化底蕴之类的要求；需要时可以坚持自己的判断，"
        "但不要为了反驳而反驳。",
        "single_system": "你是一位翻译专家，任务是依照标注规则给一些中英句对的译文打分。你的打分要尽可能与人类标注者一致，"
        "所以请格外留意评分规则里的细节。",
        "judge_system": "你是一位极其理性的翻译专家，在这场由多位专家参与的会诊中担任裁判。",
        # the first user message of each role (debate_prompt.py)
        "expert_intro": "你是一位翻译专家。",
        "judge_intro": "你是首席评审。你的职责不是提出新的观点，而是分析正方和反方两位专家论据的质量，"
        "判断每一轮讨论是否可以结束，并给出最终的诊断。",
        "task": "待评的翻译任务：",
        "constraints": "约束：",
        "expert_constraint": "你可以坚持自己的观点，不必轻易被说服；但请考虑对方的文化背景，慎重决定是否修改你的评分。"
        "不要为了反驳而反驳。",
        "judge_constraint": "尽好裁判的本分：只依据双方专家的发言作出裁决。",
        "format": "请按下面的格式输出一个 JSON 字符串，直接给出结果，不要附加任何说明或其他文字：",
        "expert_format": '{{"specific": <{score}：这篇译文在该任务特异性指标上的得分>, '
        '"general_1": <{score}：这篇英文译文在该任务第一个通用指标上的得分>, '
        '"general_2": <{score}：这篇英文译文在该任务第二个通用指标上的得分>, '
        '"reasons": "<为什么给出这三个分数>"}}',
        "judge_format": '{{"agree": "<两位专家的打分是否已经一致，只能回答 yes 或 no；只要双方打分有分歧，就必须回答 no>", '
        '"reasons": "<你认为已经或尚未达成一致的原因>", '
        '"specific": <{score}：综合双方观点，这篇译文在该任务特异性指标上的得分>, '
        '"general_1": <{score}：综合双方观点，这篇英文译文在该任务第一个通用指标上的得分>, '
        '"general_2": <{score}：综合双方观点，这篇英文译文在该任务第二个通用指标上的得分>}}',
        "rules": "以下几点你必须注意：",
        "rubric": "以下是评分规则，请参考其中的打分实例：",
        "direct": "请直接给出每个指标的分数和理由，不需要逐步推理。",
        # the item (Agent-ans.py's query: the task, the source text, the target text)
        "item_task": "任务：",
        "item_context": "上下文：",
        "item_source": "源文本：",
        "item_target": "目标文本（待评译文）：",
        "default_instruction": "请将中文文本翻译成英文。",
        # what the other roles are shown (Agent-ans.py)
        "pro": "正方专家：",
        "con": "反方专家：",
        "last_round": "现在是最后一轮：请结束讨论，给出你的诊断。",
    },
    "en": {
        "expert_system": "You are a translation expert whose job is to score translations of Chinese-English sentence "
        "pairs by an annotation rubric. Your scores should agree with the human annotators as closely as possible, so "
        "pay close attention to the details of the scoring rules. Note: do not score too strictly, and do not put too "
        "much weight on demands such as cultural depth; hold to your own judgement when you need to, but never "
        "disagree only for the sake of disagreeing.",
        "single_system": "You are a translation expert whose job is to score translations of Chinese-English sentence "
        "pairs by an annotation rubric. Your scores should agree with the human annotators as closely as possible, so "
        "pay close attention to the details of the scoring rules.",
        "judge_system": "You are a highly rational translation expert acting as the judge in a consultation among "
        "several experts.",
        "expert_intro": "You are a translation expert.",
        "judge_intro": "You are the chief reviewer. Your job is not to put forward views of your own but to weigh the "
        "quality of the arguments of the affirmative and the opposing expert, to decide after each round whether the "
        "discussion can end, and to give the final diagnosis.",
        "task": "The translation task to assess:",
        "constraints": "Constraints:",
        "expert_constraint": "You may hold to your view and need not be easily persuaded, but take the other side's "
        "cultural background into account and think carefully before you change your scores. Do not disagree only "
        "for the sake of disagreeing.",
        "judge_constraint": "Do your duty as the judge: decide only on the basis of what the two experts say.",
        "format": "Output one JSON string in the format below, with the result directly and no explanation or other "
        "text:",
        "expert_format": "{{\"specific\": <{score}: the translation's score on the task's specific criterion>, "
        "\"general_1\": <{score}: the English translation's score on the task's first general criterion>, "
        "\"general_2\": <{score}: the English translation's score on the task's second general criterion>, "
        '"reasons": "<why you give these three scores>"}}',
        "judge_format": '{{"agree": "<have the two experts reached the same scores? answer only yes or no; whenever '
        'their scores differ, answer no>", '
        '"reasons": "<why you think agreement has or has not been reached>", '
        "\"specific\": <{score}: weighing both sides, the translation's score on the task's specific criterion>, "
        '"general_1": <{score}: weighing both sides, the score on the task\'s first general criterion>, '
        '"general_2": <{score}: weighing both sides, the score on the task\'s second general criterion>}}',
        "rules": "Points you must observe:",
        "rubric": "The scoring rules follow; use their worked examples as your reference:",
        "direct": "Give the score and the reason for each criterion directly, without step-by-step reasoning.",
        "item_task": "Task: ",
        "item_context": "Context: ",
        "item_source": "Source text: ",
        "item_target": "Target text (the translation to score): ",
        "default_instruction": "Translate the Chinese text into English.",
        "pro": "Affirmative expert: ",
        "con": "Opposing expert: ",
        "last_round": "This is the final round: close the discussion and give your diagnosis.",
    },
}

ReferenceRole = Literal["expert", "judge"]


def reference_item(item: Item, translation: Translation, lang: Lang) -> str:
    """The item as the reference shows it to every role: the task, the source text and the target text
    (plus the context the official instruction carries, when the item has one; no reference translation)."""
    p = REFERENCE_PROMPTS[lang]
    lines = [p["item_task"] + (item.instruction.strip() or p["default_instruction"])]
    if item.context.strip():
        lines.append(p["item_context"] + item.context.strip())
    lines += [p["item_source"] + item.source_zh, p["item_target"] + translation.output]
    return "\n".join(lines)


def reference_prompt(kind: ReferenceRole, item: Item, translation: Translation, lang: Lang) -> str:
    """The first user message of an expert (both experts and the single-agent baseline get the same one) or
    the judge, in the order of ``code/debate_prompt.py``: who you are, the task, the constraint, the answer
    format, the global rules, the rubric with its examples, and no step-by-step reasoning."""
    if kind not in ("expert", "judge"):
        raise ValueError(f"reference_prompt: unknown role {kind!r} (expert, judge)")
    p = REFERENCE_PROMPTS[lang]
    answer = p[f"{kind}_format"].format(score=_SCORE[lang])
    return "\n".join(
        [
            p[f"{kind}_intro"],
            p["task"],
            reference_item(item, translation, lang),
            p["constraints"],
            f"1. {p[f'{kind}_constraint']}",
            p["format"],
            answer,
            "",
            p["rules"],
            global_rules_prompt(lang),
            "",
            p["rubric"],
            rubric_prompt(item.dimension, lang, rules=False),
            "",
            p["direct"],
        ]
    )


# --- the genrep protocol ---------------------------------------------------------------------------------------

GENREP_PROMPTS: dict[str, dict[str, str]] = {
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
    """The genrep protocol's system prompt of an expert (``n`` = 1 or 2), the judge or the single-agent judge."""
    if kind not in ("expert", "judge", "single"):
        raise ValueError(f"system_prompt: unknown role {kind!r} (expert, judge, single)")
    p = GENREP_PROMPTS[lang]
    answer = p["format_judge"] if kind == "judge" else p["format_expert"]
    return f"{p[kind].format(n=n)}\n\n{rubric_prompt(dimension, lang)}\n\n{answer}"


def item_prompt(item: Item, translation: Translation, lang: str) -> str:
    """The item as every role sees it in the genrep protocol: the task, the context, the source and the translation (no reference,
    as in the official AgentEval)."""
    p = GENREP_PROMPTS[lang]
    return p["item"].format(
        instruction=item.instruction.strip() or p["default_instruction"],
        context=item.context.strip() or p["no_context"],
        source=item.source_zh,
        translation=translation.output,
    )
