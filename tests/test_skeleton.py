import torch
from comfyui_gendeg.core.image import from_comfy, restore_channels, to_comfy, to_rgb
from comfyui_gendeg.core.intensity import measure_intensity


def test_layout_round_trip_keeps_alpha_and_grey():
    for c in (1, 2, 3, 4):
        img = torch.rand(2, 5, 7, c)
        x = from_comfy(img)
        rgb, layout = to_rgb(x)
        assert rgb.shape == (2, 3, 5, 7)
        back = to_comfy(restore_channels(rgb, layout))
        assert back.shape == img.shape
        assert torch.allclose(back, img, atol=1e-6)


def test_intensity_at_native_size_is_mean_and_std_of_abs_difference():
    a = torch.rand(1, 3, 256, 256)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    mu, sigma = measure_intensity(a, b, size=None, quantize=False)
    d = (a - b).abs()
    assert torch.allclose(mu, d.mean().reshape(1), atol=1e-6)
    assert torch.allclose(sigma, d.std(unbiased=False).reshape(1), atol=1e-6)
