"""AgentEval's run settings (``genrep diting agenteval``) and their checks.

:class:`AgentEvalConfig` names the backends of the three roles, the mode (debate or single
agent), the protocol (``reference``, the official code's, or ``genrep``), the prompt language and
the LLM-layer limits; :func:`check_config` turns every value a run cannot use into a one-line
:class:`~genrep.core.errors.UserError` before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from genrep.core.config import Count, NonNeg, NonNegInt, Positive
from genrep.core.errors import UserError
from genrep.diting.agenteval_prompts import REFERENCE_PROMPTS
from genrep.diting.llm.openai_client import STRUCTURED_DIALECTS
from genrep.diting.llm.registry import parse_spec
from genrep.diting.llm.usage import parse_prices

ROLES = ("expert1", "expert2", "judge")
RATERS = {"multi": "agenteval", "single": "single-agent"}
PROTOCOLS = ("reference", "genrep")


@dataclass
class AgentEvalConfig:
    """``genrep diting agenteval``."""

    translations: str = ""  # translations.jsonl / .csv (e.g. from genrep diting translate)
    bench: str = "starter"  # the items they translate: a bundled benchmark name or an items file
    backend: str = "local:smollm2-135m"  # every role's backend unless overridden below
    expert1: str = ""
    expert2: str = ""
    judge: str = ""  # also the single-agent judge
    mode: Literal["multi", "single"] = "multi"
    protocol: Literal["reference", "genrep"] = "reference"  # reference: the official code's; genrep: not the paper's
    lang: Literal["zh", "en"] = "zh"  # language of the prompts and the rubric (the reference's are Chinese)
    max_rounds: Count = 4
    enforce_rules: bool = False  # apply the mechanical global rules to the judge's scores in code (logged)
    failed_as_zero: Optional[bool] = None  # record a failed item as 0/0/0 (failed: true); None: single yes, multi no
    limit: Optional[Count] = None  # evaluate the first N translations (file order)
    concurrency: Count = 8  # items in flight
    max_tokens: Count = 1024  # per reply
    max_tokens_cap: Optional[Count] = None  # a reply cut at max_tokens is retried with up to this budget
    length_retries: NonNegInt = 1  # such retries per answer (only when max_tokens_cap > max_tokens)
    max_repairs: NonNegInt = 2  # per answer, after the first reply
    local_string_tokens: Optional[Count] = None  # local backends: cap on one free-text string (None: 160)
    json_mode: Literal["json_schema", "json_object", "none"] = "json_schema"
    structured: str = ""  # the backends' structured-output dialect ("" = each backend kind's own)
    reasoning: Optional[bool] = None  # reasoning models (no sampling fields); None = from the model name
    temperature: NonNeg = 0.0
    seed: int = 0
    timeout_s: Positive = 300.0
    max_retries: NonNegInt = 4
    cache: bool = True
    prices: dict[str, list[float]] = field(default_factory=dict)  # model -> [USD per 1M prompt, per 1M completion]

    def role_specs(self) -> dict[str, str]:
        """The backend spec of each role this mode uses."""
        roles = ROLES if self.mode == "multi" else ("judge",)
        return {role: getattr(self, role) or self.backend for role in roles}

    def zero_failures(self) -> bool:
        """Whether a failed item is recorded as 0/0/0 (the reference's single-agent handling)."""
        return self.mode == "single" if self.failed_as_zero is None else self.failed_as_zero


def check_config(cfg: AgentEvalConfig) -> None:
    """One-line UserErrors for values a run cannot use."""
    if not cfg.translations:
        raise UserError("agenteval: give the translations to evaluate (--translations FILE)")
    closed = (
        ("mode", tuple(RATERS)),
        ("protocol", PROTOCOLS),
        ("lang", tuple(REFERENCE_PROMPTS)),
        ("json_mode", ("json_schema", "json_object", "none")),
        ("structured", ("", *STRUCTURED_DIALECTS)),
    )
    for name, allowed in closed:
        if getattr(cfg, name) not in allowed:
            raise UserError(f"agenteval: {name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in ("max_rounds", "concurrency", "max_tokens"):
        if getattr(cfg, name) < 1:
            raise UserError(f"agenteval: {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_repairs < 0:
        raise UserError(f"agenteval: max_repairs must be >= 0, got {cfg.max_repairs}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"agenteval: limit must be >= 1, got {cfg.limit}")
    if cfg.max_tokens_cap is not None and cfg.max_tokens_cap < cfg.max_tokens:
        raise UserError(f"agenteval: max_tokens_cap ({cfg.max_tokens_cap}) must be >= max_tokens ({cfg.max_tokens})")
    for spec in cfg.role_specs().values():
        parse_spec(spec)  # a bad backend spec fails before any work starts
    parse_prices(cfg.prices)
