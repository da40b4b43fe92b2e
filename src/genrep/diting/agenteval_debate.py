"""What each AgentEval role is shown, round by round, and when the debate stops (docs/papers.md s3.4).

The runner (:mod:`genrep.diting.agenteval`) keeps one conversation per role and passes an ``ask``
callable: ``await ask(role, new, schema, round, keep=..., reask=...)`` appends the messages ``new``
to the role's conversation, gets one validated answer, appends the kept assistant message (the raw
reply, or what ``keep`` makes of the answer) and returns ``(answer, raw_reply)``. A role that
cannot answer raises, which ends the item.

``reference`` (:func:`reference_debate`, ``code/Agent-ans.py`` ``debate_execute``):

- round 1: each role starts with its system persona and its first prompt
  (:func:`~genrep.diting.agenteval_prompts.reference_prompt`);
- Expert 1 answers; its reply goes, labelled as the affirmative expert, into Expert 2's and the
  judge's conversations;
- Expert 2 answers; its reply goes, labelled as the opposing expert, into Expert 1's and the
  judge's conversations;
- the judge answers; only its ``reasons`` enter its own conversation, and nobody else sees the
  judge's output. ``agree == "yes"`` ends the debate with the judge's answer;
- from round 2 on nobody gets a new prompt: each role answers its conversation as it stands
  (Expert 1's ends with Expert 2's last reply, Expert 2's with Expert 1's reply of this round, the
  judge's with both);
- after a "no" in the last round (``max_rounds``, 4 in the paper) the judge is told that this is the
  final round and asked once more; that answer is final whatever its ``agree``.

``genrep`` (:func:`genrep_debate`, genrep's earlier variant, not the paper's): the rubric in each
role's system prompt, per-round requests that name the round, Expert 1 shown the judge's reasons
from round 2 on, and the last round announced in the judge's prompt instead of a re-ask.

The single-agent baseline: :func:`reference_single` (``code/single_baseline.py``: the single
persona with Expert 1's first prompt, one answer in Expert 1's format) and :func:`genrep_single`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from pydantic import BaseModel

from genrep.diting.agenteval_answers import (
    ExpertAnswer,
    JudgeAnswer,
    ReferenceExpertAnswer,
    ReferenceJudgeAnswer,
    SingleAnswer,
)
from genrep.diting.agenteval_prompts import (
    GENREP_PROMPTS,
    REFERENCE_PROMPTS,
    item_prompt,
    reference_prompt,
    system_prompt,
)
from genrep.diting.rubric import Lang
from genrep.diting.schema import Item, Translation

M = TypeVar("M", bound=BaseModel)
Keep = Callable[[Any, str], str]  # (answer, raw reply) -> the assistant message the role keeps


class Ask(Protocol):
    def __call__(
        self, role: str, new: list[dict], schema: type[M], rnd: int, *, keep: Keep | None = None, reask: bool = False
    ) -> Awaitable[tuple[M, str]]: ...


@dataclass
class Outcome:
    """How a debate ended: the judge's final answer, the rounds run, whether the last round's re-ask decided it."""

    answer: ReferenceJudgeAnswer | JudgeAnswer
    rounds: int
    reasked: bool = False


def _system(text: str) -> dict:
    return {"role": "system", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def judge_reasons(answer: Any, reply: str) -> str:
    """What the reference judge keeps of its own answer: its reasons only (``Agent-ans.py``)."""
    return str(answer.reasons)


async def reference_debate(ask: Ask, item: Item, translation: Translation, lang: Lang, max_rounds: int) -> Outcome:
    """The official debate protocol; see the module docstring."""
    p = REFERENCE_PROMPTS[lang]
    expert_first = reference_prompt("expert", item, translation, lang)
    pending: dict[str, list[dict]] = {
        "expert1": [_system(p["expert_system"]), _user(expert_first)],
        "expert2": [_system(p["expert_system"]), _user(expert_first)],
        "judge": [_system(p["judge_system"]), _user(reference_prompt("judge", item, translation, lang))],
    }

    def take(role: str) -> list[dict]:
        new, pending[role] = pending[role], []
        return new

    for rnd in range(1, max_rounds + 1):
        _, reply1 = await ask("expert1", take("expert1"), ReferenceExpertAnswer, rnd)
        pending["expert2"].append(_user(p["pro"] + reply1))
        pending["judge"].append(_user(p["pro"] + reply1))
        _, reply2 = await ask("expert2", take("expert2"), ReferenceExpertAnswer, rnd)
        pending["expert1"].append(_user(p["con"] + reply2))
        pending["judge"].append(_user(p["con"] + reply2))
        verdict, _ = await ask("judge", take("judge"), ReferenceJudgeAnswer, rnd, keep=judge_reasons)
        if verdict.agree == "yes":
            return Outcome(verdict, rnd)
    final, _ = await ask(
        "judge", [_user(p["last_round"])], ReferenceJudgeAnswer, max_rounds, keep=judge_reasons, reask=True
    )
    return Outcome(final, max_rounds, reasked=True)


async def reference_single(ask: Ask, item: Item, translation: Translation, lang: Lang) -> ReferenceExpertAnswer:
    """The official single-agent baseline: Expert 1's first prompt under the single persona, one answer."""
    p = REFERENCE_PROMPTS[lang]
    new = [_system(p["single_system"]), _user(reference_prompt("expert", item, translation, lang))]
    answer, _ = await ask("judge", new, ReferenceExpertAnswer, 1)
    return answer


def _show(answer: BaseModel) -> str:
    return json.dumps(answer.model_dump(), ensure_ascii=False)


async def genrep_debate(ask: Ask, item: Item, translation: Translation, lang: Lang, max_rounds: int) -> Outcome:
    """genrep's earlier protocol (not the paper's); see the module docstring."""
    p, dim = GENREP_PROMPTS[lang], item.dimension
    task = item_prompt(item, translation, lang)
    a2: ExpertAnswer | None = None
    verdict: JudgeAnswer | None = None
    for rnd in range(1, max_rounds + 1):
        if rnd == 1:
            new1 = [_system(system_prompt("expert", dim, lang, 1)), _user(f"{task}\n\n{p['e1_first']}")]
        else:
            assert a2 is not None and verdict is not None
            new1 = [_user(p["e1_later"].format(round=rnd, prev=rnd - 1, answer=_show(a2), reasons=verdict.reasons))]
        a1, _ = await ask("expert1", new1, ExpertAnswer, rnd)

        ask2 = p["e2"].format(round=rnd, answer=_show(a1))
        new2 = (
            [_system(system_prompt("expert", dim, lang, 2)), _user(f"{task}\n\n{ask2}")] if rnd == 1 else [_user(ask2)]
        )
        a2, _ = await ask("expert2", new2, ExpertAnswer, rnd)

        last = rnd == max_rounds
        askj = p["judge_round"].format(round=rnd, e1=_show(a1), e2=_show(a2)) + (f"\n{p['final']}" if last else "")
        newj = [_system(system_prompt("judge", dim, lang)), _user(f"{task}\n\n{askj}")] if rnd == 1 else [_user(askj)]
        verdict, _ = await ask("judge", newj, JudgeAnswer, rnd)
        if verdict.agree == "yes" or last:
            return Outcome(verdict, rnd)
    raise AssertionError("unreachable: max_rounds >= 1")


async def genrep_single(ask: Ask, item: Item, translation: Translation, lang: Lang) -> SingleAnswer:
    """genrep's earlier single-agent judge: its own system prompt, the judge's fields without ``agree``."""
    p = GENREP_PROMPTS[lang]
    new = [
        _system(system_prompt("single", item.dimension, lang)),
        _user(f"{item_prompt(item, translation, lang)}\n\n{p['single_ask']}"),
    ]
    answer, _ = await ask("judge", new, SingleAnswer, 1)
    return answer
