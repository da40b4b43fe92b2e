"""The official DITING release format: a Label Studio export (``data/data-sample.json``).

Each task holds ``data`` = {model, instruction, model_output, ground_truth[, reasoning_path]} and
one or more ``annotations``, each a list of choices (``0分`` / ``1分`` / ``2分``) for three criteria:
``term_appropriateness`` (the dimension-specific criterion), ``localization_strategy`` and
``fluency`` (the two general criteria). Tasks sharing a source (and context) are one benchmark
item translated by several systems; the same source may come with slightly different instruction
wordings, of which the first is kept.

The public sample redacts the Chinese source: the instruction ends with a placeholder such as
``<novel><chapter><sentence N>``. Such items keep the placeholder as ``source_zh`` (and as
``context`` for the context placeholder) and are flagged ``redacted``; only reference-based
metrics and the human judgments apply to them. The dimension is inferred from the instruction's
wording (the official instruction templates name the phenomenon). Raters are anonymous in the
release; ``rater`` is the annotation's position within its task (``r1``, ``r2``), which is *not*
a stable person across tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from genrep.core.errors import UserError
from genrep.core.files import _printable, read_json
from genrep.diting.schema import Item, Judgment, Translation, parse_record

OFFICIAL_SAMPLE = Path(__file__).parent / "data" / "official_sample.json"  # the public sample, shipped (MIT)
CRITERIA = {"term_appropriateness": "specific", "localization_strategy": "general_1", "fluency": "general_2"}

# instruction wording -> dimension (checked in order; the official templates, docs/papers.md s3.7)
_DIMENSION_CUES: tuple[tuple[str, str], ...] = (
    ("成语", "idiom"),
    ("专有名词", "terminology"),
    ("时态", "tense"),
    ("主语缺省", "zero_pronoun"),
    ("省略", "zero_pronoun"),
    ("多义", "ambiguity"),
    ("歧义", "ambiguity"),
    ("文化敏感", "cultural_safety"),
    ("敏感", "cultural_safety"),
)
_PLACEHOLDER = re.compile(r"^(<[^<>]*>)+$")
_QUOTED = re.compile(r"[\"“]([^\"”]+)[\"”]")
_DEFAULT_PHENOMENON = {
    "tense": "tense consistent with the context",
    "zero_pronoun": "omitted subject",
    "ambiguity": "ambiguous expression",
    "cultural_safety": "culturally sensitive content",
}


@dataclass
class OfficialData:
    items: list[Item]
    translations: list[Translation]
    judgments: list[Judgment]
    num_tasks: int

    def summary(self) -> dict:
        from collections import Counter

        return {
            "tasks": self.num_tasks,
            "items": len(self.items),
            "translations": len(self.translations),
            "systems": len({t.system for t in self.translations}),
            "judgments": len(self.judgments),
            "dimensions": dict(Counter(i.dimension for i in self.items)),
            "redacted_items": sum(i.redacted for i in self.items),
        }


def infer_dimension(instruction: str) -> str | None:
    for cue, dim in _DIMENSION_CUES:
        if cue in instruction:
            return dim
    return None


def _split_instruction(instruction: str) -> tuple[str, str, str]:
    """(instruction proper, context, source) from the official instruction with its text tail."""
    body, context, source = instruction, "", ""
    for marker in ("文本:", "句子:"):
        if marker in body:
            body, source = body.rsplit(marker, 1)
            break
    if "上下文:" in body:
        body, context = body.rsplit("上下文:", 1)
    if not source and context:  # only a context placeholder (the tense template): it stands for the text
        source, context = context, ""
    return body.strip(), context.strip(), source.strip()


def _score(choice: object, where: str) -> int:
    """A criterion's 0/1/2 from its Label Studio choice (``"2分"``), or a UserError naming it."""
    m = re.match(r"^\s*([012])\s*分?\s*$", choice) if isinstance(choice, str) else None
    if not m:
        raise UserError(f"{where}: unexpected score choice {choice!r} (expected 0分, 1分 or 2分)")
    return int(m.group(1))


def load_official(path: str | Path) -> OfficialData:
    """Items, translations and human judgments from an official Label Studio export."""
    path = Path(path)
    shown = _printable(str(path))
    tasks = read_json(path, "Label Studio export")
    if not isinstance(tasks, list):
        raise UserError(f"{shown}: expected a JSON list of Label Studio tasks")
    items: dict[tuple[str, str], Item] = {}
    translations: list[Translation] = []
    judgments: list[Judgment] = []
    counters: dict[str, int] = {}
    for n, task in enumerate(tasks):
        where = f"{shown}: task {task.get('id', n) if isinstance(task, dict) else n}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise UserError(f"{where}: no 'data' object")
        for field_name in ("model", "instruction", "model_output", "ground_truth"):
            if not isinstance(data.get(field_name), str):
                raise UserError(f"{where}: field 'data.{field_name}' missing or not a string")
        instruction = data["instruction"]
        body, context, source = _split_instruction(instruction)
        key = (source or body, context)
        if key not in items:
            dim = infer_dimension(instruction)
            if dim is None:
                raise UserError(f"{where}: cannot infer the dimension from field 'data.instruction'")
            counters[dim] = counters.get(dim, 0) + 1
            quoted = _QUOTED.search(body)
            phenomenon = (
                quoted.group(1)
                if quoted and dim in ("idiom", "terminology", "ambiguity")
                else _DEFAULT_PHENOMENON.get(dim, dim)
            )
            items[key] = parse_record(
                Item,
                {
                    "id": f"official-{dim}-{counters[dim]:03d}",
                    "dimension": dim,
                    "source_zh": source or body,
                    "context": context,
                    "phenomenon": phenomenon,
                    "reference_en": data["ground_truth"].strip(),
                    "instruction": instruction,
                    "redacted": bool(_PLACEHOLDER.match(source or "")),
                },
                where,
            )
        item = items[key]
        meta = {"task_id": task.get("id")}
        if data.get("reasoning_path"):
            meta["reasoning_path"] = data["reasoning_path"]
        translations.append(
            parse_record(
                Translation,
                {"item_id": item.id, "system": data["model"], "output": data["model_output"], "meta": meta},
                where,
            )
        )
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise UserError(f"{where}: field 'annotations': expected a list of objects")
        annotations = [a for a in annotations if not a.get("was_cancelled")]
        for k, ann in enumerate(annotations, start=1):
            scores = {}
            results = ann.get("result") or []
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise UserError(f"{where}: annotation {k}: field 'result': expected a list of objects")
            for res in results:
                name = res.get("from_name")
                if isinstance(name, str) and name in CRITERIA:
                    value = res.get("value") or {}
                    choices = (value.get("choices") if isinstance(value, dict) else None) or [""]
                    choice = choices[0] if isinstance(choices, list) else choices
                    scores[CRITERIA[name]] = _score(choice, f"{where}: annotation {k}: {name}")
            missing = [c for c, f in CRITERIA.items() if f not in scores]
            if missing:
                raise UserError(f"{where}: annotation {k}: missing criteria {', '.join(missing)}")
            judgments.append(
                parse_record(Judgment, {"item_id": item.id, "system": data["model"], "rater": f"r{k}", **scores}, where)
            )
    return OfficialData(list(items.values()), translations, judgments, len(tasks))
