"""Prompt tokens per AgentEval call, round by round (the "Tokens per call" table of docs/diting.md).

Every role answers a fixed, well-formed answer of about 70 SmolLM2 tokens and the judge never
agrees, so a multi-agent debate runs all ``--rounds`` rounds (and, under the reference protocol,
the judge's last-round re-ask). Each request is counted with the SmolLM2 tokenizer, chat template
included, exactly as the runner sends it. These are counts, not a model run: nothing is generated.

usage: python experiments/diting_agenteval_tokens.py [--protocol reference] [--lang zh] [--rounds 4] --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("GENREP_NO_PROGRESS", "1")

ITEMS = ["starter-idiom-001", "starter-ambiguity-001", "starter-terminology-001"]
REASONS = (
    "The rendering keeps the sense of the source and reads naturally, though one phrase is slightly stiff; "
    "the tone matches the scene and nothing is left out."
)


class Counting:
    """A backend that answers a fixed answer per role and reports each request's token count as its prompt_tokens."""

    def __init__(self, tokenizer, role: str):
        self.tok, self.role = tokenizer, role
        self.name, self.model = f"count:{role}", "smollm2-135m"

    def _answer(self, messages) -> str:
        judge = any('"agree"' in m["content"] for m in messages[:2])
        scores = {"specific": 2, "general_1": 1, "general_2": 2}
        if judge:
            return json.dumps({"agree": "no", "reasons": REASONS, **scores, "mistranslation": False})
        return json.dumps({**scores, "reasons": REASONS, "mistranslation": False})

    async def complete(self, messages, sampling):
        from genrep.diting.llm import Completion

        prompt = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        text = self._answer(messages)
        return Completion(
            text=text,
            model=self.model,
            prompt_tokens=len(ids),
            completion_tokens=len(self.tok(text, add_special_tokens=False)["input_ids"]),
            cached=False,
            latency_s=0.0,
            attempts=1,
        )

    async def aclose(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="reference", choices=["reference", "genrep"])
    parser.add_argument("--lang", default="zh", choices=["zh", "en"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from genrep.core.bundled.lm import materialize
    from genrep.diting.agenteval import AgentEvalConfig, Transcript, run_agenteval
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.schema import Translation, read_log, write_records

    tok = AutoTokenizer.from_pretrained(materialize("smollm2-135m"))
    items = [i for i in load_benchmark("starter") if i.id in ITEMS]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "translations.jsonl"
    write_records(path, [Translation(item_id=i.id, system="ref", output=i.reference_en) for i in items])
    table: dict[str, dict] = {}
    for mode in ("multi", "single"):
        roles = ("expert1", "expert2", "judge") if mode == "multi" else ("judge",)
        backends = {r: Counting(tok, r) for r in roles}
        cfg = AgentEvalConfig(
            translations=str(path),
            mode=mode,  # type: ignore[arg-type]
            protocol=args.protocol,  # type: ignore[arg-type]
            lang=args.lang,  # type: ignore[arg-type]
            max_rounds=args.rounds,
            cache=False,
            concurrency=1,
        )
        run_agenteval(cfg, args.out / mode, backends=backends)
        per: dict[tuple[int, str, bool], list[int]] = defaultdict(list)
        for t in read_log(args.out / mode / "transcripts.jsonl", Transcript):
            for turn in t.turns:
                per[(turn.round, turn.role, turn.reask)].append(turn.prompt_tokens)
        table[mode] = {f"{r}/{role}{'/reask' if reask else ''}": sum(v) / len(v) for (r, role, reask), v in per.items()}
    (args.out / "tokens.json").write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
