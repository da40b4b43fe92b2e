"""AgentEval (docs/papers.md s3.4): two LLM experts and a judge score translations with DITING's rubric.

For one system's translation of one benchmark item, a *round* is

1. Expert 1 scores the translation with the rubric of the item's dimension (:mod:`~genrep.diting.rubric`);
   from round 2 on it also sees Expert 2's previous answer and the judge's reasons;
2. Expert 2 scores it, seeing Expert 1's answer of this round;
3. the judge, who adds no views of its own, reads both answers and returns ``{agree: yes|no,
   reasons, mistranslation, specific, general_1, general_2}``.

The debate stops when the judge says the experts agree, or after ``max_rounds`` (4, as in the
paper); in the last round the judge is told that it must conclude, and its answer is final
whatever ``agree`` says. The judge's scores are final; the global rules that code can check are
then applied (:func:`~genrep.diting.rubric.apply_global_rules`) and every correction is logged. The
baseline (``mode="single"``) is one judge, one call, the same rubric and the judge's schema
without ``agree``.

Each role keeps its own conversation (its system prompt with the rubric and the answer format,
the item, then what it is shown each round), as in the official code, and each role has its own
backend, so experts and judge can run on different servers. Answers are JSON validated by pydantic
(:func:`~genrep.diting.llm.complete_json`: constrained decoding where the server offers it, at
most ``max_repairs`` repairs); a role that still fails marks the item failed with the reason, and
the run goes on.

Outputs of :func:`run_agenteval`, all append logs flushed per item:

    transcripts.jsonl  one line per item: every message sent and every raw reply, per role and round,
                       the judge's answer, the final scores, the corrections and the item's stats
    stats.jsonl        the same without the messages: the per-item sidecar metrics.json is built from
    scores.jsonl       Judgment records (rater "agenteval" or "single-agent", rationale = the judge's
                       reasons); written last, so a line here marks the item done

A re-run skips the (item, system) pairs in ``scores.jsonl`` and retries failed ones; a killed run
loses at most the items in flight, and through the LLM cache their finished calls are not paid for
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema

from genrep.core.config import Count, NonNeg, NonNegInt, Positive
from genrep.core.errors import UserError
from genrep.core.jsonl import repair_tail
from genrep.core.progress import progress_bar
from genrep.core.rundir import RunDir
from genrep.diting.agenteval_prompts import PROMPTS, item_prompt, system_prompt
from genrep.diting.benchmark import load_benchmark
from genrep.diting.llm import Backend, Completion, LLMCache, LLMError, Sampling, UsageMeter, complete_json, make_backend
from genrep.diting.llm.registry import parse_spec
from genrep.diting.llm.usage import parse_prices
from genrep.diting.rubric import CRITERIA, apply_global_rules
from genrep.diting.schema import (
    DIMENSIONS,
    Item,
    Judgment,
    Translation,
    _Record,
    append_record,
    read_log,
)

ROLES = ("expert1", "expert2", "judge")
RATERS = {"multi": "agenteval", "single": "single-agent"}


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
    lang: Literal["en", "zh"] = "en"  # language of the prompts (the rubric in English or Chinese)
    max_rounds: Count = 4
    limit: Optional[Count] = None  # evaluate the first N translations (file order)
    concurrency: Count = 8  # items in flight
    max_tokens: Count = 1024  # per reply
    max_repairs: NonNegInt = 2  # per answer, after the first reply
    json_mode: Literal["json_schema", "json_object", "none"] = "json_schema"
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


# --- answers -------------------------------------------------------------------------------------------------------

# 0, 1 or 2, and a JSON integer (not true, "2" or 2.0); sent as an enum, the numeric-constraint-free form
# every constrained decoder and OpenAI's strict mode accept
Score = Annotated[StrictInt, Field(ge=0, le=2), WithJsonSchema({"type": "integer", "enum": [0, 1, 2]})]


class ExpertAnswer(BaseModel):
    """An expert's scores; ``reasons`` comes first so that the model argues before it scores."""

    reasons: str
    mistranslation: bool
    specific: Score
    general_1: Score
    general_2: Score


class JudgeAnswer(BaseModel):
    """The judge's decision: do the experts agree, why, and the panel's scores."""

    agree: Literal["yes", "no"]
    reasons: str
    mistranslation: bool
    specific: Score
    general_1: Score
    general_2: Score


class SingleAnswer(ExpertAnswer):
    """The single-agent judge's answer: the judge's fields without ``agree``."""


# --- records -------------------------------------------------------------------------------------------------------


class Turn(BaseModel):
    """One role's answer in one round: the messages it was sent, every raw reply, the answer or the error.

    The role's conversation at any request is the concatenation of its earlier turns, each as
    ``messages`` then the replies interleaved with ``repair_prompts``, followed by this turn's
    ``messages`` (see :func:`role_conversation`).
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    role: str
    backend: str
    messages: list[dict]  # added to the role's conversation this turn
    replies: list[str]  # every raw reply: the answer, then one per repair
    repair_prompts: list[str]  # sent after each invalid reply
    answer: Optional[dict] = None
    error: Optional[str] = None
    calls: int = 0
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
    calls: int = 0
    cached_calls: int = 0
    repairs: int = 0
    prompt_tokens: int = 0  # of every call, cached or not: what the item costs
    completion_tokens: int = 0
    seconds: float = 0.0
    per_role: dict[str, dict[str, int]] = Field(default_factory=dict)
    judge: Optional[dict] = None  # the judge's final answer, before the global rules
    scores: Optional[dict[str, int]] = None  # after the global rules
    corrections: list[str] = Field(default_factory=list)


class Transcript(ItemStats):
    """The whole evaluation of one (item, system): :class:`ItemStats` plus every turn; one line of ``transcripts.jsonl``."""

    mode: str
    lang: str
    backends: dict[str, str]
    turns: list[Turn]


def role_conversation(transcript: Transcript, role: str) -> list[dict]:
    """Every message ``role`` was sent and every raw reply it gave, in order (repairs included)."""
    out: list[dict] = []
    for turn in transcript.turns:
        if turn.role != role:
            continue
        out += turn.messages
        for n, reply in enumerate(turn.replies):
            out.append({"role": "assistant", "content": reply})
            if n < len(turn.repair_prompts):
                out.append({"role": "user", "content": turn.repair_prompts[n]})
    return out


def _show(answer: BaseModel) -> str:
    return json.dumps(answer.model_dump(), ensure_ascii=False)


def _system(text: str) -> dict:
    return {"role": "system", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


# --- one item ------------------------------------------------------------------------------------------------------


class _Recorder:
    """``backend`` seen through one turn: keeps every request it was sent and every completion."""

    def __init__(self, backend: Backend):
        self.backend, self.name, self.model = backend, backend.name, backend.model
        self.requests: list[list[dict]] = []
        self.completions: list[Completion] = []

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        self.requests.append(list(messages))
        completion = await self.backend.complete(messages, sampling)
        self.completions.append(completion)
        return completion

    async def aclose(self) -> None:
        pass


class _RoleFailed(Exception):
    pass


@dataclass
class _Role:
    name: str
    backend: Backend
    history: list[dict] = field(default_factory=list)


async def _ask(
    role: _Role, new: list[dict], schema: type[BaseModel], cfg: AgentEvalConfig, rnd: int, turns: list[Turn]
) -> Any:
    """One validated answer from ``role`` to its conversation plus ``new``; the turn is appended to ``turns``."""
    recorder = _Recorder(role.backend)
    sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    start = time.perf_counter()
    answer, error = None, None
    try:
        answer, _ = await complete_json(
            recorder, role.history + new, schema, sampling, cfg.max_repairs, mode=cfg.json_mode
        )
    except LLMError as err:
        error = err.reason
    done = recorder.completions
    turns.append(
        Turn(
            round=rnd,
            role=role.name,
            backend=role.backend.name,
            messages=new,
            replies=[c.text for c in done],
            repair_prompts=[r[-1]["content"] for r in recorder.requests[1:]],
            answer=answer.model_dump() if answer is not None else None,
            error=error,
            calls=len(recorder.requests),
            cached=sum(c.cached for c in done),
            prompt_tokens=sum(c.prompt_tokens for c in done),
            completion_tokens=sum(c.completion_tokens for c in done),
            seconds=round(time.perf_counter() - start, 3),
        )
    )
    if answer is None:
        raise _RoleFailed(f"{role.name} round {rnd}: {error}")
    role.history = recorder.requests[-1] + [{"role": "assistant", "content": done[-1].text}]
    return answer


async def debate(
    item: Item, translation: Translation, backends: Mapping[str, Backend], cfg: AgentEvalConfig, turns: list[Turn]
) -> tuple[JudgeAnswer, int]:
    """AgentEval's rounds for one translation: (the judge's final answer, rounds run). Raises _RoleFailed."""
    p, lang, dim = PROMPTS[cfg.lang], cfg.lang, item.dimension
    task = item_prompt(item, translation, lang)
    e1, e2, judge = (_Role(r, backends[r]) for r in ROLES)
    a2: ExpertAnswer | None = None
    verdict: JudgeAnswer | None = None
    for rnd in range(1, cfg.max_rounds + 1):
        if rnd == 1:
            new1 = [_system(system_prompt("expert", dim, lang, 1)), _user(f"{task}\n\n{p['e1_first']}")]
        else:
            assert a2 is not None and verdict is not None
            new1 = [_user(p["e1_later"].format(round=rnd, prev=rnd - 1, answer=_show(a2), reasons=verdict.reasons))]
        a1 = await _ask(e1, new1, ExpertAnswer, cfg, rnd, turns)

        ask2 = p["e2"].format(round=rnd, answer=_show(a1))
        new2 = (
            [_system(system_prompt("expert", dim, lang, 2)), _user(f"{task}\n\n{ask2}")] if rnd == 1 else [_user(ask2)]
        )
        a2 = await _ask(e2, new2, ExpertAnswer, cfg, rnd, turns)

        last = rnd == cfg.max_rounds
        askj = p["judge_round"].format(round=rnd, e1=_show(a1), e2=_show(a2)) + (f"\n{p['final']}" if last else "")
        newj = [_system(system_prompt("judge", dim, lang)), _user(f"{task}\n\n{askj}")] if rnd == 1 else [_user(askj)]
        verdict = await _ask(judge, newj, JudgeAnswer, cfg, rnd, turns)
        if verdict.agree == "yes" or last:
            return verdict, rnd
    raise AssertionError("unreachable: max_rounds >= 1")


async def single_judge(
    item: Item, translation: Translation, backends: Mapping[str, Backend], cfg: AgentEvalConfig, turns: list[Turn]
) -> SingleAnswer:
    """The single-agent baseline: one call with the same rubric. Raises _RoleFailed."""
    p = PROMPTS[cfg.lang]
    new = [
        _system(system_prompt("single", item.dimension, cfg.lang)),
        _user(f"{item_prompt(item, translation, cfg.lang)}\n\n{p['single_ask']}"),
    ]
    return await _ask(_Role("judge", backends["judge"]), new, SingleAnswer, cfg, 1, turns)


async def evaluate_item(
    item: Item, translation: Translation, backends: Mapping[str, Backend], cfg: AgentEvalConfig
) -> tuple[Transcript, Judgment | None]:
    """Evaluate one translation: its transcript and, unless it failed, its Judgment (global rules applied)."""
    start = time.perf_counter()
    turns: list[Turn] = []
    answer: JudgeAnswer | SingleAnswer | None = None
    rounds, reason = 0, ""
    if item.redacted:
        reason = "the item's source is redacted (official release placeholder): nothing to judge"
    else:
        try:
            if cfg.mode == "multi":
                answer, rounds = await debate(item, translation, backends, cfg, turns)
            else:
                answer, rounds = await single_judge(item, translation, backends, cfg, turns), 1
        except _RoleFailed as err:
            reason = str(err)
            rounds = max((t.round for t in turns), default=0)
    corrections: list[str] = []
    scores, judgment = None, None
    if answer is not None:
        scores, corrections = apply_global_rules(answer.model_dump(), answer.mistranslation)
        judgment = Judgment(
            item_id=item.id,
            system=translation.system,
            rater=RATERS[cfg.mode],
            rationale=answer.reasons,
            **scores,  # type: ignore[arg-type]  # apply_global_rules keeps each in 0-2
        )
    per_role: dict[str, dict[str, int]] = {}
    for t in turns:
        tally = per_role.setdefault(t.role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for key in tally:
            tally[key] += getattr(t, key)
    transcript = Transcript(
        item_id=item.id,
        system=translation.system,
        rater=RATERS[cfg.mode],
        dimension=item.dimension,
        failed=answer is None,
        reason=reason,
        rounds=rounds,
        agreed=(answer.agree == "yes") if isinstance(answer, JudgeAnswer) else None,
        calls=sum(t.calls for t in turns),
        cached_calls=sum(t.cached for t in turns),
        repairs=sum(len(t.repair_prompts) for t in turns),
        prompt_tokens=sum(t.prompt_tokens for t in turns),
        completion_tokens=sum(t.completion_tokens for t in turns),
        seconds=round(time.perf_counter() - start, 3),
        per_role=per_role,
        judge=answer.model_dump() if answer is not None else None,
        scores=scores,
        corrections=corrections,
        mode=cfg.mode,
        lang=cfg.lang,
        backends={role: backends[role].name for role in cfg.role_specs()},
        turns=turns,
    )
    return transcript, judgment


# --- the runner ----------------------------------------------------------------------------------------------------


def check_config(cfg: AgentEvalConfig) -> None:
    """One-line UserErrors for values a run cannot use."""
    if not cfg.translations:
        raise UserError("agenteval: give the translations to evaluate (--translations FILE)")
    for name, allowed in (("mode", RATERS), ("lang", PROMPTS), ("json_mode", ("json_schema", "json_object", "none"))):
        if getattr(cfg, name) not in allowed:
            raise UserError(f"agenteval: {name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in ("max_rounds", "concurrency", "max_tokens"):
        if getattr(cfg, name) < 1:
            raise UserError(f"agenteval: {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_repairs < 0:
        raise UserError(f"agenteval: max_repairs must be >= 0, got {cfg.max_repairs}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"agenteval: limit must be >= 1, got {cfg.limit}")
    for spec in cfg.role_specs().values():
        parse_spec(spec)  # a bad backend spec fails before any work starts
    parse_prices(cfg.prices)


def select_pairs(cfg: AgentEvalConfig) -> tuple[list[tuple[Item, Translation]], int]:
    """The (item, translation) pairs to evaluate, in file order, and how many failed translations were left out."""
    from genrep.diting.translate import read_translations

    path = Path(cfg.translations)
    translations = read_translations(path)
    items = {i.id: i for i in load_benchmark(cfg.bench)}
    usable = [t for t in translations if not t.meta.get("failed")]
    for t in usable:
        if t.item_id not in items:
            raise UserError(
                f"{path}: translation of item '{t.item_id}' (system '{t.system}') is not in benchmark "
                f"'{cfg.bench}' (give the items with --bench)"
            )
    failed = len(translations) - len(usable)
    return [(items[t.item_id], t) for t in usable[: cfg.limit]], failed


def _make_backends(cfg: AgentEvalConfig, cache: LLMCache | None) -> dict[str, Backend]:
    """One backend per distinct spec, shared by the roles that name it; ``cache`` None: no cache."""
    made: dict[str, Backend] = {}
    for spec in dict.fromkeys(cfg.role_specs().values()):
        made[spec] = make_backend(
            spec,
            cache=cache if cache is not None else False,
            concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )
    return {role: made[spec] for role, spec in cfg.role_specs().items()}


@dataclass
class _Logs:
    transcripts: Path
    stats: Path
    scores: Path

    def write(self, transcript: Transcript, judgment: Judgment | None) -> None:
        """Transcript, then stats, then the score: the score line commits the item."""
        append_record(self.transcripts, transcript)
        append_record(self.stats, ItemStats(**{k: getattr(transcript, k) for k in ItemStats.model_fields}))
        if judgment is not None:
            append_record(self.scores, judgment)


def run_agenteval(cfg: AgentEvalConfig, out: str | Path, *, backends: Mapping[str, Backend] | None = None) -> dict:
    """Evaluate the translations of ``cfg`` into ``out`` (resumable); returns what ``metrics.json`` holds.

    ``backends`` (by role: expert1, expert2, judge) replaces the backends ``cfg`` names, e.g. to
    evaluate with in-process fakes; the caller keeps ownership of them.
    """
    check_config(cfg)
    pairs, skipped = select_pairs(cfg)
    run = RunDir(out)
    run.write_config(cfg)
    logs = _Logs(run / "transcripts.jsonl", run / "stats.jsonl", run / "scores.jsonl")
    repair_tail(logs.transcripts)  # a line torn by a crash: the item is redone
    repair_tail(logs.stats)
    rater = RATERS[cfg.mode]
    done = {(j.item_id, j.system) for j in read_log(logs.scores, Judgment) if j.rater == rater}
    todo = [(i, t) for i, t in pairs if (i.id, t.system) not in done]

    meter = UsageMeter(parse_prices(cfg.prices))
    cache = LLMCache() if cfg.cache and backends is None else None
    raw = dict(backends) if backends is not None else _make_backends(cfg, cache)
    wrapped = {id(b): meter.wrap(b) for b in raw.values()}
    metered = {role: wrapped[id(b)] for role, b in raw.items()}
    log = run.logger("genrep.diting.agenteval")
    start = time.perf_counter()
    try:
        with progress_bar(len(todo), f"agenteval ({cfg.mode})") as bar:
            asyncio.run(_evaluate_all(todo, metered, cfg, logs, log, bar, own=backends is None))
    finally:
        _close_log(log, run / "log.txt")
        if cache is not None:
            cache.close()
    metrics = summarize(cfg, pairs, logs, skipped)
    metrics["this_run"] = {
        "evaluated": len(todo),
        "already_done": len(pairs) - len(todo),
        "seconds": round(time.perf_counter() - start, 2),
    }
    metrics["usage"] = meter.summary()
    run.write_metrics(metrics)
    return metrics


async def _evaluate_all(
    todo: list[tuple[Item, Translation]],
    backends: dict[str, Backend],
    cfg: AgentEvalConfig,
    logs: _Logs,
    log: logging.Logger,
    bar: Any,
    own: bool,
) -> None:
    sem = asyncio.Semaphore(cfg.concurrency)
    lock = asyncio.Lock()
    failed = 0

    async def one(item: Item, translation: Translation) -> None:
        nonlocal failed
        async with sem:
            transcript, judgment = await evaluate_item(item, translation, backends, cfg)
        async with lock:
            logs.write(transcript, judgment)
        where = f"{item.id} / {translation.system}"
        for line in transcript.corrections:
            log.info("%s: global rule applied: %s", where, line)
        if transcript.failed:
            failed += 1
            log.info("%s: failed: %s", where, transcript.reason)
            bar.status(f"{failed} failed")
        bar.advance()

    try:
        await asyncio.gather(*(one(i, t) for i, t in todo))
    finally:
        if own:
            for backend in {id(b): b for b in backends.values()}.values():
                await backend.aclose()


def _close_log(log: logging.Logger, path: Path) -> None:
    target = str(path.resolve())
    for handler in list(log.handlers):
        if getattr(handler, "baseFilename", None) == target:
            log.removeHandler(handler)
            handler.close()


# --- metrics -------------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return round(mean(values), 4) if values else None


def _score_summary(judgments: list[Judgment]) -> dict:
    return {
        "n": len(judgments),
        "mean": _mean([j.total for j in judgments]),
        **{key: _mean([getattr(j, key) for j in judgments]) for key in CRITERIA},
    }


def summarize(cfg: AgentEvalConfig, pairs: list[tuple[Item, Translation]], logs: _Logs, skipped: int) -> dict:
    """metrics.json from the logs: scores, failures, rounds, agreement and cost per item, over the selected pairs."""
    rater = RATERS[cfg.mode]
    wanted = {(i.id, t.system): i.dimension for i, t in pairs}
    stats: dict[tuple[str, str], ItemStats] = {}
    for s in read_log(logs.stats, ItemStats):
        if s.rater == rater and (s.item_id, s.system) in wanted:
            stats[(s.item_id, s.system)] = s  # the latest attempt
    judged = {
        (j.item_id, j.system): j
        for j in read_log(logs.scores, Judgment)
        if j.rater == rater and (j.item_id, j.system) in wanted
    }
    final = [stats[k] for k in wanted if k in stats]
    failed = [s for s in final if s.failed and (s.item_id, s.system) not in judged]
    scored = [s for s in final if (s.item_id, s.system) in judged]
    per_dim = {d: _score_summary([j for k, j in judged.items() if wanted[k] == d]) for d in DIMENSIONS}
    rounds = Counter(s.rounds for s in scored)
    return {
        "translations": str(cfg.translations),
        "bench": cfg.bench,
        "mode": cfg.mode,
        "rater": rater,
        "lang": cfg.lang,
        "backends": cfg.role_specs(),
        "max_rounds": cfg.max_rounds if cfg.mode == "multi" else 1,
        "items": len(wanted),
        "scored": len(judged),
        "failed": len(failed),
        "not_evaluated": len(wanted) - len(final),
        "skipped_failed_translations": skipped,
        "failure_reasons": dict(Counter(s.reason for s in failed).most_common()),
        "scores": {
            "overall": _score_summary(list(judged.values())),
            "per_dimension": {d: v for d, v in per_dim.items() if v["n"]},
        },
        "rounds": {"mean": _mean([s.rounds for s in scored]), "histogram": {str(k): rounds[k] for k in sorted(rounds)}},
        "agreement_round_1": _mean([float(s.rounds == 1 and bool(s.agreed)) for s in scored])
        if cfg.mode == "multi"
        else None,
        "concluded_without_agreement": _mean([float(s.agreed is False) for s in scored])
        if cfg.mode == "multi"
        else None,
        "corrections": {
            "items": sum(bool(s.corrections) for s in scored),
            "total": sum(len(s.corrections) for s in scored),
        },
        "per_item": {
            key: _mean([getattr(s, key) for s in final])
            for key in ("calls", "cached_calls", "repairs", "prompt_tokens", "completion_tokens", "seconds")
        },
        "per_item_by_role": {
            role: {
                key: _mean([s.per_role.get(role, {}).get(key, 0) for s in final])
                for key in ("calls", "prompt_tokens", "completion_tokens")
            }
            for role in cfg.role_specs()
        },
        "definitions": {
            "scores": "mean of the final (judge's, global rules applied) 0-6 totals and of each 0-2 criterion",
            "per_item": "means over evaluated items (scored or failed, latest attempt); tokens count every call "
            "of the item, cached or not; seconds are wall time of the attempt",
            "agreement_round_1": "share of scored items whose judge said agree=yes in round 1",
            "concluded_without_agreement": "share of scored items where the judge concluded in the last round "
            "with agree=no",
            "usage": "what this run spent (cache hits count as calls, not tokens)",
        },
    }
