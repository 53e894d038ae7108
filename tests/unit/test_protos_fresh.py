"""The committed gRPC stubs must be exactly what `make protos` generates from protos/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_not_stale(tmp_path):
    gen = _load_generator()
    fresh = {p.relative_to(tmp_path): p.read_text() for p in gen.generate(tmp_path)}
    committed_root = ROOT / "packages" / "w2a-client" / "src" / "w2a_client" / "proto"
    assert fresh, "generator produced nothing"
    for rel, text in fresh.items():
        committed = committed_root / rel
        assert committed.exists(), f"{rel} is not committed; run `make protos`"
        assert committed.read_text() == text, f"{rel} is stale; run `make protos`"
