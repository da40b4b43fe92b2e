"""``genrep diting translate``: run MT systems over a benchmark, resumably.

Each system is ``NAME=BACKEND`` (e.g. ``smol=local:smollm2-135m``, ``v3=deepseek:deepseek-chat``,
``q=vllm:Qwen/Qwen3-32B@http://gpu01:8000/v1``; see :func:`genrep.diting.llm.make_backend`). Items
are translated concurrently (bounded), through the persistent LLM cache. Every finished
translation is appended to ``translations.jsonl`` and flushed at once, so a killed run loses at
most the requests in flight; a re-run skips the (system, item) pairs already translated and retries
the ones that failed. A request that fails for good (after the backend's bounded retries) is
recorded with its reason (``meta.failed``, ``meta.reason``) instead of stopping the run.

Prompts: ``chat`` (instruction-following models) sends the item's DITING instruction with the
context and the text, asking for the English translation only; ``fewshot`` (base models, e.g. the
bundled Gemma-3-270M) sends a plain ``Chinese: ... / English: ...`` continuation prompt with two
fixed examples and stops at the end of the line. ``auto`` picks ``fewshot`` for local models
without a chat template and ``chat`` otherwise.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from genrep.core.config import Count, NonNeg, NonNegInt, Positive
from genrep.core.errors import UserError
from genrep.core.progress import progress_bar
from genrep.core.rundir import RunDir
from genrep.diting.benchmark import load_benchmark
from genrep.diting.schema import Item, Translation, append_record, read_log, read_records

FEWSHOT = (  # (context, source, translation of the source only)
    (
        "三年前，他被逐出了青云宗。",
        "如今再回来，山门前的石阶已长满青苔。",
        "Now that he had come back, the stone steps before the sect gate were overgrown with moss.",
    ),
    (
        "",
        "他话还没说完，就被师父一巴掌拍在了后脑勺上。",
        "Before he could finish, his master slapped him on the back of the head.",
    ),
)
_LABEL = re.compile(r"^\s*(answer|english|translation|译文|英文)\s*[:：]\s*", re.IGNORECASE)


@dataclass
class TranslateConfig:
    """``genrep diting translate``."""

    bench: str = "starter"  # a bundled benchmark name or an items file (.jsonl / .csv)
    systems: list[str] = field(default_factory=list)  # NAME=BACKEND
    dimensions: list[str] = field(default_factory=list)  # empty: all
    limit: Optional[Count] = None  # items per dimension
    prompt: Literal["auto", "chat", "fewshot"] = "auto"
    max_tokens: Count = 256
    temperature: NonNeg = 0.0
    seed: int = 0
    concurrency: Count = 8
    timeout_s: Positive = 120.0
    max_retries: NonNegInt = 4
    cache: bool = True
    prices: dict[str, list[float]] = field(
        default_factory=dict
    )  # model -> [USD per 1M prompt, per 1M completion tokens]


def parse_systems(specs: list[str]) -> dict[str, str]:
    """``["name=backend", ...]`` -> {name: backend}; one-line errors for malformed or repeated names and
    for a backend that is not ``KIND:MODEL[@BASE_URL]`` of a known kind (before any work starts)."""
    from genrep.diting.llm.registry import parse_spec

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, backend = (part.strip() for part in spec.partition("="))
        if not sep or not name or not backend:
            raise UserError(f"--system {spec!r}: expected NAME=BACKEND, e.g. smol=local:smollm2-135m")
        if name in out:
            raise UserError(f"--system {spec!r}: system name '{name}' given twice")
        parse_spec(backend)
        out[name] = backend
    if not out:
        raise UserError("translate: give at least one --system NAME=BACKEND")
    return out


def chat_messages(item: Item) -> list[dict]:
    text = item.instruction.strip() or "请将源语言文本翻译成目标语言文本。 源语言:中文 目标语言:英文。"
    if item.context:
        text += f"\n上下文:{item.context}"
    text += f"\n文本:{item.source_zh}\n\nReply with the English translation of 文本 only, without notes."
    return [
        {"role": "system", "content": "You are a professional literary translator of Chinese web novels into English."},
        {"role": "user", "content": text},
    ]


def fewshot_messages(item: Item) -> list[dict]:
    """A continuation prompt for base models: one user message that the local backend passes verbatim.

    Context (when there is any) comes on its own line, so that the model translates the text only."""

    def block(context: str, source: str) -> str:
        return (f"Context: {context}\n" if context else "") + f"Chinese: {source}\nEnglish:"

    shots = "".join(f"{block(c, zh)} {en}\n\n" for c, zh, en in FEWSHOT)
    return [{"role": "user", "content": shots + block(item.context, item.source_zh)}]


def clean_output(text: str, style: str) -> str:
    """The translation from a model reply: first line for few-shot prompts, labels like 'Answer:' removed."""
    text = text.strip()
    if style == "fewshot":
        text = text.split("\n", 1)[0].strip()
    return _LABEL.sub("", text).strip().strip('"').strip()


def _style(cfg: TranslateConfig, backend) -> str:
    if cfg.prompt != "auto":
        return cfg.prompt
    inner = backend
    while hasattr(inner, "backend"):  # behind the meter and the cache
        inner = inner.backend
    has_template = getattr(inner, "has_chat_template", None)
    return "fewshot" if has_template is not None and not has_template() else "chat"


async def _run_system(name: str, backend, items: list[Item], cfg: TranslateConfig, log: Path, bar) -> dict:
    from genrep.diting.llm import LLMError, Sampling

    style = _style(cfg, backend)
    sampling = Sampling(
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
        stop=("\n",) if style == "fewshot" else (),
    )
    sem = asyncio.Semaphore(cfg.concurrency)
    lock = asyncio.Lock()
    stats: dict[str, Any] = {
        "requests": 0,
        "cached": 0,
        "failed": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "prompt": style,
    }

    async def one(item: Item) -> None:
        messages = chat_messages(item) if style == "chat" else fewshot_messages(item)
        async with sem:
            start = time.perf_counter()
            try:
                c = await backend.complete(messages, sampling)
                rec = Translation(
                    item_id=item.id,
                    system=name,
                    output=clean_output(c.text, style),
                    meta={
                        "backend": backend.name,
                        "raw": c.text,
                        "cached": c.cached,
                        "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens,
                        "latency_s": round(c.latency_s, 3),
                    },
                )
                stats["cached"] += int(c.cached)
                stats["prompt_tokens"] += c.prompt_tokens
                stats["completion_tokens"] += c.completion_tokens
            except LLMError as e:
                rec = Translation(
                    item_id=item.id,
                    system=name,
                    output="",
                    meta={
                        "backend": backend.name,
                        "failed": True,
                        "reason": e.reason,
                        "latency_s": round(time.perf_counter() - start, 3),
                    },
                )
                stats["failed"] += 1
        stats["requests"] += 1
        async with lock:
            append_record(log, rec)
        bar.advance()

    await asyncio.gather(*(one(i) for i in items))
    return stats


def translate(cfg: TranslateConfig, out: str | Path) -> dict:
    from genrep.diting.llm import UsageMeter, make_backend
    from genrep.diting.llm.usage import parse_prices

    systems = parse_systems(cfg.systems)
    parse_prices(cfg.prices)
    if cfg.concurrency < 1 or cfg.max_tokens < 1:
        raise UserError("translate: concurrency and max_tokens must be >= 1")
    items = load_benchmark(cfg.bench, cfg.dimensions or None, cfg.limit)
    run = RunDir(out)
    run.write_config(cfg)
    log = run / "translations.jsonl"
    done = {(t.system, t.item_id) for t in read_log(log, Translation) if not t.meta.get("failed")}
    todo = {name: [i for i in items if (name, i.id) not in done] for name in systems}
    report: dict = {"bench": cfg.bench, "items": len(items), "systems": {}}
    meter = UsageMeter(parse_prices(cfg.prices))
    start = time.perf_counter()
    with progress_bar(sum(len(v) for v in todo.values()), "translate") as bar:
        for name, spec in systems.items():
            if not todo[name]:
                report["systems"][name] = {"backend": spec, "requests": 0, "skipped": len(items)}
                continue
            backend = meter.wrap(
                make_backend(
                    spec,
                    cache=cfg.cache,
                    concurrency=cfg.concurrency,
                    timeout_s=cfg.timeout_s,
                    max_retries=cfg.max_retries,
                )
            )

            async def go(backend=backend, name=name):
                try:
                    return await _run_system(name, backend, todo[name], cfg, log, bar)
                finally:
                    await backend.aclose()

            stats = asyncio.run(go())
            report["systems"][name] = {"backend": spec, "skipped": len(items) - len(todo[name]), **stats}
    final = read_translation_log(log)
    report["translations"] = len(final)
    report["failed"] = sum(bool(t.meta.get("failed")) for t in final)
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["usage"] = meter.summary()
    run.write_metrics(report)
    return report


def latest(translations: Iterable[Translation]) -> list[Translation]:
    """The last record per (system, item), in order of first appearance (a later success replaces a failure)."""
    out: dict[tuple[str, str], Translation] = {}
    for t in translations:
        out[(t.system, t.item_id)] = t
    return list(out.values())


def read_translations(path: str | Path) -> list[Translation]:
    """A user's translations file (``.jsonl`` or ``.csv``, e.g. a ``translations.jsonl`` of an earlier run),
    read-only and strict: the last record per (system, item). A malformed line, a torn last line
    included, is an error naming ``file:line``; the file is never written."""
    try:
        return latest(read_records(path, Translation, "translations file"))
    except UserError as err:
        if _torn_last_line(Path(path), str(err)):
            raise UserError(
                f"{err}; the last line is cut short, as a crash leaves it: if this is the log of a "
                "`genrep diting translate` run, re-running it with the same --out repairs it"
            ) from None
        raise


def _torn_last_line(path: Path, message: str) -> bool:
    """Whether ``message`` reports the file's last line as not JSON and that line lacks its newline."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    lines = data.count(b"\n") + 1
    return bool(data) and not data.endswith(b"\n") and f":{lines}: not valid JSON" in message


def read_translation_log(path: str | Path) -> list[Translation]:
    """This runner's own ``translations.jsonl`` inside ``--out``: a torn last line is cut first, then
    the last record per (system, item)."""
    return latest(read_log(path, Translation))
