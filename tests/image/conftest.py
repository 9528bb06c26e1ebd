"""Shared inputs for the image tests: a tiny servable model, a node config, a tiny wheel + lock."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.measure import source_root
from image.build import BuildInputs
from image.deps import lock_from_wheels
from node.model_files import write_tiny_model
from tests.image.image_helpers import make_tiny_gguf, make_wheel

EPOCH = 1767225600
REPO = Path(__file__).resolve().parents[2]
HUSHCC = [sys.executable, "-m", "app"]
# The configuration the test images carry (tests start their nodes with --host/--port flags).
NODE_CONFIG = '# hushcc test node\ntee = "simulated"\nmax_num_seqs = 4\n'



@dataclass(frozen=True)
class Inputs:
    model: Path
    wheels: Path
    lock: Path
    gguf: Path
    config: Path

    def build_inputs(self, source: Path | None = None) -> BuildInputs:
        return BuildInputs(source or source_root(), self.model, EPOCH, self.lock, self.wheels,
                           self.config)

    def flags(self) -> list[str]:
        return ["--model", str(self.model), "--lock", str(self.lock), "--wheels",
                str(self.wheels), "--source", str(source_root()), "--config", str(self.config),
                "--source-date-epoch", str(EPOCH)]


@pytest.fixture(scope="session")
def image_inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    base = tmp_path_factory.mktemp("image-inputs")
    model = write_tiny_model(base / "model")  # with its tokenizer: a node can serve it
    config = base / "node.toml"
    config.write_text(NODE_CONFIG)
    wheels = base / "wheels"
    make_wheel(wheels)
    lock = base / "requirements.lock"
    lock.write_text(lock_from_wheels(wheels))
    return Inputs(model, wheels, lock, make_tiny_gguf(base / "tiny.gguf"), config)


def hushcc_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}
