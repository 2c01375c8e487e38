"""The benchmarks: `python -m orchestration.bench` runs the goals' table (see __main__.py);
default_run, training, lrm_latency and sampling_steps run alone with `python -m
orchestration.bench.<name>`."""
