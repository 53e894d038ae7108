import json

import pytest
import torch

from w2a_models.checkpoints import (
    BLOB_NAME,
    MANIFEST_NAME,
    CheckpointError,
    load_checkpoint,
    load_module,
    pack_tensors,
    save_checkpoint,
    save_module,
    unpack_tensors,
)
from w2a_models.residual import ResidualConfig, ResidualPolicy


def test_round_trip_keeps_tensors_and_manifest(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64)}
    manifest = save_checkpoint(tmp_path, tensors, version="7", parent_version="6",
                               config={"scale": 0.2})
    loaded, got = load_checkpoint(tmp_path)
    assert set(loaded) == {"w", "b"}
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    assert got.version == "7" and got.parent_version == "6" and got.config == {"scale": 0.2}
    assert got.sha256 == manifest.sha256 and got.tensors == {"w": [3, 4], "b": [5]}


def test_module_round_trip(tmp_path):
    cfg = ResidualConfig(obs_dim=6)
    src = ResidualPolicy(cfg)
    torch.nn.init.normal_(src.head.weight)
    save_module(tmp_path, src, version="1")
    dst = ResidualPolicy(cfg)
    load_module(tmp_path, dst)
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k


def test_tampered_blob_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(16)}, version="1")
    blob = bytearray((tmp_path / BLOB_NAME).read_bytes())
    blob[-1] ^= 0xFF  # flip bits inside the tensor data: same length, different bytes
    (tmp_path / BLOB_NAME).write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(tmp_path)


def test_truncated_blob_and_bad_manifest_are_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(16)}, version="1")
    blob = (tmp_path / BLOB_NAME).read_bytes()
    (tmp_path / BLOB_NAME).write_bytes(blob[:-8])
    with pytest.raises(CheckpointError, match="bytes but the manifest says"):
        load_checkpoint(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no manifest"):
        load_checkpoint(tmp_path / "missing")


def test_manifest_edited_to_match_a_forged_blob_still_checks_shapes(tmp_path):
    _blob, manifest = pack_tensors({"w": torch.zeros(4)}, version="1")
    forged, forged_manifest = pack_tensors({"w": torch.zeros(5)}, version="1")
    manifest.sha256, manifest.byte_length = forged_manifest.sha256, forged_manifest.byte_length
    with pytest.raises(CheckpointError, match="shapes differ"):
        unpack_tensors(forged, manifest)


def test_wrong_module_is_refused_with_clear_error(tmp_path):
    save_module(tmp_path, ResidualPolicy(ResidualConfig(obs_dim=6)), version="1")
    with pytest.raises(CheckpointError, match="do not fit ResidualPolicy"):
        load_module(tmp_path, ResidualPolicy(ResidualConfig(obs_dim=7)))


def test_manifest_is_plain_json(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, version="3")
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["format"] == "w2a-checkpoint/1" and data["version"] == "3"


def test_a_crash_between_blob_and_manifest_leaves_a_loadable_checkpoint(tmp_path):
    import torch

    from w2a_models.checkpoints import save_checkpoint

    save_checkpoint(tmp_path, {"w": torch.zeros(3)}, "1")
    second = save_checkpoint(tmp_path, {"w": torch.ones(3)}, "2")
    assert second.blob != BLOB_NAME and not (tmp_path / BLOB_NAME).exists()  # old blob cleaned up
    # "kill -9" after the third blob is written, before its manifest: the second stays loadable
    from w2a_models.checkpoints import pack_tensors

    blob, manifest = pack_tensors({"w": torch.full((3,), 2.0)}, "3")
    (tmp_path / f"model-{manifest.sha256[:16]}.safetensors").write_bytes(blob)
    tensors, loaded = load_checkpoint(tmp_path)
    assert loaded.version == "2" and torch.equal(tensors["w"], torch.ones(3))
