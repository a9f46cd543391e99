"""IDRBench orchestration: config, plan, train, evaluate, measure, tabulate."""
__version__ = "0.1.0"
