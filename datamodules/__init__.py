"""LightningDataModules and dataset readers for rsam (installed as a top-level package with the project)."""
