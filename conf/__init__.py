"""Hydra configs. Installed as the package `lightning_template.conf` so `pkg://` finds them anywhere."""
