"""Three seeds of the three strategies, evaluated on the full XQuAD-R, for a 2-core CPU.

Sized to about 2 hours on 2 quiet cores (10 evaluated models, 9 trainings), in the
order of priority:
1. every model on the **full** XQuAD-R (240 paragraphs, 11 languages, texts up to 512
   tokens: nothing cut), so that mAP and language bias compare with the paper's and the
   starting model's full-set numbers (about 4.6 min per model);
2. TyDi GoldP at sentence level and AfriQA (test split) on a fixed subsample: the first
   120 gold passages per language (in file order, the same for every model) with every
   question they answer; AfriQA and TyDi passages are cut at 256 / 192 tokens and the cut
   texts are counted in results.json (`eval_options.truncated`);
3. training gets the rest: 120 steps of batch 16 (1,920 pairs per run, 2.4x the earlier
   800), 5% of fold A's question groups held out for a validation loss every 20 steps,
   and the checkpoint with the lowest validation loss is the one evaluated.
"""
import ml_collections

from configs.study import smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = smoke.get_config(arg)
  c.name = "quick"
  c.seeds = (0, 1, 2)
  c.train_overrides = dict(total_steps=120, warmup_steps=12, batch_size=16, learning_rate=5e-5,
                           max_query_len=32, max_passage_len=64,
                           checkpoint_every_steps=20, log_every_steps=5,
                           validation_fraction=0.05, validation_every_steps=20,
                           validation_batches=1, early_stopping=True)
  c.train_languages = None
  c.eval_languages = None
  c.eval_max_length = 256
  c.eval_max_lengths = {"xquad_r": 512, "mlqa_r": 512, "tydiqa_goldp": 192}
  c.eval_batch_size = 64
  c.eval_max_questions = None
  c.eval_max_documents = {"tydiqa_goldp": 120, "tydiqa_goldp_sentences": 120, "afriqa": 120}
  c.note = ("QUICK RUN: 120 steps of batch 16 per run (1,920 pairs, about an eighth of fold "
            "A's pairs) at learning rate 5e-5, 3 seeds, 5% of the question groups held out "
            "and the checkpoint with the lowest validation loss evaluated. XQuAD-R is "
            "evaluated whole (all 240 paragraphs, 11 languages, nothing truncated), so its "
            "mAP and language bias compare with the paper's pools. TyDi (passages and "
            "sentences) and AfriQA use the first 120 gold passages per language with their "
            "questions (smaller pools than the full sets: easier retrieval), texts cut to 192 "
            "(TyDi passages) and 256 tokens (AfriQA; the cut texts are counted). The "
            "comparison between strategies and against the starting model is the result.")
  return c
