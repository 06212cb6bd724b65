import numpy as np
import pytest

from jgi import metrics


def _gaussian_ssim_reference(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Straightforward SSIM of two single-channel images: Gaussian window, valid region."""
    half = size // 2
    g = np.exp(-0.5 * ((np.arange(size) - half) / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = k1 ** 2, k2 ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * pa * pa).sum() - ma ** 2
            vb = (w * pb * pb).sum() - mb ** 2
            cov = (w * pa * pb).sum() - ma * mb
            values.append(((2 * ma * mb + c1) * (2 * cov + c2))
                          / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_of_constant_images_has_the_closed_form():
    a = np.full((1, 16, 16, 1), 0.2, np.float32)
    b = np.full((1, 16, 16, 1), 0.6, np.float32)
    # Zero variances: SSIM = (2 u v + C1) / (u^2 + v^2 + C1) = 0.2401 / 0.4001 = 0.60010.
    # float32 E[x^2] - E[x]^2 cancellation moves it by ~6e-5 (exact in float64).
    assert metrics.ssim(a, b)[0] == pytest.approx(0.2401 / 0.4001, abs=2e-4)
    assert metrics.ssim(a, a)[0] == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_an_independent_gaussian_window_implementation():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(14, 15)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    expected = _gaussian_ssim_reference(a.astype(np.float64), b.astype(np.float64))
    got = metrics.ssim(a[None, ..., None], b[None, ..., None])[0]
    assert got == pytest.approx(expected, abs=1e-5)
    assert 0.1 < expected < 0.9  # a case that is neither trivial nor degenerate


def test_ssim_averages_channels_and_is_per_image():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
    b = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
    per_image = metrics.ssim(a, b)
    assert per_image.shape == (3,)
    per_channel = [metrics.ssim(a[:1, ..., c:c + 1], b[:1, ..., c:c + 1])[0] for c in range(3)]
    assert per_image[0] == pytest.approx(np.mean(per_channel), abs=1e-5)


def test_psnr_mse_and_asr():
    a = np.zeros((2, 8, 8, 1), np.float32)
    b = np.full((2, 8, 8, 1), 0.1, np.float32)
    np.testing.assert_allclose(metrics.mse(a, b), [0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose(metrics.psnr(a, b), [20.0, 20.0], rtol=1e-5)
    assert metrics.attack_success_rate([0.9, 0.5, 0.51, 0.1]) == 0.5  # strictly above 0.5
    summary = metrics.summarize(a, b)
    assert summary["asr"] == 0.0 and len(summary["per_victim_ssim"]) == 2
    # the authors' SSIM scales both constant images to 0: a perfect score
    assert summary["asr_authors"] == 1.0 and len(summary["per_victim_ssim_authors"]) == 2


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        metrics.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="no victims"):
        metrics.attack_success_rate([])


def test_authors_ssim_min_max_scales_each_image_over_all_channels():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 0.8, size=(16, 16)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1).astype(np.float32)

    def scaled(x):  # by hand: (x - min) / (max - min) over the whole image
        x = x.astype(np.float64)
        return (x - x.min()) / (x.max() - x.min())

    expected = _gaussian_ssim_reference(scaled(a), scaled(b))
    got = metrics.ssim_authors(a[None, ..., None], b[None, ..., None])[0]
    assert got == pytest.approx(expected, abs=1e-5)
    assert abs(expected - _gaussian_ssim_reference(a, b)) > 0.01  # scaling matters: 0.015
    # a faint copy (gain 0.3, offset 0.2) scores 1 with the authors' SSIM, not with jgi's
    x = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    faint = 0.3 * x + 0.2
    np.testing.assert_allclose(metrics.ssim_authors(x, faint), 1.0, atol=1e-5)
    assert metrics.ssim(x, faint).max() < 0.9  # measured 0.52
    # one mean and std for all channels (MNIST) changes nothing; CIFAR-10's do
    mnist = metrics.ssim_authors(x, x[::-1], [0.13] * 3, [0.31] * 3)
    np.testing.assert_allclose(mnist, metrics.ssim_authors(x, x[::-1]), atol=1e-5)
    mean, std = np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26])
    y = x * np.array([1.0, 1.0, 0.2], np.float32)  # a reconstruction with a dim channel
    cifar = metrics.ssim_authors(x, y, mean, std)
    by_hand = metrics.ssim(*(metrics.minmax_scale((v - mean) / std) for v in (x, y)))
    np.testing.assert_allclose(cifar, by_hand, atol=1e-6)
    assert np.abs(cifar - metrics.ssim_authors(x, y)).max() > 0.01
    # a constant image is scaled to zeros, not NaN
    flat = metrics.ssim_authors(np.full((1, 16, 16, 1), 0.5, np.float32), b[None, ..., None])
    assert np.isfinite(flat[0]) and flat[0] < 0.5
    with pytest.raises(ValueError, match="both mean and std"):
        metrics.ssim_authors(x, x, mean=[0.1])


def test_match_by_ssim_undoes_a_shuffle_and_scores_only_min_n_m_pairs():
    rng = np.random.default_rng(0)
    originals = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    rows, cols, s = metrics.match_by_ssim(originals, originals[perm])
    assert s.shape == (4, 4)
    np.testing.assert_array_equal(perm[cols], rows)  # each original found its copy
    ssim_pairs, psnr_pairs = metrics.matched_ssim_psnr(originals, originals[perm][:2])
    assert ssim_pairs.shape == psnr_pairs.shape == (2,)  # 2 reconstructions: 2 pairs
    np.testing.assert_allclose(ssim_pairs, 1.0, atol=1e-5)
