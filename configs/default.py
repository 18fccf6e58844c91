"""Default run: fold A (train on MLQA-R pairs), hybrid batches, alpha 0.5, e5-small.

Sized for a CPU: a global batch of 32 pairs, queries cut to 32 tokens and
passages to 96, frozen embedding tables, 300 steps. Override any key on the
command line, e.g.

  python -m mlir_train.train --config configs/default.py --workdir /tmp/run \
      --config.sampling=mono --config.total_steps=100
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  # Model. Each key's trailing comment is its line of `train --help` (configs.key_help).
  c.model = "e5-small"             # "e5-small", a Hugging Face dir, a training workdir, "tiny-random[-SEED]"
  c.compute_dtype = "float32"      # "float32" or "bfloat16" (parameters stay float32)
  c.remat = False                  # rematerialise each layer in the backward pass
  c.freeze_embeddings = True       # hold the embedding tables out of training
  c.freeze_layers = 0              # also freeze the lower N transformer layers (0 = none)
  c.query_prompt = ml_collections.config_dict.placeholder(str)    # query prefix; None: the model's (E5: "query: ")
  c.passage_prompt = ml_collections.config_dict.placeholder(str)  # passage prefix; None: the model's (E5: "passage: ")

  # Data: which pairs, and how a batch is composed.
  c.data_source = "pairs"          # "pairs" (the fold's), "files" (train_files) or "synthetic" (benchmarks)
  c.train_files = ""               # data_source "files": comma-separated paths/globs (JSONL, Parquet, datasets dirs)
  c.strict_data = False            # data_source "files": raise at the first bad record (else report them all)
  c.default_language = ""          # data_source "files": language of records without one ("de"; per file: train_files "de:PATH")
  c.data_dir = ml_collections.config_dict.placeholder(str)    # raw data; None: $MLIR_DATA_DIR or ../shared/data
  c.shards_dir = ml_collections.config_dict.placeholder(str)  # token shard cache; None: $MLIR_TRAIN_CACHE/shards
  c.fold = "A"                     # A: train MLQA-R, eval XQuAD-R + TyDi; B: train XQuAD-R (files: checked against its eval sets)
  c.train_languages = ""           # comma-separated subset of the fold's languages; "" = all
  c.positive = "sentence"          # "sentence" (answer sentence) or "paragraph"
  c.sampling = "hybrid"            # "mono" (X-X), "cross" (X-Y), "hybrid", "mixed"
  c.alpha = 0.5                    # hybrid: P(batch is X-X-mono)
  c.mono_language_sampling = "uniform"  # "uniform", "size", "temperature"
  c.language_temperature = 2.0     # for "temperature": p_l ~ n_l^(1/T)
  c.max_query_len = 32             # tokens per query incl. its prompt; longer ones are cut
  c.max_passage_len = 96           # tokens per passage incl. its prompt; longer ones are cut
  c.hard_negatives_per_pair = 0    # files/synthetic: each pair's first n negatives as extra columns (0 = off)

  # Validation: whole parallel groups held out of training (0 = none), their fixed
  # batches of every kind scored every validation_every_steps; early_stopping keeps
  # the checkpoint with the lowest validation loss for eval and export.
  c.validation_fraction = 0.0      # share of parallel groups held out for validation (0 = none)
  c.validation_every_steps = 50    # score the validation batches every N steps (and at the end)
  c.validation_batches = 1         # per kind: MONO batches per language, CROSS batches
  c.early_stopping = False         # keep the lowest-validation-loss checkpoint (eval, export)

  # Optimisation.
  c.seed = 0                       # batch order and held-out validation groups
  c.batch_size = 32                # global batch (pairs), split over all devices
  c.total_steps = 300              # update steps of the whole run (a resumed run ends here too)
  c.warmup_steps = 30              # linear learning-rate warmup from 0, then linear decay to 0
  c.learning_rate = 2e-5           # AdamW peak learning rate
  c.weight_decay = 0.01            # AdamW decoupled weight decay
  c.max_grad_norm = 1.0            # clip the global gradient norm to this
  c.temperature = 0.05             # InfoNCE softmax temperature
  c.symmetric_loss = False         # also score passage -> query (mean of both directions)
  c.gradcache_chunk_size = 0       # 0 = off; else embed/backprop this many pairs at a time
  c.max_nonfinite_in_a_row = 5     # stop after this many skipped (NaN/Inf) updates in a row
  c.l2sp = 0.0                     # L2-SP: + (l2sp/2) * ||theta - theta_start||^2 (0 = off)

  # Parallelism: mesh ("data", "fsdp"); fsdp > 1 shards parameters too.
  c.fsdp = 1                       # devices per parameter shard (the rest split the batch)

  # Bookkeeping.
  c.checkpoint_every_steps = 100   # save a checkpoint every N steps (and at the end)
  c.keep_checkpoints = 2           # checkpoints kept in <workdir>/checkpoints (older ones deleted)
  c.log_every_steps = 10           # a metrics.jsonl line (and a console line) every N steps
  return c
