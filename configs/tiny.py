"""A tiny random model on synthetic batches: for tests of the trainer (seconds on a CPU)."""
from configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.model = "tiny-random-0"
  c.data_source = "synthetic"
  c.batch_size = 16
  c.max_query_len = 8
  c.max_passage_len = 16
  c.total_steps = 8
  c.warmup_steps = 2
  c.learning_rate = 1e-3
  c.freeze_embeddings = False
  c.checkpoint_every_steps = 4
  c.keep_checkpoints = 3
  c.log_every_steps = 1
  return c
