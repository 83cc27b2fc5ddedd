"""Analysis of vae-study results: metrics, result loading, plots, tables, reports."""
