"""The study of the paper, built from the engine: which models to train and how, and what they show.

- `hyper` (per-dataset defaults with a reason for each value, the evaluation split and attack);
- `recipes` (recipes of the default study and the zoo, training a recipe once: `ensure_model`);
- `evidence` (the attacks behind every stated number: AutoAttack at the findings' epsilon, the
  masking check's entries), `findings` (the five findings' verdicts with effects and intervals);
- `report` (`python -m core reproduce`: the numbers, intervals and findings), `report_text` (its
  table), `parallel` (independent units in worker processes of one thread each);
- `precompute` (resumable evaluation of many models, for bundles and big runs).

May import: `core.config`, `core.storage`, `core.errors`, the engine and other study modules.
Never the app, the command line or Streamlit.
"""
