"""`BasicModule`: the hooks the engine strings together (FleetX's model-integration spec), and `CausalLMModule`,
which makes any generated causal LM trainable with them.

The engine owns the loop; a module says what one step is. ``self.model`` is the network; the engine may replace
it with fleet's distributed wrapper, so hooks call ``self.model(...)`` and reach the bare network (its config,
``compute_loss``) through ``self.network``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle

from modbuild.engine.config import Config
from modbuild.engine.distributed import DistInfo, init
from modbuild.engine.tp_state import TPLayout


class BasicModule:
    """Subclass and implement ``get_model``, ``training_step`` and ``configure_optimizers``; the rest have defaults."""

    tp_layout: TPLayout | None = None  # set by a tensor-parallel module: how its checkpoints are gathered and split

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dist: DistInfo = init(config.Distributed, config.Global.seed)
        self.model: paddle.nn.Layer = self.get_model()

    @property
    def network(self) -> paddle.nn.Layer:
        """``self.model`` without fleet's wrapper (DataParallel / TensorParallel keep the layer as ``_layers``)."""
        return getattr(self.model, "_layers", self.model)

    def get_model(self) -> paddle.nn.Layer:
        raise NotImplementedError

    def pretreating_batch(self, batch: Any) -> Any:
        """Turn what the data yields into what the step hooks take (here: numpy rows -> a tensor)."""
        return batch

    def training_step(self, batch: Any) -> paddle.Tensor:
        """The loss of one micro-batch (the engine scales it for accumulation and backpropagates it)."""
        raise NotImplementedError

    def training_step_end(self, log_dict: dict[str, float]) -> None:
        """Called every ``logging_freq`` steps with epoch, step, loss, lr, tokens_per_s, elapsed."""

    def validation_step(self, batch: Any) -> paddle.Tensor:
        return self.training_step(batch)

    def validation_step_end(self, log_dict: dict[str, float]) -> None:
        """Called after each evaluation with step and eval_loss."""

    def test_step(self, batch: Any) -> Any:
        return self.validation_step(batch)

    def test_step_end(self, log_dict: dict[str, Any]) -> None:
        """Called after each predicted batch."""

    def configure_optimizers(self) -> tuple[paddle.optimizer.Optimizer, paddle.optimizer.lr.LRScheduler]:
        raise NotImplementedError


class CausalLMModule(BasicModule):
    """A generated ``*ForCausalLM`` (``Model.name``) trained on next-token cross entropy."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.vocab_size = int(self.network.config.vocab_size)

    def get_model(self) -> paddle.nn.Layer:
        from modbuild.engine.build import build_model

        model, self.tp_layout = build_model(self.config, self.dist)
        return model

    def pretreating_batch(self, batch: np.ndarray) -> paddle.Tensor:
        return paddle.to_tensor(batch)

    def _forward(self, batch: paddle.Tensor) -> tuple[Any, paddle.Tensor]:
        """The model's output and its full-vocabulary logits."""
        out = self.model(batch, return_dict=True)
        logits = out.logits
        if self.dist.mp_degree > 1 and logits.shape[-1] != self.vocab_size:
            # vocab-parallel logits: gather them (differentiably); ParallelCrossEntropy has no CPU kernel
            from paddle.distributed.fleet.layers.mpu import mp_ops

            logits = mp_ops._c_concat(logits, group=self.dist.mp_group)
        return out, logits

    def training_step(self, batch: paddle.Tensor) -> paddle.Tensor:
        out, logits = self._forward(batch)
        loss = self.network.compute_loss(logits, batch)
        if getattr(out, "aux_loss", None) is not None:  # MoE router balance, as the models' own loss adds it
            loss = loss + self.network.config.router_aux_loss_coef * out.aux_loss
        return loss

    def training_step_end(self, log_dict: dict[str, float]) -> None:
        if self.dist.rank == 0 and not self.config.Engine.progress_bar:
            print(
                f"epoch {log_dict['epoch']} step {log_dict['step']} loss {log_dict['loss']:.4f} "
                f"lr {log_dict['lr']:.3e} {log_dict['tokens_per_s']:.0f} tokens/s {log_dict['elapsed']:.1f} s",
                flush=True,
            )

    def validation_step_end(self, log_dict: dict[str, float]) -> None:
        if self.dist.rank == 0 and not self.config.Engine.progress_bar:
            print(f"step {log_dict['step']} eval_loss {log_dict['eval_loss']:.4f}", flush=True)

    def test_step(self, batch: paddle.Tensor) -> dict[str, Any]:
        """The loss and each position's greedy next token."""
        _, logits = self._forward(batch)
        loss = self.network.compute_loss(logits, batch)
        return {"loss": float(loss.item()), "next_tokens": logits.argmax(axis=-1).numpy()}

    def configure_optimizers(self) -> tuple[paddle.optimizer.Optimizer, paddle.optimizer.lr.LRScheduler]:
        """AdamW without decay on biases and norm weights (PaddleNLP Trainer's rule), linear warm-up then cosine,
        global-norm clipping."""
        from modbuild.optim import paddle_adamw

        opt = self.config.Optimizer
        horizon = opt.decay_steps or self.config.Engine.max_steps
        cosine = paddle.optimizer.lr.CosineAnnealingDecay(
            opt.lr, T_max=max(1, horizon - opt.warmup_steps), eta_min=opt.min_lr
        )
        sched = cosine
        if opt.warmup_steps:
            sched = paddle.optimizer.lr.LinearWarmup(
                cosine, warmup_steps=opt.warmup_steps, start_lr=0.0, end_lr=opt.lr
            )
        optimizer, _ = paddle_adamw(
            self.network,
            sched,
            beta1=opt.beta1,
            beta2=opt.beta2,
            epsilon=opt.epsilon,
            weight_decay=opt.weight_decay,
            clip=opt.grad_clip,
        )
        return optimizer, sched
