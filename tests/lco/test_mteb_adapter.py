"""genrep models as mteb models: real ModelMeta, results under their own name and revision, mteb's offline
mock tasks (text and image), input conversion, and the one-line errors. mteb 2.x (a dev dependency)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genrep.core.errors import UserError
from genrep.lco import mteb_adapter
from genrep.lco.adapters import apply_method, save_model
from genrep.lco.embedding import EmbeddingModel
from genrep.lco.mteb_adapter import MTEBEncoder, check_task, to_audio, to_frames, to_pil
from tests.lco.tiny_vlms import tiny_causal_lm, tiny_qwen2vl

if importlib.util.find_spec("mteb") is None:
    pytest.skip("mteb is not installed (pip install genrep[mteb])", allow_module_level=True)


@pytest.fixture(scope="module")
def mteb(tmp_path_factory):
    """mteb, imported with its default result cache pointed at a temporary folder (never the home cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTEB_CACHE", str(tmp_path_factory.mktemp("mteb-default-cache")))
        import mteb
        import mteb.mocks.mock_tasks  # noqa: F401
    return mteb


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("models") / "lm")


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "vlm"
    tiny_qwen2vl(path)
    return path


def _head_model(lm, out, seed: int):
    """A trained ``head`` model directory (the run's ``model/`` folder) whose head is the identity plus noise."""
    emb = EmbeddingModel.from_pretrained(lm)
    apply_method(emb, "head")
    assert emb.head is not None
    with torch.no_grad():
        emb.head.weight.add_(0.5 * torch.randn(emb.head.weight.shape, generator=torch.Generator().manual_seed(seed)))
    save_model(emb, out / "model", method="head", backbone=str(lm))
    return out


def _spy(encoder: MTEBEncoder) -> list:
    """Record the items each ``EmbeddingModel.encode`` call of the encoder gets."""
    calls: list = []
    encode = encoder.model.encode

    def spy(items, **kwargs):
        calls.append(list(items))
        return encode(items, **kwargs)

    encoder.model.encode = spy  # type: ignore[method-assign]
    return calls


def _scores(result) -> dict:
    return {r.task_name: r.get_score() for r in result.task_results}


def test_meta_is_a_real_model_meta(mteb, lm):
    enc = mteb_adapter.load(f"base:{lm}", device="cpu")
    meta = enc.mteb_model_meta
    assert isinstance(meta, mteb.models.ModelMeta)
    assert meta.name == "genrep/lm" and re.fullmatch(r"[0-9a-f]{12}", meta.revision)
    assert meta.modalities == ["text"] and meta.embed_dim == 32 and meta.max_tokens == 300  # the reference: 300
    assert meta.n_parameters == sum(p.numel() for p in enc.model.model.parameters())
    assert meta.similarity_fn_name.value == "cosine" and meta.framework == ["PyTorch"]
    assert meta.loader is mteb_adapter.mteb_loader and meta.loader_kwargs["model"] == f"base:{lm}"
    again = mteb_adapter.load(f"base:{lm}", device="cpu", name="me/mine", meta={"license": "mit"})
    assert again.mteb_model_meta.revision == meta.revision  # the same files: the same revision
    assert again.mteb_model_meta.name == "me/mine" and again.mteb_model_meta.license == "mit"
    other = mteb_adapter.load(f"base:{lm}", device="cpu", prompts={"template": "\nIn one word, the {modality}:"})
    assert other.mteb_model_meta.revision != meta.revision  # other prompts embed differently: another revision
    fixed = mteb_adapter.load(f"base:{lm}", device="cpu", revision="v1")  # a revision of the user's choosing
    assert (
        fixed.mteb_model_meta.revision == "v1" and fixed.mteb_model_meta.load_model().mteb_model_meta.revision == "v1"
    )
    with pytest.raises(UserError, match="unknown field"):
        mteb_adapter.load(f"base:{lm}", device="cpu", meta={"licence": "mit"})
    in_memory = MTEBEncoder(other.model).mteb_model_meta.revision  # no files: a hash of the weights in memory
    with torch.no_grad():
        next(other.model.model.parameters()).add_(1e-3)
    assert MTEBEncoder(other.model).mteb_model_meta.revision != in_memory
    rebuilt = meta.load_model()  # the meta's loader builds the encoder again
    assert isinstance(rebuilt, MTEBEncoder) and rebuilt.mteb_model_meta.revision == meta.revision
    np.testing.assert_allclose(rebuilt.encode(["a red cat"]), enc.encode(["a red cat"]), atol=1e-6)


def test_text_tasks_score_and_store_under_name_and_revision(mteb, lm, tmp_path):
    from mteb.mocks.mock_tasks import MockClassificationTask, MockRetrievalTask, MockSTSTask

    enc = mteb_adapter.load(f"base:{lm}", device="cpu")
    cache = mteb.ResultCache(tmp_path / "cache")
    tasks = [MockSTSTask(), MockRetrievalTask(), MockClassificationTask()]
    scores = _scores(mteb_adapter.evaluate(enc, tasks, cache=cache, show_progress_bar=False))
    assert set(scores) == {"MockSTSTask", "MockRetrievalTask", "MockClassificationTask"}
    assert all(np.isfinite(s) for s in scores.values())
    folder = tmp_path / "cache" / "results" / "genrep__lm" / enc.mteb_model_meta.revision
    assert sorted(p.name for p in folder.glob("Mock*.json")) == sorted(f"{t}.json" for t in scores)
    stored = json.loads((folder / "model_meta.json").read_text())
    assert stored["name"] == "genrep/lm" and stored["revision"] == enc.mteb_model_meta.revision
    assert not (tmp_path / "cache" / "results" / "no_model_name_available").exists()


def test_different_models_never_share_cached_results(mteb, lm, tmp_path):
    from mteb.mocks.mock_tasks import MockSTSTask

    run_a, run_b = _head_model(lm, tmp_path / "a", seed=1), _head_model(lm, tmp_path / "b", seed=2)
    a = mteb_adapter.load(str(run_a), device="cpu", name="genrep/same")
    b = mteb_adapter.load(str(run_b), device="cpu", name="genrep/same")
    assert a.mteb_model_meta.revision != b.mteb_model_meta.revision
    assert a.mteb_model_meta.adapted_from == str(lm)
    by_folder = mteb_adapter.load(str(run_a / "model"), device="cpu")  # the run or its model/ folder: one model
    assert by_folder.mteb_model_meta.name == "genrep/a"
    assert by_folder.mteb_model_meta.revision == a.mteb_model_meta.revision
    cache = mteb.ResultCache(tmp_path / "cache")
    calls_a, calls_b = _spy(a), _spy(b)
    score_a = _scores(mteb.evaluate(a, MockSTSTask(), cache=cache, show_progress_bar=False))
    score_b = _scores(mteb.evaluate(b, MockSTSTask(), cache=cache, show_progress_bar=False))
    assert calls_a and calls_b  # the second model is really evaluated, not served the first one's scores
    results = tmp_path / "cache" / "results" / "genrep__same"
    assert sorted(p.name for p in results.iterdir()) == sorted([a.mteb_model_meta.revision, b.mteb_model_meta.revision])
    again = mteb_adapter.load(str(run_a), device="cpu", name="genrep/same")
    calls_again = _spy(again)
    cached = _scores(mteb.evaluate(again, MockSTSTask(), cache=cache, show_progress_bar=False))
    assert cached["MockSTSTask"] == pytest.approx(score_a["MockSTSTask"])  # as stored (rounded) by mteb
    assert calls_again == []  # the same model: mteb's cache answers
    assert set(score_b) == {"MockSTSTask"}
    shutil.copy(run_b / "model" / "head.safetensors", run_a / "model" / "head.safetensors")  # a's weights change
    with pytest.raises(UserError, match="is now revision"):  # its old meta no longer describes it
        a.mteb_model_meta.load_model()


def test_image_tasks_run_on_a_vlm(mteb, vlm, tmp_path):
    from mteb.mocks.mock_tasks import MockImageClassificationTask, MockMultiChoiceTask, MockZeroShotClassificationTask

    enc = mteb_adapter.load(f"base:{vlm}", device="cpu")
    assert enc.mteb_model_meta.modalities == ["image", "text", "video"]
    calls = _spy(enc)
    tasks = [MockImageClassificationTask(), MockZeroShotClassificationTask(), MockMultiChoiceTask()]
    scores = _scores(mteb_adapter.evaluate(enc, tasks, cache=mteb.ResultCache(tmp_path / "c"), show_progress_bar=False))
    assert set(scores) == {"MockImageClassification", "MockZeroShotClassification", "MockVisionCentricQA"}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    kinds = {tuple(sorted(item)) for call in calls for item in call if isinstance(item, dict)}
    assert ("image", "text") in kinds  # MockVisionCentricQA's queries: text and image in one interleaved item
    images = [item["image"] for call in calls for item in call if isinstance(item, dict) and "image" in item]
    assert images and all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)  # the mocks are RGBA
    folder = tmp_path / "c" / "results" / "genrep__vlm" / enc.mteb_model_meta.revision
    assert (folder / "MockImageClassification.json").is_file()
    assert enc.mteb_model_meta.load_model().mteb_model_meta.revision == enc.mteb_model_meta.revision


def test_missing_modality_is_a_one_line_error(mteb, lm, tmp_path):
    from mteb.mocks.mock_tasks import MockAny2AnyRetrievalT2ITask, MockImageClassificationTask

    enc = mteb_adapter.load(f"base:{lm}", device="cpu")
    calls = _spy(enc)
    for task in (MockImageClassificationTask(), MockAny2AnyRetrievalT2ITask()):
        with pytest.raises(UserError) as err:
            mteb_adapter.evaluate(enc, [task], cache=mteb.ResultCache(tmp_path / "c"))
        msg = str(err.value)
        assert "\n" not in msg and task.metadata.name in msg and "needs image" in msg and "embeds text only" in msg
    with pytest.raises(UserError, match="MockImageClassification"):
        check_task("MockImageClassification", enc.mteb_model_meta)  # by name, against a ModelMeta
    with pytest.raises(UserError, match="needs image"):  # mteb handing the encoder such a task anyway
        enc.encode([{"text": "x"}], task_metadata=MockImageClassificationTask().metadata)
    assert calls == []  # nothing was encoded
    check_task(MockImageClassificationTask(), ["text", "image"])


def test_without_mteb_load_says_how_to_install(lm, monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # import mteb now fails
    with pytest.raises(UserError, match=r"pip install genrep\[mteb\]") as err:
        mteb_adapter.load(f"base:{lm}", device="cpu")
    assert "\n" not in str(err.value)


def test_inputs_become_what_the_embedder_takes(mteb, vlm):
    chw = torch.rand(3, 8, 6)
    im = to_pil(chw)
    assert im.mode == "RGB" and im.size == (6, 8)
    np.testing.assert_array_equal(np.asarray(im)[..., 0], np.rint(chw[0].numpy() * 255).astype(np.uint8))
    hwc = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(to_pil(hwc)), hwc)
    np.testing.assert_array_equal(np.asarray(to_pil(torch.from_numpy(hwc).permute(2, 0, 1))), hwc)
    assert to_pil(Image.new("RGBA", (4, 4))).mode == "RGB" and to_pil(np.zeros((4, 5))).size == (5, 4)
    with pytest.raises(UserError, match="un-normalised"):
        to_pil(torch.randn(3, 8, 8) * 3)
    wave = to_audio({"array": np.ones((2, 800), dtype=np.float32), "sampling_rate": 8000})
    assert wave.shape == (1600,) and wave.dtype == np.float32  # stereo 8 kHz -> mono 16 kHz
    frames = to_frames(torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8))
    assert len(frames) == 3 and all(f.mode == "RGB" for f in frames)

    enc = mteb_adapter.load(f"base:{vlm}", device="cpu", batch_size=2)
    image = Image.fromarray(hwc)
    batch = {
        "text": ["a red cat", "the sky"],
        "image": [image, torch.from_numpy(hwc).permute(2, 0, 1)],
        "id": ["0", "1"],
    }
    fused = enc.encode(iter([batch]), prompt_type="query")  # one mteb 2.x batch: rows of text + image
    direct = enc.model.encode(
        [{"text": "a red cat", "image": image}, {"text": "the sky", "image": image}], side="query", show_progress=False
    )
    np.testing.assert_allclose(fused, direct, atol=1e-5)
    np.testing.assert_allclose(enc.get_fused_embeddings(["a red cat"], [hwc]), direct[:1], atol=1e-5)
    loader_like = [torch.from_numpy(np.stack([hwc, hwc])).permute(0, 3, 1, 2).float() / 255]  # MIEB 1.x batches
    np.testing.assert_allclose(
        enc.get_image_embeddings(loader_like), enc.get_image_embeddings([image, image]), atol=1e-4
    )


def test_mteb_evaluates_a_meta_by_loading_it(mteb, lm, tmp_path):
    """``mteb.evaluate(meta, ...)`` loads the model through the meta's loader (the ``mteb.get_model`` route)."""
    from mteb.mocks.mock_tasks import MockSTSTask

    meta = mteb_adapter.model_meta(f"base:{lm}", device="cpu", name="genrep/by-meta")
    result = mteb.evaluate(meta, MockSTSTask(), cache=mteb.ResultCache(tmp_path / "c"), show_progress_bar=False)
    assert np.isfinite(_scores(result)["MockSTSTask"])
    assert (tmp_path / "c" / "results" / "genrep__by-meta" / meta.revision / "MockSTSTask.json").is_file()


def test_eval_command_runs_mteb_tasks(mteb, lm, tmp_path, capsys):
    """``genrep lco eval --task mteb:NAME``: mteb's offline mock tasks by class name, scores in metrics.json,
    mteb's results under --out/mteb/ by the model's name and revision; a task the model cannot embed is a
    one-line error with exit code 2, and an unknown task name too."""
    from genrep.cli import main

    main(["lco", "eval", "--model", f"base:{lm}", "--task", "mteb:MockSTSTask", "--out", str(tmp_path / "e")])
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    task = m["tasks"]["mteb:MockSTSTask"]
    assert np.isfinite(m["main_score"]) and task["mteb_model"] == "genrep/lm" and len(task["mteb_revision"]) == 12
    stored = list((tmp_path / "e" / "mteb").rglob("MockSTSTask.json"))
    assert len(stored) == 1 and task["mteb_revision"] in str(stored[0]) and "genrep__lm" in str(stored[0])
    for bad, message in (
        ("mteb:MockImageClassificationTask", "needs image input"),
        ("mteb:NoSuchTask", "mteb has no task of that name"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["lco", "eval", "--model", f"base:{lm}", "--task", bad, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.count("\n") == 0 and message in err, err
