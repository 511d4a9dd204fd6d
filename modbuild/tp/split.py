"""Load a full (single-process) state dict into a tensor-parallel model, this rank's slice of each split tensor,
through the model's own TP mappings; every slice must fit the TP layer it feeds. Used by the TP check's ranks and
by the training engine."""

from __future__ import annotations

import numpy as np

TP_DEGREE = 2


def split_axis(local_shape: list[int], full_shape: list[int], degree: int = TP_DEGREE) -> int | None:
    """The axis along which `local_shape` is a `degree`-way split of `full_shape`; None when they are equal."""
    diff = [i for i, (a, b) in enumerate(zip(local_shape, full_shape)) if a != b]
    if not diff:
        return None
    if len(diff) != 1 or local_shape[diff[0]] * degree != full_shape[diff[0]]:
        raise AssertionError(f"TP shape {local_shape} is not a {degree}-way split of {full_shape}")
    return diff[0]


def load_split(model, full_state: dict[str, np.ndarray], actions: dict, degree: int = TP_DEGREE) -> int:
    """Load this rank's split of the full checkpoint; every split must match the TP layer it feeds. Returns how
    many tensors were split."""
    import paddle

    local_state = model.state_dict()
    if set(local_state) != set(full_state):
        raise AssertionError(f"TP/reference state dicts differ: {sorted(set(local_state) ^ set(full_state))}")
    split = 0
    for name, tensor in local_state.items():
        value = actions[name](full_state[name]) if name in actions else full_state[name]
        if list(value.shape) != list(tensor.shape):
            raise AssertionError(f"{name}: split checkpoint shape {list(value.shape)} != TP param {tensor.shape}")
        expect_split = split_axis(list(tensor.shape), list(full_state[name].shape), degree) is not None
        if expect_split != (name in actions):
            raise AssertionError(f"{name}: TP layer split={expect_split} but the TP mappings say {name in actions}")
        tensor.set_value(paddle.to_tensor(value))
        split += expect_split
    return split
