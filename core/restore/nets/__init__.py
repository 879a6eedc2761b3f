"""Networks of the IR-SDE family, with the official checkpoints' parameter names.

* :mod:`.irsde_unet`: the ConditionalUNet of IR-SDE and of DA-CLIP's universal restoration
  (optional degradation prompt and cross-attention on the image content embedding).
* :mod:`.refusion_nafnet`: Refusion's time-conditioned NAFNet.
* :mod:`.daclip`: DA-CLIP, an OpenCLIP ViT image tower with a zero-initialised control copy
  (and the text tower, for reading out the degradation type).
"""
