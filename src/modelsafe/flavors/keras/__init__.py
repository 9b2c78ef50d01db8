"""The Keras 3 / TensorFlow flavor (``flavor``) and its parts.

``config`` (reading model configs without importing anything from them), ``save`` (save-time
checks of custom code), ``savedmodel`` (SavedModel inference endpoints), ``legacy`` (``.h5``,
Keras 2 ``.keras`` and SavedModel files for ``convert``). Importing this package imports no Keras.
"""
