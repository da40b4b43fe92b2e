"""The JSON answers of AgentEval's roles (docs/papers.md s3.4), one set per protocol.

Pydantic field order is the order the answer is asked for (the prompt's format line and the JSON
schema sent to the server, which constrained decoders follow key by key):

- ``reference`` (the official code, ``code/debate_prompt.py`` ``response_format``): an expert gives
  the three scores first and then its reasons (:class:`ReferenceExpertAnswer`); the judge says
  whether the experts agree, why, and then the scores (:class:`ReferenceJudgeAnswer`); the
  single-agent baseline answers with Expert 1's format. There is no mistranslation flag.
- ``genrep`` (genrep's earlier variant, not the paper's): reasons first, then a
  ``mistranslation`` flag that makes the mistranslation rule checkable in code, then the scores.

Key names are genrep's (``specific``, ``general_1``, ``general_2``, ``reasons``, ``agree``) in
both protocols; the official code calls them ``sp``, ``g_1``, ``g_2``, ``thoughts`` /
``judge_reasons`` and ``judge`` (the mapping table in docs/diting.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, WithJsonSchema

# 0, 1 or 2, and a JSON integer (not true, "2" or 2.0); sent as an enum, the numeric-constraint-free form
# every constrained decoder and OpenAI's strict mode accept
Score = Annotated[StrictInt, Field(ge=0, le=2), WithJsonSchema({"type": "integer", "enum": [0, 1, 2]})]


class ReferenceExpertAnswer(BaseModel):
    """An expert's answer in the reference protocol: the scores, then why (also the single-agent answer)."""

    specific: Score
    general_1: Score
    general_2: Score
    reasons: str


class ReferenceJudgeAnswer(BaseModel):
    """The judge's answer in the reference protocol: agreement, its reasons, then the panel's scores."""

    agree: Literal["yes", "no"]
    reasons: str
    specific: Score
    general_1: Score
    general_2: Score


class ExpertAnswer(BaseModel):
    """An expert's answer in the genrep protocol; ``reasons`` comes first so that the model argues before it scores."""

    reasons: str
    mistranslation: bool
    specific: Score
    general_1: Score
    general_2: Score


class JudgeAnswer(BaseModel):
    """The judge's answer in the genrep protocol: do the experts agree, why, and the panel's scores."""

    agree: Literal["yes", "no"]
    reasons: str
    mistranslation: bool
    specific: Score
    general_1: Score
    general_2: Score


class SingleAnswer(ExpertAnswer):
    """The single-agent judge's answer in the genrep protocol: the judge's fields without ``agree``."""


AnyAnswer = ReferenceExpertAnswer | ReferenceJudgeAnswer | ExpertAnswer | JudgeAnswer
