"""Norms over a projection whose features are split over tensor-parallel ranks (OLMo-2's q/k norms).

OLMo-2 normalises the whole q (and k) projection, all heads at once, before splitting it into heads. Under TP a
rank holds only its heads' columns of ``q_proj``, so the norm's mean square needs the other ranks' columns too.
``ShardedRMSNorm`` keeps its weight split like the projection (the TP plan gives it the projection's ``colwise``
style, so each rank owns its slice and its gradient), and sums the squares over the model-parallel group: an
all-reduce forward and an all-reduce backward, since every rank's output depends on every rank's squares. Without
TP it is a plain RMSNorm over the last axis.
"""

from __future__ import annotations

import paddle
from paddle import nn
from paddle.autograd import PyLayer
from paddle.distributed import fleet

from modbuild.nn.parallel import tensor_parallel_enabled


class _SumOverRanks(PyLayer):
    """All-reduce (sum) forward; all-reduce backward: each rank's loss depends on the sum, so the gradient of every
    rank's input is the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx, x: paddle.Tensor, group) -> paddle.Tensor:
        ctx.group = group
        out = x.clone()
        paddle.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: paddle.Tensor) -> paddle.Tensor:
        grad = grad.clone()
        paddle.distributed.all_reduce(grad, group=ctx.group)
        return grad


def sum_over_ranks(x: paddle.Tensor, config) -> paddle.Tensor:
    """``x`` summed over the model-parallel group, differentiably; ``x`` itself without tensor parallelism."""
    if not tensor_parallel_enabled(config):
        return x
    return _SumOverRanks.apply(x, fleet.get_hybrid_communicate_group().get_model_parallel_group())


class ShardedRMSNorm(nn.Layer):
    """RMSNorm over ``size`` features that TP splits evenly over ranks: this rank's weight is ``size / tp``."""

    def __init__(self, size: int, eps: float, config):
        super().__init__()
        self.config, self.size = config, size
        local = size // config.tensor_parallel_degree
        self.weight = self.create_parameter([local], default_initializer=nn.initializer.Constant(1.0))
        self.weight.is_distributed = tensor_parallel_enabled(config)  # a split parameter for the global-norm clip
        self.variance_epsilon = eps

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.astype("float32")
        if tensor_parallel_enabled(self.config):
            squares = sum_over_ranks(hidden_states.pow(2).sum(-1, keepdim=True), self.config)
            variance = squares / self.size
        else:
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * paddle.rsqrt(variance + self.variance_epsilon)
        # OLMo-2 multiplies by the weight before casting back (Llama casts first).
        return (self.weight * hidden_states).astype(input_dtype)
