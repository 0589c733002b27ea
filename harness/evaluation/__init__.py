"""Evaluation: requests stated by metrics, run in shared batches, pre-edit outcomes cached on disk.

Import `Evaluator` from `harness.evaluation.evaluator` (it needs torch); this package and
`harness.evaluation.requests` / `harness.evaluation.options` stay torch-free."""
