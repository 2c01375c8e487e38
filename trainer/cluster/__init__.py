"""Where the trainer meets the Ray cluster: the thin shell around the training code.

Connecting to or starting Ray and the CPUs a run reserves (ray_connect.py), the check that
the run's GPU bundles fit the cluster's nodes before anything is placed (placement.py), Ray
Train's per-worker entry point (worker.py, kept light: every new worker process imports it),
and the fault-injection hook the recovery tests use to kill a worker (faults.py).
"""
