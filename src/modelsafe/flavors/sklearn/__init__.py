"""The scikit-learn flavor (``flavor``): estimators and pipelines as audited pickle graphs."""
