"""An inspector over a bank filled the way a DSL fills one: `schoolgate hashes add` on a file."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.pipeline.engine import Inspector
from tests.support.imagery import encode, skimage_photo


def banked_inspector(
    data_dir: Path,
    banked: Image.Image | Sequence[Image.Image],
    robust_config: str = "",
    bank: str = "incident-test",
) -> Inspector:
    """An inspector (no classifier) whose bank `bank` holds `banked` (one picture or several),
    added through the CLI with `banks.robust` set to `robust_config` (YAML lines, indented four
    spaces)."""
    from schoolgate.cli import app as cli
    from schoolgate.config import load_config

    data_dir.mkdir()
    config_path = data_dir / "schoolgate.yaml"
    robust = f"banks:\n  robust:\n{robust_config}" if robust_config else ""
    config_path.write_text(f"classifier:\n  models: []\n{robust}")
    pictures = [banked] if isinstance(banked, Image.Image) else list(banked)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCHOOLGATE_DATA_DIR", str(data_dir))
        patch.delenv("SCHOOLGATE_CONFIG", raising=False)
        for number, picture in enumerate(pictures):
            item = data_dir / f"banked-{number}.jpg"
            item.write_bytes(encode(picture, "JPEG", quality=92))
            command = ["hashes", "add", str(item), "--bank", bank, "--config", str(config_path)]
            assert cli.main(command) == 0
        return Inspector.from_config(load_config(config_path), with_audit=False)


@contextmanager
def opened_inspector(data_dir: Path, banked: Image.Image | Sequence[Image.Image]
                     ) -> Iterator[Inspector]:  # fmt: skip
    """`banked_inspector(data_dir, banked)`, closed on leaving."""
    inspector = banked_inspector(data_dir, banked)
    try:
        yield inspector
    finally:
        inspector.close()


def photo_inspector(*names: str) -> Callable[..., Iterator[Inspector]]:
    """A module-scoped fixture named `inspector`: `opened_inspector` over these scikit-image
    photos (`inspector = photo_inspector("rocket", "astronaut")` in a test module)."""

    @pytest.fixture(scope="module", name="inspector")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspector]:
        pictures = [skimage_photo(name) for name in names]
        with opened_inspector(tmp_path_factory.mktemp("banked") / "data", pictures) as inspector:
            yield inspector

    return fixture
