"""Schema-guided JSON decoding (genrep.diting.llm.constrained) and LocalBackend's use of it.

A tiny, randomly initialised Llama with a byte-level BPE tokenizer trained in memory writes
garbage, which is exactly what the constraint has to survive: every output must parse and
validate. Everything runs in a few seconds on one CPU thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Literal, Optional

import pytest
import torch
from pydantic import BaseModel, Field

from genrep.diting.agenteval import ExpertAnswer, JudgeAnswer, SingleAnswer
from genrep.diting.llm import LLMError, LocalBackend, Sampling, complete_json
from genrep.diting.llm.constrained import generate_json
from genrep.diting.llm.json_schema import check_schema
from genrep.diting.llm.structured import response_format
from genrep.diting.llm.types import TruncatedError

CORPUS = [
    '{"reasons": "the translation keeps the meaning", "mistranslation": false, "specific": 1, "general_1": 2}',
    '{"agree": "yes", "items": [1, 2, 3], "score": 0.75, "name": null, "ok": true}',
    'the quick brown fox jumps over the lazy dog, and a "quoted" word follows',
    "numbers: 0 1 2 3 4 5 6 7 8 9 10 12 15 20 42 100 -7 3.25",
    "user: judge this translation\nassistant: {}",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAST = 24  # max_string_tokens in most tests: a random model rarely closes a string itself


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=380,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def lm():
    """``(tokenizer, model)``: a 2-layer Llama of width 32, random weights (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return tok, LlamaForCausalLM(config).eval()


def _prompt(tok, text="user: judge this translation\nassistant: "):
    return tok(text, return_tensors="pt")["input_ids"]


def _gen(lm, schema, **kwargs):
    tok, model = lm
    kwargs.setdefault("max_new_tokens", 400)
    kwargs.setdefault("max_string_tokens", FAST)
    return generate_json(model, tok, _prompt(tok), schema, **kwargs)


def assert_partial(text: str) -> None:
    """A reply cut by the budget is the JSON so far, unclosed: it does not parse."""
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def conforms(value, schema, root=None) -> bool:
    """A small JSON-schema check for the keywords these tests use (jsonschema is not a dependency)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return conforms(value, {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            hits = sum(conforms(value, alt, root) for alt in schema[key])
            return hits >= 1 if key == "anyOf" else hits == 1
    same = lambda a, b: a == b and type(a) is type(b)
    if "const" in schema:
        return same(value, schema["const"])
    if "enum" in schema:
        return any(same(value, v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return any(conforms(value, {**schema, "type": k}, root) for k in kind)
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and set(value) <= set(props)
            and set(schema.get("required", [])) <= set(value)
            and all(conforms(v, props[k], root) for k, v in value.items())
        )
    if kind == "array":
        return (
            isinstance(value, list)
            and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9)
            and all(conforms(v, schema.get("items", {}), root) for v in value)
        )
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", 10**9)
    if kind in ("integer", "number"):
        ok = isinstance(value, int) if kind == "integer" else isinstance(value, (int, float))
        return (
            ok
            and not isinstance(value, bool)
            and schema.get("minimum", -float("inf")) <= value <= schema.get("maximum", float("inf"))
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    return kind is None


# --- the answers AgentEval asks for --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [ExpertAnswer, JudgeAnswer, SingleAnswer])
@pytest.mark.parametrize(
    "sampling",
    [{}, {"temperature": 1.0, "seed": 7}, {"temperature": 0.7, "top_p": 0.9, "seed": 3}],
    ids=["greedy", "t1", "t0.7-p0.9"],
)
def test_agenteval_answers_always_validate_and_a_seed_reproduces(lm, model, sampling):
    schema = response_format(model)["json_schema"]["schema"]
    text, used, finish = _gen(lm, schema, **sampling)
    answer = model.model_validate_json(text)
    assert finish == "stop" and 0 < used <= 400
    assert text == json.dumps(json.loads(text), ensure_ascii=False)  # json.dumps's layout, keys in schema order
    assert list(json.loads(text)) == list(model.model_fields)
    assert _gen(lm, schema, **sampling) == (text, used, finish)
    assert answer.specific in (0, 1, 2)


def test_the_model_makes_the_choices_and_seeds_differ(lm):
    schema = response_format(JudgeAnswer)["json_schema"]["schema"]
    answers = [json.loads(_gen(lm, schema, temperature=1.5, seed=s, max_string_tokens=4)[0]) for s in range(12)]
    assert {a["agree"] for a in answers} == {"yes", "no"} and {a["mistranslation"] for a in answers} == {True, False}
    assert len({a["specific"] for a in answers}) > 1 and len({a["reasons"] for a in answers}) > 1


def test_a_free_string_ends_at_a_quote_eos_or_the_cap(lm):
    tok, model = lm
    text, used, _ = _gen(lm, {"type": "string"}, max_string_tokens=5)
    assert isinstance(json.loads(text), str) and used <= 1 + 5 + 1
    with_quote = [i for i in range(len(tok)) if '"' in tok.decode([i]) and tok.decode([i]) != '"']
    biased = torch.zeros(len(tok))
    biased[with_quote[0]] = 1e4  # the model now wants a token that contains a quote, e.g. '",'

    class Quoting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, cache=None, use_cache=True, logits_to_keep=0):
            out = model(input_ids=input_ids, cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep)
            out.logits = out.logits + biased
            return out

    wrapped = Quoting()
    wrapped.generation_config = model.generation_config
    text, used, finish = generate_json(wrapped, tok, _prompt(tok), {"type": "string"}, max_new_tokens=50)
    before = tok.decode([with_quote[0]]).split('"')[0]
    assert json.loads(text) == before and finish == "stop"


# --- schema constructs ---------------------------------------------------------------------------------------------

SCHEMAS = {
    "enum": {
        "type": "object",
        "properties": {
            "label": {"enum": ["good", "bad", "ugly", 3, None, True]},
            "lit": {"type": "string", "enum": ["yes", "no"]},
            "one": {"const": "fixed"},
        },
        "required": ["label", "lit", "one"],
        "additionalProperties": False,
    },
    "boolean_null": {"type": "object", "properties": {"b": {"type": "boolean"}, "n": {"type": "null"}}},
    "integer_range": {
        "type": "object",
        "properties": {
            "small": {"type": "integer", "minimum": 0, "maximum": 20},
            "shifted": {"type": "integer", "minimum": -3, "exclusiveMaximum": 4},
            "wide": {"type": "integer", "minimum": 5, "maximum": 1000},
            "free": {"type": "integer"},
            "natural": {"type": "integer", "minimum": 0},
        },
    },
    "number": {
        "type": "object",
        "properties": {"x": {"type": "number"}, "p": {"type": "number", "minimum": 0, "maximum": 1}},
    },
    "nested": {
        "type": "object",
        "properties": {
            "outer": {
                "type": "object",
                "properties": {
                    "inner": {
                        "type": "object",
                        "properties": {
                            "s": {"type": "string", "maxLength": 5},
                            "k": {"type": "integer", "enum": [1, 2]},
                        },
                    }
                },
            },
            "empty": {"type": "object"},
            "any": {},
        },
    },
    "array": {
        "type": "object",
        "properties": {
            "free": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}},
            "bounded": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 4},
            "exact": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 1},
            "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
        },
    },
    "ref": {
        "$defs": {
            "Score": {"type": "integer", "enum": [0, 1, 2]},
            "Pair": {"type": "object", "properties": {"a": {"$ref": "#/$defs/Score"}, "b": {"$ref": "#/$defs/Score"}}},
        },
        "type": "object",
        "properties": {
            "pair": {"$ref": "#/$defs/Pair", "description": "two scores"},
            "pairs": {"type": "array", "items": {"$ref": "#/$defs/Pair"}, "maxItems": 2},
        },
    },
    "anyof_null": {
        "type": "object",
        "properties": {
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "num_or_null": {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
            "choice": {
                "oneOf": [
                    {"type": "object", "properties": {"x": {"type": "boolean"}}},
                    {"type": "array", "items": {"type": "null"}, "maxItems": 2},
                ]
            },
        },
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_hand_written_schemas_validate_greedy_and_sampled(lm, name):
    schema = SCHEMAS[name]
    runs = [
        _gen(lm, schema, max_new_tokens=120, max_string_tokens=6, **kwargs)
        for kwargs in ({}, *({"temperature": 1.2, "seed": s} for s in range(5)))
    ]
    for text, used, finish in runs:
        if finish == "length":  # a random model may go on with a free array past the budget
            assert name == "array" and used <= 120
            assert_partial(text)
            continue
        value = json.loads(text)
        assert conforms(value, schema), text
        assert finish == "stop" and set(value) == set(schema["properties"])
    assert any(finish == "stop" for _, _, finish in runs)


def test_arrays_respect_their_bounds_and_vary(lm):
    lengths = set()
    for seed in range(8):
        value = json.loads(_gen(lm, SCHEMAS["array"], temperature=1.5, seed=seed, max_new_tokens=150)[0])
        assert 2 <= len(value["bounded"]) <= 4 and len(value["exact"]) == 1 and value["none"] == []
        lengths.add(len(value["free"]))
    assert len(lengths) > 1


class Inner(BaseModel):
    label: Literal["low", "mid", "high"]
    weight: float = Field(ge=0, le=1)


class Outer(BaseModel):
    name: str
    note: Optional[str]
    inner: Inner
    inners: list[Inner] = Field(max_length=3)
    flags: list[bool] = Field(min_length=1, max_length=2)
    level: int = Field(ge=1, le=5)
    count: int


@pytest.mark.parametrize("mode", ["json_schema", "plain"])
def test_a_pydantic_model_with_refs_literals_optionals_and_lists_validates(lm, mode):
    schema = response_format(Outer)["json_schema"]["schema"] if mode == "json_schema" else Outer.model_json_schema()
    for kwargs in ({}, *({"temperature": 1.0, "seed": s} for s in range(3))):
        text, _, _ = _gen(lm, schema, max_new_tokens=200, max_string_tokens=5, **kwargs)
        Outer.model_validate_json(text)


# --- the budget, the cache, unsupported schemas --------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 1, 3, 8, 20])
def test_a_tiny_budget_stops_with_the_partial_json_and_finish_reason_length(lm, budget):
    for model in (ExpertAnswer, JudgeAnswer, Outer):
        schema = response_format(model)["json_schema"]["schema"]
        for kwargs in ({}, {"temperature": 1.0, "seed": 1}):
            text, used, finish = _gen(lm, schema, max_new_tokens=budget, **kwargs)
            assert finish == "length" and used <= budget
            assert_partial(text)
            # nothing filled in: the same decoding with room to finish starts with exactly this text
            full, full_used, full_finish = _gen(lm, schema, **kwargs)
            assert full_finish == "stop" and len(text) < len(full) and full.startswith(text), (text, full)
            assert used < full_used
            model.model_validate_json(full)
    for name in ("array", "number", "integer_range", "anyof_null", "ref"):
        text, used, finish = _gen(lm, SCHEMAS[name], max_new_tokens=budget)
        assert used <= budget, text
        if finish == "stop":  # it fitted
            assert conforms(json.loads(text), SCHEMAS[name]), text
        else:
            assert finish == "length"
            assert_partial(text)


def test_budget_cut_replies_are_never_completed_with_defaults(lm):
    tok, _ = lm
    schema = {"type": "object", "properties": {"reasons": {"type": "string"}, "score": {"enum": [0, 1, 2]}}}
    assert _gen(lm, schema, max_new_tokens=0) == ("", 0, "length")  # not even the first forced piece fits
    opening = len(tok.encode('{"reasons": "', add_special_tokens=False))
    text, used, finish = _gen(lm, schema, max_new_tokens=opening + 2, max_string_tokens=160)
    assert finish == "length" and used == opening + 2
    assert text.startswith('{"reasons": "') and '"' not in text[len('{"reasons": "') :]  # the open string, unclosed


def test_the_kv_cache_path_matches_recomputing_without_it(lm):
    schema = response_format(JudgeAnswer)["json_schema"]["schema"]
    for kwargs in ({}, {"temperature": 1.0, "seed": 5}):
        cached = _gen(lm, schema, max_string_tokens=6, **kwargs)
        assert _gen(lm, schema, max_string_tokens=6, use_cache=False, **kwargs) == cached
    cached = _gen(lm, SCHEMAS["array"], temperature=1.0, seed=2)
    assert _gen(lm, SCHEMAS["array"], temperature=1.0, seed=2, use_cache=False) == cached


def test_a_prefix_cache_feeds_only_the_new_part_and_decodes_the_same(lm):
    from genrep.diting.llm.prefix_cache import MIN_SHARED_TOKENS, PrefixCache

    tok, model = lm
    schema = response_format(JudgeAnswer)["json_schema"]["schema"]
    shared = "user: judge this translation; the quick brown fox jumps over the lazy dog, numbers: 0 1 2 3 4 5\n"
    texts = [shared + "assistant: ", shared + "user: and a quoted word\nassistant: ", shared + "assistant: "]
    n_shared = len(_prompt(tok, shared)[0])
    assert n_shared >= MIN_SHARED_TOKENS
    cache = PrefixCache()
    reused = []
    for text in texts:
        ids = _prompt(tok, text)
        for kwargs in ({}, {"temperature": 1.0, "seed": 4}):
            plain = generate_json(model, tok, ids, schema, max_new_tokens=200, max_string_tokens=6, **kwargs)
            again = generate_json(
                model, tok, ids, schema, max_new_tokens=200, max_string_tokens=6, prefix_cache=cache, **kwargs
            )
            assert again == plain
            reused.append(cache.reused)
            tokens, states = cache.kept[-1]
            assert states.get_seq_length() == len(tokens) > len(ids[0])  # the prompt and the reply
            assert len(cache.kept) <= cache.entries
    assert reused[0] == 0  # nothing cached yet
    assert reused[1] == len(_prompt(tok, texts[0])[0]) - 1  # the same prompt: all but its last token
    assert n_shared - 2 <= reused[2] < len(_prompt(tok, texts[1])[0]) - 1  # the shared part only
    short = _prompt(tok, "user: hi\nassistant: ")
    generate_json(model, tok, short, schema, max_new_tokens=50, max_string_tokens=6, prefix_cache=cache)
    assert cache.reused == 0  # fewer shared tokens than MIN_SHARED_TOKENS: fed from scratch
    first = _prompt(tok, texts[0])
    other = _prompt(tok, "numbers: 9 8 7 6 5 4 3 2 1 0, and the lazy dog jumps over the quick brown fox\nassistant: ")
    cache.clear()
    for ids in (first, other, first):  # another prompt in between (AgentEval's judge between two experts)
        generate_json(model, tok, ids, schema, max_new_tokens=50, max_string_tokens=6, prefix_cache=cache)
    assert cache.reused == len(first[0]) - 1  # the older entry matched, not the last request's


@pytest.mark.parametrize(
    "schema, construct",
    [
        ({"type": "string", "pattern": "^a+$"}, "pattern"),
        ({"type": "string", "format": "date-time"}, "format"),
        ({"type": "string", "minLength": 3}, "minLength"),
        ({"type": "number", "multipleOf": 2}, "multipleOf"),
        ({"allOf": [{"type": "integer"}, {"minimum": 1}]}, "allOf"),
        ({"$ref": "other.json#/X"}, "$ref"),
        ({"type": "array", "prefixItems": [{"type": "integer"}]}, "prefixItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
        ({"type": "tuple"}, "type 'tuple'"),
    ],
)
def test_unsupported_constructs_raise_naming_them(lm, schema, construct):
    with pytest.raises(ValueError, match=construct.replace("$", r"\$")):
        check_schema(schema)
    with pytest.raises(ValueError, match=construct.replace("$", r"\$")):
        _gen(lm, schema)


def test_a_recursive_schema_is_accepted():
    check_schema(
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
                }
            },
            "$ref": "#/$defs/Node",
        }
    )


# --- LocalBackend --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_dir(lm, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-lm")
    tok, model = lm
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


MESSAGES = [
    {"role": "system", "content": "You judge translations."},
    {"role": "user", "content": "Source: 你好. Translation: hello. Answer in JSON."},
]


def test_local_backend_honours_json_schema(local_dir):
    backend = LocalBackend(str(local_dir))
    for sampling in (Sampling(max_tokens=300), Sampling(max_tokens=300, temperature=0.8, seed=11)):
        sampling = dataclasses.replace(sampling, response_format=response_format(ExpertAnswer))
        completion = asyncio.run(backend.complete(MESSAGES, sampling))
        ExpertAnswer.model_validate_json(completion.text)
        assert completion.finish_reason == "stop" and 0 < completion.completion_tokens <= 300
        assert completion.prompt_tokens > 10 and completion.model == str(local_dir) and completion.attempts == 1
        assert asyncio.run(backend.complete(MESSAGES, sampling)).text == completion.text
    short = asyncio.run(
        backend.complete(MESSAGES, Sampling(max_tokens=5, response_format=response_format(JudgeAnswer)))
    )
    assert short.finish_reason == "length" and 0 < short.completion_tokens <= 5
    assert_partial(short.text)
    with pytest.raises(TruncatedError) as cut:  # never accepted, even where the cap allows no retry
        asyncio.run(complete_json(backend, MESSAGES, JudgeAnswer, Sampling(max_tokens=5)))
    assert [c.text for c in cut.value.completions] == [short.text]
    with pytest.raises(TruncatedError) as cut:  # the retry with twice the budget is cut too
        asyncio.run(complete_json(backend, MESSAGES, JudgeAnswer, Sampling(max_tokens=5), max_tokens_cap=10))
    assert [c.completion_tokens <= n for c, n in zip(cut.value.completions, (5, 10))] == [True, True]
    assert all(c.finish_reason == "length" for c in cut.value.completions)
    answer, completions = asyncio.run(complete_json(backend, MESSAGES, SingleAnswer, Sampling(max_tokens=300)))
    assert isinstance(answer, SingleAnswer) and len(completions) == 1  # no repair needed


def test_local_backend_prefix_cache_gives_the_same_replies(local_dir):
    sampling = Sampling(max_tokens=200, response_format=response_format(ExpertAnswer))
    follow_up = [*MESSAGES, {"role": "assistant", "content": "{}"}, {"role": "user", "content": "Once more."}]
    cached, plain = LocalBackend(str(local_dir)), LocalBackend(str(local_dir), prefix_cache=False)
    assert plain.prefix_cache is None
    for messages in (MESSAGES, follow_up, MESSAGES):
        a, b = (asyncio.run(backend.complete(messages, sampling)) for backend in (cached, plain))
        assert a.text == b.text and a.prompt_tokens == b.prompt_tokens and a.completion_tokens == b.completion_tokens
    assert cached.prefix_cache.reused > 10  # the third request shares the first's prompt
    asyncio.run(cached.aclose())
    assert cached.prefix_cache.kept == []


def test_local_backend_keeps_other_formats_unconstrained_and_rejects_bad_schemas(local_dir):
    backend = LocalBackend(str(local_dir), max_new_tokens_cap=6)
    for fmt in (None, {"type": "json_object"}):
        completion = asyncio.run(backend.complete(MESSAGES, Sampling(max_tokens=50, response_format=fmt)))
        assert completion.completion_tokens <= 6  # model.generate as before, capped
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a"}}}
    with pytest.raises(LLMError, match="pattern"):
        asyncio.run(backend.complete(MESSAGES, Sampling(response_format=bad)))
    with pytest.raises(LLMError, match="no schema"):
        asyncio.run(backend.complete(MESSAGES, Sampling(response_format={"type": "json_schema", "json_schema": {}})))


def test_local_backend_drops_a_partial_character_at_the_token_limit(lm):
    from types import SimpleNamespace

    tok, _ = lm
    char = tok.encode("你", add_special_tokens=False)
    assert len(char) >= 2 and tok.decode(char[:-1]).endswith("\ufffd")  # byte-level: one character, several tokens

    class CutModel:  # "generates" the character's first bytes, then hits max_tokens
        generation_config = SimpleNamespace(eos_token_id=tok.eos_token_id)

        def generate(self, input_ids, **kwargs):
            return torch.cat([input_ids, torch.tensor([tok.encode("ok ", add_special_tokens=False) + char[:-1]])], 1)

    backend = LocalBackend("cut-model")
    backend._lm = (tok, CutModel())
    n = len(tok.encode("ok ", add_special_tokens=False)) + len(char) - 1
    completion = asyncio.run(backend.complete(MESSAGES, Sampling(max_tokens=n)))
    assert completion.finish_reason == "length" and completion.text == "ok "


def test_local_backend_string_cap_shortens_free_text_and_keys_the_cache(local_dir):
    from genrep.core.errors import UserError
    from genrep.diting.llm.registry import make_backend

    fmt = response_format(ExpertAnswer)
    sampling = Sampling(max_tokens=300, response_format=fmt)
    capped = LocalBackend(str(local_dir), max_string_tokens=3)
    completion = asyncio.run(capped.complete(MESSAGES, sampling))
    answer = ExpertAnswer.model_validate_json(completion.text)
    tok = capped._load()[0]
    strings = [v for v in answer.model_dump().values() if isinstance(v, str)]
    assert strings and all("\ufffd" not in s for s in strings)  # no multibyte character cut in half
    assert all(len(tok(s, add_special_tokens=False)["input_ids"]) <= 6 for s in strings)
    default = LocalBackend(str(local_dir))
    assert completion.completion_tokens < asyncio.run(default.complete(MESSAGES, sampling)).completion_tokens
    assert capped.cache_name != default.cache_name == f"local:{local_dir}#json-guided"  # old cache entries stay valid
    with pytest.raises(UserError, match="max_string_tokens"):
        LocalBackend(str(local_dir), max_string_tokens=0)
    assert make_backend(f"local:{local_dir}", cache=False, local_string_tokens=3).max_string_tokens == 3
