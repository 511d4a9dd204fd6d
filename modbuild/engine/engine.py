"""`EagerEngine(module, config)`: fit / evaluate / predict / save / load around a `BasicModule`'s hooks.

Per step: the batch is split into ``accumulate_steps`` micro-batches, each loss divided by their number before
backward (under DP, fleet's DataParallel all-reduces only on the last one); the optimizer clips by global norm
and steps; the LR scheduler steps (skipped when the fp16 loss scaler found an inf). The logged loss is the
mean micro-batch loss, averaged over the data-parallel group: the loss of the global batch.

Resume is exact: a checkpoint saved after step N holds the data position after N batches, so the resumed run's
first batch is N+1's (FleetX re-trained batch N), and every RNG and the scaler are restored too.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from modbuild.engine import checkpoint, data, tp_state
from modbuild.engine.config import Config, ConfigError
from modbuild.engine.distributed import barrier, mean_over_dp, wrap
from modbuild.engine.metrics import Metrics
from modbuild.engine.module import BasicModule


class _Clock:
    """tokens/s over the training steps since the last log (evaluation and saving excluded), and the wall-clock
    seconds since fit began."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step, self.window_s, self.window_steps = tokens_per_step, 0.0, 0
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def step(self):
        start = time.perf_counter()
        yield
        self.window_s += time.perf_counter() - start
        self.window_steps += 1

    def window(self) -> dict[str, float]:
        rate = self.tokens_per_step * self.window_steps / max(self.window_s, 1e-9)
        self.window_s, self.window_steps = 0.0, 0
        return {"tokens_per_s": rate, "elapsed": time.perf_counter() - self.start}


class EagerEngine:
    def __init__(self, module: BasicModule, config: Config) -> None:
        self.module, self.config, self.dist = module, config, module.dist
        eng = config.Engine
        self.amp = eng.mix_precision
        if self.amp.active and not paddle.is_compiled_with_cuda():
            # never a silent fp32 run: Paddle has no fp16/bf16 kernels on a CPU build
            raise ConfigError(
                "Engine.mix_precision: enable/use_pure_fp16 needs a CUDA build of Paddle; this one is CPU-only "
                "(no fp16/bf16 kernels). Set Engine.mix_precision.enable=false and use_pure_fp16=false."
            )
        self.optimizer, self.lr_scheduler = module.configure_optimizers()
        self.scaler = None
        if self.amp.active:
            self.level = "O2" if self.amp.use_pure_fp16 else self.amp.level
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=self.amp.scale_loss)
            if self.level == "O2":
                module.model, self.optimizer = paddle.amp.decorate(
                    module.model, self.optimizer, level="O2", dtype=self.amp.dtype
                )
        module.model, self.optimizer = wrap(module.model, self.optimizer, self.dist)
        self.vocab_size = int(module.network.config.vocab_size)
        self.train_rows, self.eval_rows = data.windows(config.Data, self.vocab_size)
        self.state = checkpoint.TrainState()
        self.history: list[float] = []  # every step's loss, for callers and tests
        self.output_dir = Path(eng.save_load.output_dir)

    # ------------------------------------------------------------------------------------------------ training

    @property
    def micro_rows(self) -> int:
        return self.config.Data.micro_batch_size

    def _autocast(self):
        if not self.amp.active:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(
            enable=True,
            custom_white_list=self.amp.custom_white_list,
            custom_black_list=self.amp.custom_black_list,
            level=self.level,
            dtype=self.amp.dtype,
        )

    def _backward(self, loss: paddle.Tensor, last: bool) -> None:
        scaled = loss / self.config.Engine.accumulate_steps
        if self.scaler is not None:
            scaled = self.scaler.scale(scaled)
        sync = (
            contextlib.nullcontext()
            if last or not hasattr(self.module.model, "no_sync")
            else self.module.model.no_sync()
        )
        with sync:
            scaled.backward()

    def _train_step(self, rows: np.ndarray) -> float:
        """One optimizer step on this rank's rows; returns the global batch's mean loss."""
        acc = self.config.Engine.accumulate_steps
        losses = []
        for i in range(acc):
            batch = self.module.pretreating_batch(rows[i * self.micro_rows : (i + 1) * self.micro_rows])
            with self._autocast():
                loss = self.module.training_step(batch)
            self._backward(loss, last=i == acc - 1)
            losses.append(float(loss.item()))
        stepped = True
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            stepped = not bool(self.scaler._found_inf)  # FleetX: no LR step on an overflow step
        else:
            self.optimizer.step()
        self.optimizer.clear_grad(set_to_zero=False)
        if stepped:
            self.lr_scheduler.step()
        return mean_over_dp(float(np.mean(losses)), self.dist)

    def _total_steps(self, batches: data.TrainBatches) -> int:
        eng = self.config.Engine
        return min(eng.max_steps, eng.num_train_epochs * batches.per_epoch)

    def fit(self) -> list[float]:
        """Train (resuming from ``save_load.ckpt_dir`` if set) to ``max_steps`` or ``num_train_epochs``; returns
        the losses of the steps this call ran."""
        eng = self.config.Engine
        if eng.save_load.ckpt_dir:
            self.load(eng.save_load.ckpt_dir)
        rows_per_rank = self.micro_rows * eng.accumulate_steps
        batches = data.TrainBatches(
            self.train_rows,
            rows_per_rank,
            self.dist.dp_degree,
            self.dist.dp_rank,
            self.config.Global.seed,
            self.config.Data.shuffle,
        )
        total = self._total_steps(batches)
        if eng.eval_freq and len(self.eval_rows) < self.micro_rows * self.dist.dp_degree:
            # found now, not after eval_freq steps of training
            raise data.DataError(
                f"Engine.eval_freq is set but the eval split has {len(self.eval_rows)} windows, fewer than one batch "
                f"of {self.micro_rows * self.dist.dp_degree}; raise Data.eval_fraction or set Engine.eval_freq=0"
            )
        metrics = Metrics(self.output_dir, enabled=self.dist.rank == 0, start_step=self.state.step)
        bar = self._progress(total)
        clock = _Clock(tokens_per_step=rows_per_rank * self.dist.dp_degree * self.config.Data.seq_length)
        ran: list[float] = []
        stream = batches.batches(data.Position(self.state.epoch, self.state.batch))
        self.module.model.train()
        while self.state.step < total:
            position, rows = next(stream)
            lr = float(self.optimizer.get_lr())  # the rate this step's update uses
            with clock.step():
                loss = self._train_step(rows)
            self.state.step, self.state.epoch, self.state.batch = self.state.step + 1, position.epoch, position.batch
            ran.append(loss)
            self.history.append(loss)
            if self.state.step % eng.logging_freq == 0 or self.state.step == total:
                log = {"epoch": position.epoch, "step": self.state.step, "loss": loss, "lr": lr, **clock.window()}
                self.module.training_step_end(log)
                metrics.log(log)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{log['tokens_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
            self._after_step(total, metrics)
        if bar is not None:
            bar.close()
        metrics.close()
        return ran

    def _after_step(self, total: int, metrics: Metrics) -> None:
        """Evaluate every ``eval_freq`` steps, save every ``save_by_steps`` (and at the last step)."""
        eng, step = self.config.Engine, self.state.step
        if eng.eval_freq and step % eng.eval_freq == 0:
            eval_loss = self.evaluate(eng.eval_iters)
            self.module.validation_step_end({"step": step, "eval_loss": eval_loss})
            metrics.log({"step": step, "epoch": self.state.epoch, "eval_loss": eval_loss})
            self.module.model.train()
        if eng.save_load.save_by_steps and (step % eng.save_load.save_by_steps == 0 or step == total):
            self.save()

    def _progress(self, total: int):
        if not self.config.Engine.progress_bar or self.dist.rank != 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True)

    # ---------------------------------------------------------------------------------------- evaluate / predict

    @paddle.no_grad()
    def evaluate(self, iters: int = 0) -> float:
        """Mean ``validation_step`` loss over the first `iters` eval batches (0: ``Engine.eval_iters``)."""
        self.module.model.eval()
        batch = self.micro_rows * self.dist.dp_degree  # every rank sees the whole eval batch: a deterministic mean
        losses = [
            float(self.module.validation_step(self.module.pretreating_batch(rows)).item())
            for rows in data.eval_batches(self.eval_rows, batch, iters or self.config.Engine.eval_iters)
        ]
        if not losses:
            raise data.DataError(f"the eval split has {len(self.eval_rows)} windows, fewer than one batch of {batch}")
        return float(np.mean(losses))

    @paddle.no_grad()
    def predict(self) -> list[Any]:
        """``test_step`` over the test split (the held-out windows), ``Engine.test_iters`` batches (0: all)."""
        self.module.model.eval()
        outputs = []
        for i, rows in enumerate(data.eval_batches(self.eval_rows, self.micro_rows, self.config.Engine.test_iters)):
            out = self.module.test_step(self.module.pretreating_batch(rows))
            self.module.test_step_end({"batch": i, "output": out})
            outputs.append(out)
        return outputs

    # -------------------------------------------------------------------------------------------- save / load

    def save(self) -> Path | None:
        """Checkpoint the current step into ``output_dir``. Under TP every rank gathers its slices into full
        tensors first; rank 0 writes (data-parallel ranks hold identical states)."""
        self.state.lr_scheduler = self.lr_scheduler.state_dict()
        self.state.scaler = self.scaler.state_dict() if self.scaler is not None else None
        self.state.rng = checkpoint.capture_rng()
        model_state, opt_state = checkpoint.local_state(self.module.network, self.optimizer)
        if self.module.tp_layout is not None:
            model_state, opt_state = tp_state.gather(model_state, opt_state, self.module.tp_layout)
        path = None
        if self.dist.rank == 0:
            keep = self.config.Engine.save_load.keep_last
            path = checkpoint.save(self.output_dir, model_state, opt_state, self.state, keep)
        barrier(self.dist)
        return path

    def load(self, ckpt_dir: str | Path) -> Path:
        """Restore everything a checkpoint holds; ``ckpt_dir`` is one checkpoint or an output dir (the newest)."""
        path = checkpoint.resolve(ckpt_dir)
        model_state, opt_state, state = checkpoint.read(path)
        layout = self.module.tp_layout
        if layout is not None:  # full tensors in the file: check them whole, then keep this rank's slices
            checkpoint.check_shapes(path / checkpoint.MODEL, model_state, layout.full_shapes)
            model_state, opt_state = tp_state.split(model_state, opt_state, layout)
        checkpoint.restore(path, self.module.network, self.optimizer, model_state, opt_state)
        checkpoint.set_state(self.lr_scheduler, state.lr_scheduler)
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        checkpoint.restore_rng(state.rng)
        self.state = state
        return path
