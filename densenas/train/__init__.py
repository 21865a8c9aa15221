"""Retraining stage (SPEC.md §8): the paper's recipe with DDP, AMP and resumable checkpoints.

``fit`` is the loop over any (images, labels) batches; ``densenas.train.stage.run_training`` wires it to a
prepared dataset and the model registry.
"""

from densenas.train.accuracy import Accuracy, evaluate_accuracy, topk_correct
from densenas.train.schedule import cosine_lr
from densenas.train.trainer import TrainSetup, architecture_digest, fit, make_criterion, train_step

__all__ = ["Accuracy", "TrainSetup", "architecture_digest", "cosine_lr", "evaluate_accuracy", "fit",
           "make_criterion", "topk_correct", "train_step"]
