"""ablate: ablation studies of graph CF models on RecBole."""
__version__ = "0.1.0"
