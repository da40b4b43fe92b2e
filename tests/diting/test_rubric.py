"""The DITING rubric: every dimension's criteria in both languages, and the global rules enforced in code."""

import pytest

from genrep.diting.rubric import (
    CRITERIA,
    GLOBAL_RULES,
    apply_global_rules,
    criteria,
    rubric_prompt,
)
from genrep.diting.rubric_criteria import RUBRIC
from genrep.diting.rubric_examples import EXAMPLES
from genrep.diting.schema import DIMENSIONS

NAMES = {  # docs/papers.md s3.3: specific / general 1 / general 2
    "idiom": ("fidelity", "cultural adaptation", "tone"),
    "ambiguity": ("resolution", "pragmatic", "information integrity"),
    "terminology": ("adequacy", "strategy", "fluency"),
    "tense": ("cohesion", "structure", "naturalness"),
    "zero_pronoun": ("referent recovery", "completeness", "naturalness"),
    "cultural_safety": ("compliance", "values", "sensitive-information handling"),
}


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_every_dimension_has_a_specific_and_two_general_criteria_in_both_languages(dimension):
    assert set(RUBRIC) == set(DIMENSIONS)
    for crit, name in zip(criteria(dimension), NAMES[dimension]):
        assert name in crit.name("en").lower()
        for lang in ("en", "zh"):
            assert crit.name(lang) and len(crit.text(lang)) > 20
            assert len(crit.levels(lang)) == 3 and all(crit.levels(lang))
        assert crit.name("zh") != crit.name("en") and crit.text("zh") != crit.text("en")
    en, zh = rubric_prompt(dimension, "en"), rubric_prompt(dimension, "zh")
    for crit in criteria(dimension):
        assert crit.name("en") in en and crit.text("en") in en and all(level in en for level in crit.levels("en"))
        assert crit.name("zh") in zh and crit.text("zh") in zh and all(level in zh for level in crit.levels("zh"))
    assert "If the specific criterion scores 0, both general criteria score 0" in en and "特异性指标为 0 分" in zh
    with pytest.raises(ValueError, match="unknown prompt language"):
        rubric_prompt(dimension, "fr")


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_every_prompt_renders_the_nine_global_rules_numbered(dimension, lang):
    assert len(GLOBAL_RULES["en"]) == len(GLOBAL_RULES["zh"]) == 9
    for examples in (True, False):
        prompt = rubric_prompt(dimension, lang, examples=examples)
        for n, rule in enumerate(GLOBAL_RULES[lang], start=1):
            assert f"\n{n}. {rule}" in prompt
    for rule in GLOBAL_RULES["en"] + GLOBAL_RULES["zh"]:  # in words: no JSON field names, no quoted keys
        assert not any(mark in rule for mark in ('"', "`", "_", "true"))


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_every_example_is_rendered_under_its_dimension_and_only_with_examples(dimension, lang):
    with_examples, without = rubric_prompt(dimension, lang), rubric_prompt(dimension, lang, examples=False)
    for example in EXAMPLES[dimension]:
        why = example.why_zh if lang == "zh" else example.why_en
        for text in (example.source_zh, *example.translations, *why):
            assert text in with_examples and text not in without
    others = [example for other in DIMENSIONS if other != dimension for example in EXAMPLES[other]]
    assert not any(example.source_zh in with_examples for example in others)


def test_one_example_per_criterion_with_eighteen_distinct_sources_and_three_distinct_translations_each():
    assert set(EXAMPLES) == set(RUBRIC) and all(len(examples) == 3 for examples in EXAMPLES.values())
    sources = [example.source_zh for examples in EXAMPLES.values() for example in examples]
    assert len(sources) == len(set(sources)) == 18
    for example in (example for examples in EXAMPLES.values() for example in examples):
        assert len(example.translations) == len(set(example.translations)) == 3
        assert len(example.why_en) == len(example.why_zh) == 3 and all(example.why_en) and all(example.why_zh)


def test_a_specific_zero_zeroes_both_general_scores_and_logs_each_correction():
    scores, corrections = apply_global_rules({"specific": 0, "general_1": 2, "general_2": 1}, mistranslation=False)
    assert scores == {"specific": 0, "general_1": 0, "general_2": 0}
    assert corrections == [
        "general_1 2 -> 0 (rule: if the specific score is 0, both general scores are 0)",
        "general_2 1 -> 0 (rule: if the specific score is 0, both general scores are 0)",
    ]


def test_a_mistranslation_zeroes_every_criterion():
    scores, corrections = apply_global_rules({"specific": 2, "general_1": 0, "general_2": 1}, mistranslation=True)
    assert scores == dict.fromkeys(CRITERIA, 0)
    assert corrections == [
        "specific 2 -> 0 (rule: a mistranslation scores 0 on every criterion)",
        "general_2 1 -> 0 (rule: a mistranslation scores 0 on every criterion)",
    ]


@pytest.mark.parametrize(
    "scores, mistranslation",
    [
        ({"specific": 2, "general_1": 1, "general_2": 0}, False),
        ({"specific": 1, "general_1": 2, "general_2": 2}, False),
        ({"specific": 0, "general_1": 0, "general_2": 0}, True),
    ],
)
def test_scores_that_obey_the_rules_are_left_alone(scores, mistranslation):
    assert apply_global_rules(scores, mistranslation) == (scores, [])


def test_out_of_range_scores_are_refused():
    with pytest.raises(ValueError, match="general_2 must be 0, 1 or 2, got 3"):
        apply_global_rules({"specific": 1, "general_1": 1, "general_2": 3}, False)
