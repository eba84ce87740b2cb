"""Training: the train step and the compiled calls that run it (``trainer``), what each call
reads its batches from (``inputs``), optimizers and schedules (``optim``) and bf16 compute
(``mixed_precision``). The names of ``trainer`` are re-exported here
(``vae_jax.train.TrainState``, ``vae_jax.train.train_step``, ...).
"""

from vae_jax.train.trainer import (TrainState, Trainer, call_length, create_train_state,
                                   global_norm, next_stop, summarize_call, train_step,
                                   train_steps, train_steps_streamed)

__all__ = ["TrainState", "Trainer", "create_train_state", "train_step", "train_steps",
           "train_steps_streamed", "global_norm", "call_length", "next_stop",
           "summarize_call"]
