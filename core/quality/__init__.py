"""Quality: full-reference and no-reference metrics, the quality perceiver.

Start with :func:`.api.score` (every metric by name, batched) and the loaders in :mod:`.api`.
Modules: :mod:`.fullref` (PSNR, SSIM, MS-SSIM), :mod:`.lpips`, :mod:`.dists`, :mod:`.piqe`,
:mod:`.niqe` (with :mod:`.matlab`: MATLAB rgb2gray / imfilter / imresize), :mod:`.clip_iqa` (on
:mod:`.clip_resnet`, the published ResNet-50 configuration, or :mod:`.clip`, a ViT variant),
:mod:`.perceiver` (prompt learning), :mod:`.report`.
"""
