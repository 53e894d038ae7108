import pytest
import torch
from torch import nn

from w2a_models.adapters import (
    ActionAdapter,
    ActionDecoder,
    AdapterConfig,
    Stage1Adapters,
    VideoAdapter,
)


@pytest.mark.parametrize("token_dim", [4096, 24])
def test_video_adapter_shapes(token_dim):
    cfg = AdapterConfig(token_dim=token_dim)
    out = VideoAdapter(cfg)(torch.randn(3, 5, token_dim))
    assert out.shape == (3, 256)
    # any number of latent frames per chunk maps to one vector
    assert VideoAdapter(cfg)(torch.randn(2, 1, token_dim)).shape == (2, 256)


def test_video_adapter_is_three_layer_temporal_cnn():
    cfg = AdapterConfig(token_dim=4096)
    convs = [m for m in VideoAdapter(cfg).modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 3
    assert convs[0].in_channels == 4096 and convs[-1].out_channels == 256
    assert all(c.kernel_size == (3,) for c in convs)


def test_action_adapter_is_two_layer_mlp_with_hidden_512():
    cfg = AdapterConfig(action_dim=7, chunk_size=16)
    linears = [m for m in ActionAdapter(cfg).modules() if isinstance(m, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(7 * 16, 512), (512, 256)]
    assert ActionAdapter(cfg)(torch.randn(4, 16, 7)).shape == (4, 256)


def test_decoder_reconstructs_chunk_shape():
    cfg = AdapterConfig(action_dim=4, chunk_size=8)
    assert ActionDecoder(cfg)(torch.randn(3, 256)).shape == (3, 8, 4)
    assert set(dict(Stage1Adapters(cfg).named_children())) == {"video", "action", "decoder"}


def test_adapters_reject_wrong_shapes_with_clear_errors():
    cfg = AdapterConfig(token_dim=16, action_dim=4, chunk_size=8)
    with pytest.raises(ValueError, match="16"):
        VideoAdapter(cfg)(torch.randn(2, 3, 15))
    with pytest.raises(ValueError, match="8, 4"):
        ActionAdapter(cfg)(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="embed_dim must be positive"):
        AdapterConfig(embed_dim=0)
    with pytest.raises(ValueError, match="video_kernel must be odd"):
        AdapterConfig(video_kernel=4)


def test_spatial_video_adapter_reads_maps_and_knows_where_things_are():
    import pytest
    import torch

    from w2a_models.adapters import AdapterConfig, Stage1Adapters

    cfg = AdapterConfig(token_dim=16 * 8 * 8, embed_dim=32, video_hidden=64, video_encoder="spatial")
    adapters = Stage1Adapters(cfg)
    z = adapters.video(torch.randn(5, 2, 16 * 64))
    assert z.shape == (5, 32)
    # a blob moved to another corner of the map changes the embedding (flattened, not pooled)
    a = torch.zeros(1, 2, 16, 8, 8)
    b = torch.zeros(1, 2, 16, 8, 8)
    a[..., 1, 1], b[..., 6, 6] = 3.0, 3.0
    za, zb = adapters.video(a.flatten(2)), adapters.video(b.flatten(2))
    assert not torch.allclose(za, zb, atol=1e-4)
    with pytest.raises(ValueError, match="square maps"):
        AdapterConfig(token_dim=16 * 10, video_encoder="spatial")
    with pytest.raises(ValueError, match="video_encoder"):
        AdapterConfig(video_encoder="pooled")
    with pytest.raises(ValueError, match=r"\[batch, frames, 1024\]"):
        adapters.video(torch.randn(2, 1024))
