"""Framework heads: one file per segmentation framework (its baseline head and its plug-in wiring)."""
