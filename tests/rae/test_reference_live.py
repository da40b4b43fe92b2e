"""Parity with the reference code run live, at the released sizes (slow; not in CI).

Needs a checkout of bytetriper/RAE and what its code imports (timm, einops, torchdiffeq, omegaconf;
see tests/fixtures/make_rae_reference_fixtures.py): ``GENREP_RAE_REFERENCE=/path/to/RAE``. A
random-weight DiT^DH-XL is built and saved by the reference classes in its released
configuration, converted by genrep, and both run the same input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

REFERENCE = os.environ.get("GENREP_RAE_REFERENCE")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REFERENCE is None, reason="set GENREP_RAE_REFERENCE to a bytetriper/RAE checkout"),
]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def reference_code():
    sys.path.insert(0, str(FIXTURES))
    import torchvision_standin

    torchvision_standin.install()
    sys.path.insert(0, str(Path(str(REFERENCE)) / "src"))
    yield Path(str(REFERENCE))


def test_released_ditdh_xl_converts_and_reproduces_the_reference(reference_code, tmp_path):
    sys.path.insert(0, str(FIXTURES))
    from make_rae_reference_fixtures import _randomise
    from stage2.models.DDT import DiTwDDTHead

    from genrep.rae.convert_stage2 import load_reference_dit

    doc = yaml.safe_load((reference_code / "configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B_AG.yaml").read_text())
    block = dict(doc["stage_2"])
    torch.manual_seed(0)
    ref = DiTwDDTHead(**block["params"])
    _randomise(ref, seed=0)
    ref.eval()
    torch.save({"ema": ref.state_dict()}, tmp_path / "stage2_model.pt")
    block["ckpt"] = "stage2_model.pt"
    model, _ = load_reference_dit(block, tmp_path, "DiTDH-XL")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 768, 16, 16, generator=gen)
    t, y = torch.tensor([0.37]), torch.tensor([207])
    with torch.no_grad():
        expected = ref(x, t, y)
        del ref
        got = model(x, t, y)
    diff = float((got - expected).abs().max())
    print(f"DiT^DH-XL max abs diff {diff:.3g} (outputs up to {float(expected.abs().max()):.3g})")
    assert diff <= 1e-5
