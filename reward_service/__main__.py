"""Start the reward service: `python -m reward_service [--config FILE] [--host H] [--port P]
[serve.key=value ...]`.

Starts a local Ray (or attaches to the cluster in `RAY_ADDRESS`), deploys the app and blocks
until Ctrl-C or SIGTERM, then deletes the app (and stops the local Ray it started). With no
config it serves the toy scorers on http://127.0.0.1:8000 and downloads nothing. A local Ray
it starts listens on 127.0.0.1 only (rglcd/local_ray.py; `--expose-ray` to opt out). Examples:

    python -m reward_service
    python -m reward_service --port 8001 serve.scorers.0.max_batch_size=64
    RAY_ADDRESS=auto python -m reward_service --config configs/serve_sd15.yaml
    curl -s localhost:8000/models

`rglcd-serve` is the same command. On an existing cluster, `serve deploy orchestration/serve_config.yaml` does the same
declaratively.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from reward_service.config import ServeConfig
from rglcd.local_ray import keep_local_ray_on_loopback


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reward_service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with a `serve:` section")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default from config: 8000)")
    parser.add_argument("--num-cpus", type=float, help="logical CPUs of a new local Ray")
    parser.add_argument("--no-dashboard", action="store_true", help="local Ray without dashboard")
    parser.add_argument(
        "--expose-ray", action="store_true",
        help="let a new local Ray listen on every interface (default: 127.0.0.1 only; the "
        "HTTP address is --host either way)",
    )
    parser.add_argument("overrides", nargs="*", help="serve.key=value overrides")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> ServeConfig:
    from reward_service.app import load_serve_config  # deferred: loads fastapi, ray

    overrides = list(args.overrides)
    if args.host:
        overrides.append(f"serve.host={args.host}")
    if args.port:
        overrides.append(f"serve.port={args.port}")
    return load_serve_config(args.config, overrides)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def start(config: ServeConfig, num_cpus: float | None, dashboard: bool) -> str:
    """Init Ray (attach when RAY_ADDRESS is set), start Serve and deploy; returns the URL."""
    import ray
    from ray import serve

    from reward_service.app import build_app  # deferred: loads fastapi, ray
    from reward_service.client import wait_for_app  # deferred: loads fastapi, ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # attaching: resources are the cluster's, passing any raises
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard)
    signal.signal(signal.SIGTERM, _interrupt)  # ray.init installs its own (abort) handler
    serve.start(http_options={"host": config.host, "port": config.port})
    app = build_app(config)
    serve.run(app, name=config.app_name, route_prefix=config.route_prefix, blocking=False)
    wait_for_app(config.app_name, timeout_s=600)
    return f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_local_ray_on_loopback(expose=args.expose_ray)  # before anything imports ray
    try:
        config = resolve_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # same clean stop as Ctrl-C, even mid-start
    import ray
    from ray import serve

    attached = bool(os.environ.get("RAY_ADDRESS"))
    try:
        url = start(config, args.num_cpus, not args.no_dashboard)
        models = ", ".join(spec.name for spec in config.scorers)
        print(f"reward service ready at {url} (models: {models}); Ctrl-C to stop", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping the reward service", flush=True)
    except ValueError as err:  # e.g. a scorer that cannot load its checkpoint
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if ray.is_initialized():
            if attached:  # leave the cluster as found; a local one goes away with shutdown
                serve.delete(config.app_name)
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
