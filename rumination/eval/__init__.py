"""`rumination eval`: datasets, answer metrics, a SimpleQA-style judge, and summaries over several runs."""
