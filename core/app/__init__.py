"""What the pages show, computed without Streamlit: the app's logic, testable in plain Python.

- `jobs` (background jobs with progress and cancel), `prepare` (the jobs that train and evaluate
  what a page needs);
- `views` (the sidebar's selection and the frames of the distributions and differences pages),
  `samples` (images and adversarial examples), `overview`, `embedding` (UMAP maps), `lab` (live
  distillation runs), `charts` (Altair charts), `toy` (the two-dimensional "why" model);
- `bundle` (portable, checksummed bundles) and `demo` (the hosted-demo mode that serves one).

May import: everything below it (`core.config`, `core.storage`, `core.errors`, the engine, the
study) and other app modules. Never Streamlit, the pages or the command line.
"""
