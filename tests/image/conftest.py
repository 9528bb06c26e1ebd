"""Shared inputs for the image tests: a tiny model, a tiny wheel and its hash lock."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.measure import source_root
from image.build import BuildInputs
from image.deps import lock_from_wheels
from tests.image.image_helpers import make_tiny_gguf, make_tiny_model, make_wheel

EPOCH = 1767225600
REPO = Path(__file__).resolve().parents[2]
HUSHCC = [sys.executable, "-m", "app"]


@dataclass(frozen=True)
class Inputs:
    model: Path
    wheels: Path
    lock: Path
    gguf: Path

    def build_inputs(self, source: Path | None = None) -> BuildInputs:
        return BuildInputs(source or source_root(), self.model, EPOCH, self.lock, self.wheels)

    def flags(self) -> list[str]:
        return ["--model", str(self.model), "--lock", str(self.lock), "--wheels",
                str(self.wheels), "--source", str(source_root()),
                "--source-date-epoch", str(EPOCH)]


@pytest.fixture(scope="session")
def image_inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    base = tmp_path_factory.mktemp("image-inputs")
    model = make_tiny_model(base / "model")
    wheels = base / "wheels"
    make_wheel(wheels)
    lock = base / "requirements.lock"
    lock.write_text(lock_from_wheels(wheels))
    return Inputs(model, wheels, lock, make_tiny_gguf(base / "tiny.gguf"))


def hushcc_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}
