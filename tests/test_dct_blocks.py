import numpy as np
import pytest
import scipy.fft
import torch

from freres_lmms.core.base import CompressionError
from freres_lmms.core.blocks import block_index, keep_by_blocks
from freres_lmms.core.dct import dct, dct2, dct_basis, idct, idct2


@pytest.mark.parametrize("shape, dim", [((16, 5), 0), ((3, 7, 4), 1), ((2, 9), -1), ((1, 1), 0)])
def test_dct_matches_scipy_ortho(shape, dim):
    x = torch.randn(shape, dtype=torch.float64)
    ours = dct(x, dim)
    reference = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=dim)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(idct(ours, dim).numpy(), x.numpy(), atol=1e-5)
    np.testing.assert_allclose(idct(torch.as_tensor(reference), dim).numpy(),
                               scipy.fft.idct(reference, type=2, norm="ortho", axis=dim), atol=1e-5)


def test_basis_is_orthonormal_and_low_pass_inverse():
    c = dct_basis(12)
    torch.testing.assert_close(c @ c.T, torch.eye(12), atol=1e-5, rtol=0)
    x = torch.randn(4, 12)
    kept = dct(x)[:, :3]  # low-pass: the first 3 coefficients, back at full length
    reference = scipy.fft.idct(np.pad(kept.numpy(), ((0, 0), (0, 9))), type=2, norm="ortho", axis=-1)
    np.testing.assert_allclose(idct(kept, size=12).numpy(), reference, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        idct(dct(x), size=5)


def test_dct2_matches_scipy_and_crops_to_a_smaller_grid():
    x = torch.randn(2, 6, 8)
    reference = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(1, 2))
    np.testing.assert_allclose(dct2(x).numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(idct2(dct2(x)).numpy(), x.numpy(), atol=1e-5)
    small = idct2(dct2(x)[:, :3, :4])  # Fourier-VLM: the low block, inverse at its own size
    assert small.shape == (2, 3, 4)
    np.testing.assert_allclose(small.numpy(), scipy.fft.idctn(reference[:, :3, :4], type=2, norm="ortho", axes=(1, 2)), atol=1e-5)


def test_paper_anchor_keeps_512_of_576_one_drop_per_block():
    energy = torch.rand(8, 24, 24)
    keep = keep_by_blocks(energy, 512, block=3)
    assert keep.shape == (8, 24, 24) and (keep.flatten(1).sum(1) == 512).all()
    blocks = block_index(24, 24, 3)
    for a in range(8):
        dropped = (~keep[a]).nonzero()
        assert len({int(blocks[y, x]) for y, x in dropped}) == 64  # one per block
        for y, x in dropped:  # and it is its block's weakest token
            same = blocks == blocks[y, x]
            assert energy[a, y, x] == energy[a][same].min()


@pytest.mark.parametrize("h, w, keep", [(7, 10, 50), (7, 10, 0), (7, 10, 70), (5, 5, 17), (2, 3, 1)])
def test_any_grid_any_count_drops_evenly(h, w, keep):
    energy = torch.rand(3, h, w)
    mask = keep_by_blocks(energy, keep, block=3)
    assert (mask.flatten(1).sum(1) == keep).all()
    blocks = block_index(h, w, 3).flatten()
    sizes = torch.bincount(blocks)
    for row in (~mask).flatten(1):
        drops = torch.bincount(blocks[row], minlength=len(sizes))
        # rounds: no block loses a k-th token while another block that still has tokens lost fewer than k-1
        left = sizes - drops
        assert (drops[left > 0] >= drops.max() - 1).all()


def test_block_pruning_errors():
    with pytest.raises(CompressionError, match="cannot keep 10 tokens of a 3x3 grid"):
        keep_by_blocks(torch.rand(3, 3), 10)
    with pytest.raises(CompressionError, match="block size"):
        keep_by_blocks(torch.rand(3, 3), 2, block=0)


def test_within_a_round_the_weakest_blocks_lose_first():
    energy = torch.rand(6, 6) + 1.0
    energy[0, 0], energy[5, 5] = 0.1, 0.2  # block 0's and block 3's weakest tokens are the two lowest
    mask = keep_by_blocks(energy, 34, block=3)
    assert (~mask).nonzero().tolist() == [[0, 0], [5, 5]]
