"""A Hydra multirun as MLflow runs: the sweep's parent run (callback), the jobs under it
(job, with resume), and the checks that refuse a bad config before any work."""
