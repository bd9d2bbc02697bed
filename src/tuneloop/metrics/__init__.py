"""Metrics: pure functions over in-memory values (no I/O, no database).

- ``intervals``: bootstrap intervals over items, paired comparisons, McNemar's test.
- ``classification``: accuracy, per-class and averaged precision/recall/F1, confusion matrix.
- ``text``: ROUGE (rouge-score), BLEU and chrF (sacrebleu).
- ``agreement``: Krippendorff's alpha (krippendorff) and Cohen's kappa per rater pair.

Point values come from the reference libraries; only the resampling is our own (vectorised,
so 1000 resamples cost milliseconds). Import the submodules directly; this package imports
nothing so that a workflow pays only for the metrics it uses.
"""
