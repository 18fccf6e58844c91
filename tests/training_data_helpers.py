"""Shared setup for the pair, shard and sampler tests: a small real fold-A subset."""
import ml_collections

# Three MLQA-R languages keep tokenising and sampling fast; en holds every qid,
# de and es hold about 500 each, 196 are shared by de and es.
LANGUAGES = ("de", "en", "es")


def make_config(shards_dir, **overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      sampling="hybrid", alpha=0.5, seed=0, batch_size=16, max_query_len=32,
      max_passage_len=64, fold="A", positive="sentence", mono_language_sampling="uniform",
      language_temperature=1.0, data_dir=None, shards_dir=str(shards_dir),
      train_languages=list(LANGUAGES)))
  config.update(overrides)
  return config
