"""The engine: plain PyTorch, no ComfyUI import anywhere below here.

Functions take plain arguments (tensors ``[B,C,H,W]``, a ``torch.device``, a dtype, a
``progress(i, n)`` callable) and never probe for a host.
"""
