"""The PyTorch flavor (``flavor``) and its parts.

``tensors`` (safetensors members), ``arch`` and ``args`` (the class and constructor arguments),
``load`` and ``report`` (building on ``meta`` and comparing key by key), ``run`` (devices and
eval mode), ``tree`` (weights-only state dicts), ``export`` (the optional ``torch.export``
program), ``legacy`` (reading ``torch.save`` files for ``convert``), ``hook`` (recording
constructor arguments once torch is imported). Importing this package imports no torch.
"""
