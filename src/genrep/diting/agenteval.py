"""AgentEval (docs/papers.md s3.4): two LLM experts and a judge score translations with DITING's rubric.

For one system's translation of one benchmark item the panel debates in rounds (Expert 1, then
Expert 2, then the judge) until the judge says the experts agree, or for at most ``max_rounds``
(4, as in the paper). What each role is shown and when the debate stops is the *protocol*
(:mod:`~genrep.diting.agenteval_debate`): ``reference`` (default) is the official code's
(``code/Agent-ans.py``; the judge's output stays in the judge's own conversation, the last round
re-asks the judge after a "no"), ``genrep`` genrep's earlier variant. The judge's final scores
are recorded as given; enforcing the global rules in code (``enforce_rules``) is an option, off
by default, and every correction it makes is logged. The single-agent baseline
(``mode="single"``) answers once with Expert 1's prompt; an item whose answer cannot be had is,
as in ``code/single_baseline.py``, recorded as 0/0/0 with ``failed: true`` (``failed_as_zero``).

Each role keeps its own conversation and has its own backend, so experts and judge can run on
different servers. Answers are JSON validated by pydantic
(:func:`~genrep.diting.llm.complete_json`: constrained decoding where the server offers it, an
answer cut by the token limit never accepted, at most ``max_repairs`` repairs). Repairs are a side
exchange: only the accepted reply enters the role's conversation, so later rounds see exactly
what the protocol shows. A role that still fails ends the item with the reason; the run goes on.

Outputs of :func:`run_agenteval`, all append logs flushed per item:

    transcripts.jsonl  one line per item: per role and round the messages added, every raw reply and
                       reasoning text, the repair prompts, the answer or the error, what the role kept;
                       the judge's answer, the final scores, the corrections and the item's stats
    stats.jsonl        the same without the messages: the per-item sidecar metrics.json is built from
    scores.jsonl       Judgment records (rater "agenteval" or "single-agent", rationale = the judge's
                       reasons); written last, so a line here marks the item done

A re-run skips the (item, system) pairs in ``scores.jsonl`` (a recorded 0/0/0 failure excepted: it
is dropped and the item retried) and retries failed ones; a killed run loses at most the items in
flight, and through the LLM cache their finished calls are not paid for again.

The parts: :mod:`~genrep.diting.agenteval_config` (the settings and their checks),
:mod:`~genrep.diting.agenteval_prompts` (the text), :mod:`~genrep.diting.agenteval_answers` (the
JSON answers), :mod:`~genrep.diting.agenteval_debate` (who sees what, round by round),
:mod:`~genrep.diting.agenteval_records` (turns and transcripts),
:mod:`~genrep.diting.agenteval_metrics` (``metrics.json``); this module runs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel

from genrep.core.errors import UserError
from genrep.core.jsonl import repair_tail, truncate_jsonl
from genrep.core.progress import progress_bar
from genrep.core.rundir import RunDir
from genrep.diting.agenteval_answers import (
    ExpertAnswer,
    JudgeAnswer,
    ReferenceExpertAnswer,
    ReferenceJudgeAnswer,
    SingleAnswer,
)
from genrep.diting.agenteval_config import PROTOCOLS, RATERS, ROLES, AgentEvalConfig, check_config
from genrep.diting.agenteval_debate import (
    Keep,
    Outcome,
    genrep_debate,
    genrep_single,
    reference_debate,
    reference_single,
)
from genrep.diting.agenteval_metrics import summarize
from genrep.diting.agenteval_records import ItemStats, Transcript, Turn, role_conversation
from genrep.diting.benchmark import load_benchmark
from genrep.diting.llm import (
    Backend,
    Completion,
    LLMCache,
    LLMError,
    Sampling,
    UsageMeter,
    complete_json,
    make_backend,
)
from genrep.diting.llm.usage import parse_prices
from genrep.diting.rubric import CRITERIA, apply_global_rules
from genrep.diting.schema import Item, Judgment, Translation, append_record, read_log

__all__ = [
    "PROTOCOLS",
    "RATERS",
    "ROLES",
    "AgentEvalConfig",
    "check_config",
    "evaluate_item",
    "summarize",
    "ExpertAnswer",
    "ItemStats",
    "JudgeAnswer",
    "ReferenceExpertAnswer",
    "ReferenceJudgeAnswer",
    "SingleAnswer",
    "Transcript",
    "Turn",
    "role_conversation",
    "run_agenteval",
]


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


class _Panel:
    """The roles' conversations for one item, and the ``ask`` the protocols of agenteval_debate call."""

    def __init__(self, backends: Mapping[str, Backend], cfg: AgentEvalConfig):
        self.backends, self.cfg = backends, cfg
        self.history: dict[str, list[dict]] = {role: [] for role in ROLES}
        self.turns: list[Turn] = []

    async def ask(
        self, role: str, new: list[dict], schema: type[Any], rnd: int, *, keep: Keep | None = None, reask: bool = False
    ) -> tuple[Any, str]:
        cfg, backend = self.cfg, self.backends[role]
        recorder = _Recorder(backend)
        sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
        start = time.perf_counter()
        answer, error, failed_request_attempts = None, None, 0
        try:
            answer, _ = await complete_json(
                recorder,
                self.history[role] + new,
                schema,
                sampling,
                cfg.max_repairs,
                mode=cfg.json_mode,
                length_retries=cfg.length_retries,
                max_tokens_cap=cfg.max_tokens_cap,
            )
        except LLMError as err:
            error = err.reason
            if len(recorder.requests) > len(recorder.completions):  # the backend itself failed on the last request
                failed_request_attempts = err.attempts
        done, requests = recorder.completions, recorder.requests
        reply = done[-1].text if answer is not None else ""
        kept = (keep(answer, reply) if keep is not None else reply) if answer is not None else None
        self.turns.append(
            Turn(
                round=rnd,
                role=role,
                backend=backend.name,
                messages=new,
                replies=[c.text for c in done],
                # a repair request is longer than the one before (a retry of a cut reply is the same request)
                repair_prompts=[r[-1]["content"] for q, r in zip(requests, requests[1:]) if len(r) > len(q)],
                finish_reasons=[c.finish_reason for c in done],
                reasoning=[c.reasoning_content for c in done],
                answer=answer.model_dump() if answer is not None else None,
                error=error,
                kept=kept,
                reask=reask,
                calls=len(requests),
                attempts=sum(c.attempts for c in done) + failed_request_attempts,
                cached=sum(c.cached for c in done),
                prompt_tokens=sum(c.prompt_tokens for c in done),
                completion_tokens=sum(c.completion_tokens for c in done),
                seconds=round(time.perf_counter() - start, 3),
            )
        )
        if answer is None:
            raise _RoleFailed(f"{role} round {rnd}: {error}")
        assert kept is not None
        self.history[role] += [*new, {"role": "assistant", "content": kept}]
        return answer, reply


async def _judge_item(panel: _Panel, item: Item, translation: Translation) -> tuple[BaseModel, int, bool]:
    """(the final answer, rounds run, whether the last-round re-ask decided) under ``cfg``'s mode and protocol."""
    cfg = panel.cfg
    if cfg.mode == "multi":
        debate = reference_debate if cfg.protocol == "reference" else genrep_debate
        outcome: Outcome = await debate(panel.ask, item, translation, cfg.lang, cfg.max_rounds)
        return outcome.answer, outcome.rounds, outcome.reasked
    single = reference_single if cfg.protocol == "reference" else genrep_single
    return await single(panel.ask, item, translation, cfg.lang), 1, False


async def evaluate_item(
    item: Item, translation: Translation, backends: Mapping[str, Backend], cfg: AgentEvalConfig
) -> tuple[Transcript, Judgment | None]:
    """Evaluate one translation: its transcript and its Judgment (None when it failed and is not recorded as 0/0/0)."""
    start = time.perf_counter()
    panel = _Panel(backends, cfg)
    answer: BaseModel | None = None
    rounds, reason, reasked = 0, "", False
    if item.redacted:
        reason = "the item's source is redacted (official release placeholder): nothing to judge"
    else:
        try:
            answer, rounds, reasked = await _judge_item(panel, item, translation)
        except _RoleFailed as err:
            reason = str(err)
            rounds = max((t.round for t in panel.turns), default=0)
    turns = panel.turns
    corrections: list[str] = []
    scores: dict[str, int] | None = None
    rationale, failed_zero = "", False
    if answer is not None:
        scores = {key: getattr(answer, key) for key in CRITERIA}
        if cfg.enforce_rules:
            scores, corrections = apply_global_rules(scores, bool(getattr(answer, "mistranslation", False)))
        rationale = str(getattr(answer, "reasons"))
    elif cfg.zero_failures() and not item.redacted:
        scores, rationale, failed_zero = dict.fromkeys(CRITERIA, 0), f"failed: {reason}", True
    judgment = None
    if scores is not None:
        judgment = Judgment.model_validate(
            {
                "item_id": item.id,
                "system": translation.system,
                "rater": RATERS[cfg.mode],
                "rationale": rationale,
                "failed": failed_zero,
                **scores,
            }
        )
    per_role: dict[str, dict[str, int]] = {}
    for t in turns:
        tally = per_role.setdefault(t.role, {"calls": 0, "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for key in tally:
            tally[key] += getattr(t, key)
    agree = getattr(answer, "agree", None) if cfg.mode == "multi" else None
    transcript = Transcript(
        item_id=item.id,
        system=translation.system,
        rater=RATERS[cfg.mode],
        dimension=item.dimension,
        failed=answer is None,
        reason=reason,
        rounds=rounds,
        agreed=None if agree is None else agree == "yes",
        reasked=reasked,
        calls=sum(t.calls for t in turns),
        attempts=sum(t.attempts for t in turns),
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
        protocol=cfg.protocol,
        lang=cfg.lang,
        backends={role: backends[role].name for role in cfg.role_specs()},
        turns=turns,
    )
    return transcript, judgment


# --- the runner ----------------------------------------------------------------------------------------------------


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
            structured=cfg.structured or None,
            reasoning=cfg.reasoning,
            local_string_tokens=cfg.local_string_tokens,
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


def _drop_failed_judgments(path: Path, rater: str) -> None:
    """Rewrite ``scores.jsonl`` (atomically) without ``rater``'s 0/0/0 failure records, if it has any."""
    if path.exists() and any(j.failed and j.rater == rater for j in read_log(path, Judgment)):
        truncate_jsonl(path, lambda rec: not (rec.get("failed") and rec.get("rater") == rater))


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
    _drop_failed_judgments(logs.scores, rater)  # a failure recorded as 0/0/0 is retried, not kept twice
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
    metrics = summarize(cfg, pairs, logs.stats, logs.scores, skipped)
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
