"""A mode that jaxkd does not ship, for tests/test_train_features.py: one module with a Task subclass is all a new
mode needs (plus its entry in jaxkd.tasks.TASKS). Selected by experiment_name == 'toy-task'; trains on
CE + 0.1·(mean prediction entropy) and logs that entropy as 'toy_entropy', and the validation sum 'toy_correct'."""

import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.tasks.base import Task, accuracy, forward_train


class ToyTask(Task):
    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.experiment_name == "toy-task"

    @classmethod
    def build(cls, cfg, teacher=None):
        return cls()

    def __call__(self, model, batch, epoch, aux=None):
        logits = forward_train(model, batch["image"])["cls"]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        entropy = -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1))
        loss = losses.cross_entropy(logits, batch["label"]) + 0.1 * entropy
        return loss, {"accuracy": accuracy(logits, batch["label"]), "toy_entropy": entropy}

    def eval_metrics(self, trainable, batch, aux, mask):
        hit = jnp.argmax(self.inference_logits(trainable, batch["image"]), -1) == batch["label"]
        return {"toy_correct": jnp.sum(hit * mask)}
