"""Datamodules and the in-memory batch pipeline they share."""
