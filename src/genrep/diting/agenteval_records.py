"""AgentEval's records: one role's turn, one item's stats and its whole transcript.

``transcripts.jsonl`` holds one :class:`Transcript` per evaluated (item, system) attempt,
``stats.jsonl`` the same as :class:`ItemStats` without the turns; :func:`role_conversation`
rebuilds the conversation a role carried from turn to turn.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from genrep.diting.schema import _Record


class Turn(BaseModel):
    """One role's answer in one round: the messages added, every raw reply, the answer or the error.

    The role's conversation before a turn is the concatenation of its earlier turns, each as
    ``messages`` then the assistant message ``kept`` (:func:`role_conversation`). The turn's first
    request is that conversation plus ``messages``; each repair request adds an invalid reply and
    its repair prompt, which the role does not keep; a reply cut by the token limit
    (``finish_reasons``) is asked again unchanged (with a bigger budget) or fails the turn.
    ``reask`` marks the reference's last-round second question to the judge.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    role: str
    backend: str
    messages: list[dict]  # added to the role's conversation this turn
    replies: list[str]  # every raw reply: the answer, then one per repair
    repair_prompts: list[str]  # sent after each invalid reply
    finish_reasons: list[str] = Field(default_factory=list)  # per reply; "length": cut by max_tokens, never accepted
    reasoning: list[str] = Field(default_factory=list)  # a reasoning model's thinking, per reply ("" if none)
    answer: Optional[dict] = None
    error: Optional[str] = None
    kept: Optional[str] = None  # the assistant message added to the role's conversation (None: failed)
    reask: bool = False
    calls: int = 0
    attempts: int = 0  # HTTP requests behind the calls (retries included; 0 for cache hits)
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class ItemStats(_Record):
    """What evaluating one (item, system) took and gave; one line of ``stats.jsonl``."""

    item_id: str
    system: str
    rater: str
    dimension: str
    failed: bool = False
    reason: str = ""
    rounds: int = 0
    agreed: Optional[bool] = None  # the judge's last "agree" (multi-agent only)
    reasked: bool = False  # the reference's last-round re-ask decided (multi-agent only)
    calls: int = 0
    attempts: int = 0
    cached_calls: int = 0
    repairs: int = 0
    prompt_tokens: int = 0  # of every call, cached or not: what the item costs
    completion_tokens: int = 0
    seconds: float = 0.0
    per_role: dict[str, dict[str, int]] = Field(default_factory=dict)
    judge: Optional[dict] = None  # the judge's final answer, as given
    scores: Optional[dict[str, int]] = (
        None  # recorded: the judge's, after the global rules if enforced, 0/0/0 if failed
    )
    corrections: list[str] = Field(default_factory=list)  # one line per score the enforced rules changed


class Transcript(ItemStats):
    """The whole evaluation of one (item, system): :class:`ItemStats` plus every turn; one line of ``transcripts.jsonl``."""

    mode: str
    protocol: str = "genrep"  # transcripts written before the reference protocol existed
    lang: str
    backends: dict[str, str]
    turns: list[Turn]


def role_conversation(transcript: Transcript, role: str) -> list[dict]:
    """``role``'s conversation as it carried it from turn to turn: each turn's messages, then what it kept.

    Repair exchanges are not part of it (see :class:`Turn`); a failed turn contributes its messages only.
    """
    out: list[dict] = []
    for turn in transcript.turns:
        if turn.role != role:
            continue
        out += turn.messages
        if turn.kept is not None:
            out.append({"role": "assistant", "content": turn.kept})
    return out
