"""AgentEval's ``metrics.json``: scores, failures, rounds, agreement and cost per item, from the run's logs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import mean

from genrep.diting.agenteval_config import RATERS, AgentEvalConfig
from genrep.diting.agenteval_records import ItemStats
from genrep.diting.rubric import CRITERIA
from genrep.diting.schema import DIMENSIONS, Item, Judgment, Translation, read_log


def _mean(values: list[float]) -> float | None:
    return round(mean(values), 4) if values else None


def _score_summary(judgments: list[Judgment]) -> dict:
    return {
        "n": len(judgments),
        "mean": _mean([j.total for j in judgments]),
        **{key: _mean([getattr(j, key) for j in judgments]) for key in CRITERIA},
    }


def summarize(
    cfg: AgentEvalConfig, pairs: list[tuple[Item, Translation]], stats_log: Path, scores_log: Path, skipped: int
) -> dict:
    """metrics.json from the logs: scores, failures, rounds, agreement and cost per item, over the selected pairs."""
    rater = RATERS[cfg.mode]
    wanted = {(i.id, t.system): i.dimension for i, t in pairs}
    stats: dict[tuple[str, str], ItemStats] = {}
    for s in read_log(stats_log, ItemStats):
        if s.rater == rater and (s.item_id, s.system) in wanted:
            stats[(s.item_id, s.system)] = s  # the latest attempt
    judged = {
        (j.item_id, j.system): j
        for j in read_log(scores_log, Judgment)
        if j.rater == rater and (j.item_id, j.system) in wanted
    }
    final = [stats[k] for k in wanted if k in stats]
    failed = [s for s in final if s.failed]
    scored = [s for s in final if (s.item_id, s.system) in judged and not judged[(s.item_id, s.system)].failed]
    per_dim = {d: _score_summary([j for k, j in judged.items() if wanted[k] == d]) for d in DIMENSIONS}
    rounds = Counter(s.rounds for s in scored)
    multi = cfg.mode == "multi"
    return {
        "translations": str(cfg.translations),
        "bench": cfg.bench,
        "mode": cfg.mode,
        "protocol": cfg.protocol,
        "rater": rater,
        "lang": cfg.lang,
        "backends": cfg.role_specs(),
        "max_rounds": cfg.max_rounds if multi else 1,
        "enforce_rules": cfg.enforce_rules,
        "failed_as_zero": cfg.zero_failures(),
        "items": len(wanted),
        "scored": len(scored),
        "failed": len(failed),
        "failed_recorded_as_zero": sum(1 for j in judged.values() if j.failed),
        "not_evaluated": len(wanted) - len(final),
        "skipped_failed_translations": skipped,
        "failure_reasons": dict(Counter(s.reason for s in failed).most_common()),
        "scores": {
            "overall": _score_summary(list(judged.values())),
            "per_dimension": {d: v for d, v in per_dim.items() if v["n"]},
            "overall_without_failed": _score_summary([j for j in judged.values() if not j.failed]),
        },
        "rounds": {"mean": _mean([s.rounds for s in scored]), "histogram": {str(k): rounds[k] for k in sorted(rounds)}},
        "agreement_round_1": _mean([float(s.rounds == 1 and bool(s.agreed)) for s in scored]) if multi else None,
        "concluded_without_agreement": _mean([float(s.agreed is False) for s in scored]) if multi else None,
        "decided_by_last_round_reask": _mean([float(s.reasked) for s in scored]) if multi else None,
        "corrections": {
            "items": sum(bool(s.corrections) for s in scored),
            "total": sum(len(s.corrections) for s in scored),
        },
        "per_item": {
            key: _mean([getattr(s, key) for s in final])
            for key in ("calls", "attempts", "cached_calls", "repairs", "prompt_tokens", "completion_tokens", "seconds")
        },
        "per_item_by_role": {
            role: {
                key: _mean([s.per_role.get(role, {}).get(key, 0) for s in final])
                for key in ("calls", "attempts", "prompt_tokens", "completion_tokens")
            }
            for role in cfg.role_specs()
        },
        "definitions": {
            "scores": "mean of the recorded 0-6 totals and of each 0-2 criterion: the judge's final scores as given "
            "(after the global rules when enforce_rules), failures recorded as 0/0/0 included when failed_as_zero; "
            "overall_without_failed leaves those out",
            "scored": "items with a judge's answer (failures recorded as 0/0/0 not counted)",
            "per_item": "means over evaluated items (scored or failed, latest attempt); tokens count every call "
            "of the item, cached or not; seconds are wall time of the attempt",
            "agreement_round_1": "share of scored items whose judge said agree=yes in round 1",
            "concluded_without_agreement": "share of scored items where the judge's final answer says agree=no "
            "(the last round's conclusion)",
            "decided_by_last_round_reask": "share of scored items decided by the reference's second question to "
            "the judge after a 'no' in the last round",
            "usage": "what this run spent (cache hits count as calls, not tokens)",
        },
    }
