"""What the pages show, computed without Streamlit: the app's logic, testable in plain Python.

- `jobs` (background jobs with progress and cancel), `prepare` (the jobs that train and evaluate
  what a page needs);
- `views` (the sidebar's selection and the frames of the distributions and differences pages),
  `samples` (images and adversarial examples), `overview`, `embedding` (UMAP maps), `lab` (live
  distillation runs, with replicates; `lab_table` keeps their run table), `across` (the "Across
  models" page), `charts` (Altair charts),
  `toy` (the two-dimensional "why" model);
- portable, checksummed bundles: `bundle` (writing one: choosing, repairing, packing), `bundle_pack`
  (the packer: exactly the bytes that passed their checks), `bundle_check` (the format, its limits,
  the manifest and array checks), `bundle_read` (opening and unpacking one); `demo` (the hosted-demo
  mode that serves one).

May import: everything below it (`core.config`, `core.storage`, `core.errors`, the engine, the
study) and other app modules. Never Streamlit, the pages or the command line.
"""
