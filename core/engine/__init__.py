"""The engine: data, models and what is computed from them, with no notion of a study or a page.

- `registry` (datasets and their plugins' registry), `data` (the one place that lists the dataset
  plugins: `data_digits`, `data_torchvision`, `data_own`; import datasets from here);
- `models` (architectures, self-describing checkpoints), `zoo` (the RobustBench adapter), `zoo_info`
  (RobustBench's published accuracies of its models, shipped as `zoo_published.json`);
- `attacks` (the one PGD loop), `reliable` (AutoAttack through pyautoattack, survivors only),
  `train` (the one training loop), `distill` (teacher-logit manipulations);
- `logits` (the disk cache of logits, PGD and AutoAttack entries alike), `analysis` (numpy
  statistics of logits), `stats` (bootstrap intervals, paired comparisons, verdicts), `masking` (the
  gradient-masking check).

May import: `core.config`, `core.storage`, `core.errors`, and other engine modules. Never the
study, the app, the command line or Streamlit.
"""
