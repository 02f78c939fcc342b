"""Put the network's graph in TensorBoard's GRAPHS tab."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import lightning as L
import torch

from lightning_template.callbacks.epoch_level import EpochLevelCallback
from lightning_template.callbacks.tensorboard_images import tensorboard_loggers

log = logging.getLogger(__name__)


class ModelGraph(EpochLevelCallback):
    """Trace the network (`pl_module.net`, else the module) once, on a zero batch of `input_shape`, when
    fitting starts (rank 0, TensorBoard only).

    Lightning's own `log_graph` would push the example through the datamodule's batch hooks, which
    expect (images, labels); this one calls the model directly.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = tensorboard_loggers(trainer)
        if not trainer.is_global_zero or not loggers:
            return
        example = torch.zeros(1, *self.input_shape, device=pl_module.device)
        # The network alone: tracing the LightningModule would also walk its torchmetrics objects.
        network = getattr(pl_module, "net", pl_module)
        # Eval mode: a batch of one passes batch norm, and its running statistics stay untouched.
        was_training = network.training
        network.eval()
        try:
            for logger in loggers:
                try:
                    with warnings.catch_warnings():
                        # TensorBoard's graph needs torch.jit.trace, which warns that it is deprecated.
                        warnings.filterwarnings("ignore", category=FutureWarning, message=".*jit.trace")
                        logger.experiment.add_graph(network, example)
                except Exception as exc:  # best effort: a compiled or dynamic forward may refuse tracing
                    log.warning(
                        "The model graph was not written to TensorBoard: %s", str(exc).splitlines()[0]
                    )
        finally:
            network.train(was_training)
