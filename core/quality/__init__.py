"""Quality: full-reference and no-reference metrics, the quality perceiver.

Start with :func:`.api.score` (every metric by name, batched) and the loaders in :mod:`.api`.
Modules: :mod:`.fullref` (PSNR, SSIM, MS-SSIM), :mod:`.lpips`, :mod:`.dists`, :mod:`.piqe`,
:mod:`.niqe`, :mod:`.clip` + :mod:`.clip_iqa`, :mod:`.perceiver` (prompt learning), :mod:`.report`.
"""
