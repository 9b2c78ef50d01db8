"""Running transformers objects for modelsafe: model inputs, ``no_grad``, logits, pipeline outputs as arrays.

A model takes what its preprocessor returns (a ``BatchEncoding``/``BatchFeature`` or any
mapping of tensors or arrays: passed as keyword arguments on the model's device), or one
tensor or array (its ``main_input_name``: ``input_ids``, ``pixel_values``...). An
encoder-decoder model given no decoder input gets the decoder start token, so its output is
the logits of the first decoding step. The output is the model's ``logits`` (else its
``last_hidden_state``, else its first output) as a numpy array.

A pipeline returns what it returns (a list of dicts); for verification its outputs are
flattened to one array per field (``predict.label``, ``predict.score``, ``predict.0.token_str``
for nested lists), with empty text or NaN where a row lacks a field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from modelsafe.errors import FlavorError

if TYPE_CHECKING:
    import torch

__all__ = ["model_output", "pipeline_outputs", "run_model"]

#: Output fields, in the order the main output is looked for.
MAIN_OUTPUTS = ("logits", "last_hidden_state", "pooler_output")


def _first_tensor(model: Any) -> "torch.Tensor | None":
    for tensor in model.parameters():
        return tensor
    return None


def model_inputs(model: Any, x: Any) -> dict[str, Any]:
    """Keyword inputs for ``model``: tensors on its device, floating inputs in its dtype."""
    import torch

    reference = _first_tensor(model)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None

    def one(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype.kind in "USM":
                raise FlavorError(
                    f"A transformers model takes numbers, but got an array of {value.dtype}. Save it with its "
                    "tokenizer (ms.save(model, path, preprocess=tokenizer, sample=[...])) so raw text is tokenized, "
                    "or pass token ids.", dtype=str(value.dtype))
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and dtype is not None and value.dtype != dtype:
                value = value.to(dtype)
            return value.to(device)
        return value

    if isinstance(x, Mapping):
        kwargs = {str(k): one(v) for k, v in x.items()}
    elif isinstance(x, (str, list, tuple)) and _texts(x):
        raise FlavorError(
            "This artifact's model takes token ids, but raw text was given and no tokenizer was saved with it. Save "
            "the model with its tokenizer: ms.save(model, path, preprocess=tokenizer, sample=[...]).")
    else:
        kwargs = {getattr(model, "main_input_name", "input_ids"): one(x)}
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and not ({"decoder_input_ids", "decoder_inputs_embeds",
                                                              "labels"} & set(kwargs)):
        kwargs["decoder_input_ids"] = _decoder_start(model, kwargs)
    return kwargs


def _texts(x: Any) -> bool:
    return isinstance(x, str) or bool(x) and all(isinstance(v, str) for v in x)


def _decoder_start(model: Any, kwargs: Mapping[str, Any]) -> "torch.Tensor":
    import torch

    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise FlavorError(
            f"{type(model).__name__} is an encoder-decoder model and its config has no decoder_start_token_id, so "
            "the first decoder step cannot be run. Pass decoder_input_ids with the input, or set "
            "config.decoder_start_token_id before saving.")
    batch = next((v.shape[0] for v in kwargs.values() if hasattr(v, "shape") and len(v.shape)), 1)
    reference = _first_tensor(model)
    return torch.full((batch, 1), int(start), dtype=torch.long, device=reference.device if reference is not None
                      else "cpu")


def model_output(output: Any) -> Any:
    """The main output (``logits``, else ``last_hidden_state``...) of a model call, as numpy."""
    import torch

    value = output
    if isinstance(output, Mapping):
        value = next((output[k] for k in MAIN_OUTPUTS if output.get(k) is not None),
                     next((v for v in output.values() if isinstance(v, torch.Tensor)), None))
    elif isinstance(output, (tuple, list)):
        value = output[0] if output else None
    if not isinstance(value, torch.Tensor):
        raise FlavorError(f"The model returned {type(output).__name__} without a tensor output (looked for "
                          f"{', '.join(MAIN_OUTPUTS)}), so there is nothing to return as predictions.")
    tensor = value.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def run_model(model: Any, x: Any) -> Any:
    """The model's main output on ``x``, under ``no_grad``, in eval mode (its mode is restored)."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model_output(model(**model_inputs(model, x)))
    finally:
        if training:
            model.train()


# ---------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}.{i}", out)
    elif hasattr(value, "shape") and not np.isscalar(value):
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        for index, item in np.ndenumerate(array):
            out[f"{prefix}.{'.'.join(map(str, index))}" if index else prefix] = item.item()
    else:
        out[prefix] = value


def pipeline_outputs(result: Any, rows: int) -> dict[str, np.ndarray]:
    """A pipeline's result on ``rows`` inputs as one array per field, rows first."""
    per_row = result if isinstance(result, list) and len(result) == rows else [result]
    flat: list[dict[str, Any]] = []
    for row in per_row:
        fields: dict[str, Any] = {}
        _flatten(row, "predict", fields)
        flat.append(fields)
    names = sorted({name for fields in flat for name in fields})
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        values = [fields.get(name) for fields in flat]
        if all(isinstance(v, str) or v is None for v in values):
            arrays[name] = np.asarray(["" if v is None else v for v in values])
        elif all(isinstance(v, (bool, np.bool_)) or v is None for v in values) and None not in values:
            arrays[name] = np.asarray(values, dtype=bool)
        elif all(isinstance(v, (int, float, np.number)) or v is None for v in values):
            # Scores are computed in the model's float32 (or lower) precision: compared with its tolerance.
            floats = None in values or any(isinstance(v, (float, np.floating)) for v in values)
            arrays[name] = np.asarray([np.nan if v is None else v for v in values],
                                      dtype=np.float32 if floats else np.int64)
        else:
            arrays[name] = np.asarray([repr(v) for v in values])
    return arrays
