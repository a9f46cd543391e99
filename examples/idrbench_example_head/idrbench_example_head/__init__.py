"""An example framework for IDRBench that lives outside it: see lighthead.py and README.md."""
