"""The dashboard service: a live page over Redis (stats, throughput, workers, tasks)."""
