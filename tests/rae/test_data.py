import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from genrep.core.errors import UserError
from genrep.rae.data import Skipped, collate_skip, load_images


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "dogs" / "empty.png").write_bytes(b"")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_layout_and_corrupt_files_are_skipped_and_counted(tmp_path, caplog):
    ds = load_images(str(_folder(tmp_path)), size=32)
    assert ds.class_names == ("cats", "dogs") and len(ds) == 8  # 6 good + 2 corrupt, no txt
    skipped = Skipped()
    with caplog.at_level(logging.WARNING, logger="genrep.rae.data"):
        batches = [b for b in DataLoader(ds, batch_size=3, collate_fn=collate_skip(skipped)) if b is not None]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (6, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert skipped.count == 2
    assert "broken.jpg" in caplog.text and "empty.png" in caplog.text


def test_fashion_mnist_items_are_rgb_in_unit_range():
    ds = load_images("fashion-mnist", "test", size=28, limit=10)
    x, y = ds[0]
    assert len(ds) == 10 and x.shape == (3, 28, 28) and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and 0 <= x.min() and x.max() <= 1
    big, _ = load_images("fashion-mnist", "test", size=56, limit=1)[0]
    assert big.shape == (3, 56, 56)


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="image folder not found"):
        load_images(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        load_images(str(tmp_path / "empty"))
