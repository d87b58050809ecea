"""The study of the paper, built from the engine: which models to train and how, and what they show.

- `hyper` (per-dataset defaults with a reason for each value, the evaluation split and attack);
- `recipes` (recipes of the default study and the zoo, training a recipe once: `ensure_model`);
- `evidence` (the attacks behind every stated number: AutoAttack at the findings' epsilon, the
  masking check's entries), `findings` (the five findings' verdicts with effects and intervals);
- `report` (`python -m core reproduce`: the numbers, intervals and findings), `report_text` (its
  table), `parallel` (independent units in worker processes of one thread each);
- `precompute` (resumable evaluation of many models, for bundles and big runs; `units`: its units,
  chunks and their parts), `fanout` (a precompute as tasks on an executor), `executors` (tasks, the
  local executor, files shipped without a shared filesystem), `executor_ray` (Ray tasks; the only
  module that imports Ray), `sweep` (a grid of method, training epsilon, seed and architecture, and
  its registry in the cache), `sweep_run` (running a sweep and its summary), `census` (every model's
  statistics and accuracies, read from the cache), `zoo_cost` (the zoo's cost estimate, a dry run).

May import: `core.config`, `core.storage`, `core.errors`, the engine and other study modules.
Never the app, the command line or Streamlit.
"""
