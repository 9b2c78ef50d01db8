"""The Hugging Face transformers flavor (``flavor``) and its parts.

``hub`` (importing transformers without TensorFlow, and the offline switches held during a
load), ``classes`` (class paths and the allowlist of transformers' own classes), ``model``
(a ``PreTrainedModel`` as config JSON plus torch weights), ``preprocessors`` (tokenizers,
processors, image processors and feature extractors as their ``save_pretrained`` files),
``pipeline`` (a ``Pipeline`` as one unit), ``run`` (inputs, ``no_grad``, logits and pipeline
outputs as arrays), ``folder`` (a ``save_pretrained`` folder described without importing
anything, for ``convert`` and ``doctor``), ``convert`` and ``export`` (to and from that folder).
Importing this package imports no framework.
"""
