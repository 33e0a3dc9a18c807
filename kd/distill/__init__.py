"""Distillation: what the student learns from the teacher, and how.

`mining` picks hard negatives, `pseudo` rewrites training headings as questions, `losses` holds the
distillation losses (pure functions of tensors), `train` the sentence-transformers training (local and
Ray Train) with weight mixing, and `corpus_fit` the embedding distillation over the whole corpus.
"""
