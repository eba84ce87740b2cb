"""Evaluation tools and the drivers that reproduce the results pages' tables: trained models
compared on the same test images and keys (``budget_compare``), a diffusion model's bound
against its number of steps (``vdm_bound_vs_T``), the figures under each matrix-product
precision (``precision_check``), and one shell driver per table of
``docs/results_budget.md``. Run the Python tools from the repository root as
``python -m scripts.NAME``; ``scripts/README.md`` lists each with the table it reproduces.
"""
