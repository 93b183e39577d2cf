"""`sdbot worker`: put the engine replicas on a Ray cluster for `[engine] backend = "ray"`.

    sdbot worker --ray-address HOST:6379            deploy, wait until the replicas are up, stay until Ctrl-C
    sdbot worker --ray-address HOST:6379 --detach   deploy and exit: the replicas keep running in the cluster
    sdbot worker --ray-address HOST:6379 --status   the application and its replicas
    sdbot worker --ray-address HOST:6379 --stop     remove the replicas

The replicas take their settings from the config's [engine] section (models dir, device, dtype, ray_* keys);
a bot whose `ray_app` names the same application uses them as they are. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading

from bot.config import load_config
from bot.errors import UserError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value:g})")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser("worker", help='run the engine replicas on a Ray cluster (backend = "ray")')
    p.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help='the cluster: "auto", HOST:6379 or ray://HOST:10001 (default: [engine] ray_address)',
    )
    p.add_argument("--config", metavar="F")
    p.add_argument("--replicas", type=_positive_int, metavar="N", help="default: [engine] ray_replicas")
    p.add_argument("--num-gpus", type=_non_negative, metavar="G", help="per replica; default: [engine] ray_num_gpus")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="deploy, wait until the replicas are up, exit")
    mode.add_argument("--status", action="store_true", help="show the application and its replicas")
    mode.add_argument("--stop", action="store_true", help="remove the replicas from the cluster")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.backends import ray_backend
    from engine.tiny.models import ensure_demo_model

    engine_config = load_config(args.config).engine_config()
    changes = {
        name: value
        for name, value in (("address", args.ray_address), ("replicas", args.replicas), ("num_gpus", args.num_gpus))
        if value is not None
    }
    ray_config = dataclasses.replace(engine_config.ray, **changes)
    if not ray_config.address:
        raise UserError(
            "sdbot worker needs a Ray cluster: pass --ray-address HOST:6379 (or set [engine] "
            "ray_address); start one with `ray start --head`, see docs/scaling.md"
        )
    engine_config = dataclasses.replace(engine_config, backend="ray", ray=ray_config)
    ray_backend.connect(ray_config.address)
    if args.status:
        print("\n".join(ray_backend.replica_lines(ray_config)))
        return 0
    if args.stop:
        ray_backend.undeploy(ray_config)
        print(f"removed the application {ray_config.app_name}")
        return 0
    print(
        f"deploying {ray_config.replicas} engine replica(s) ({ray_config.num_gpus:g} GPU, "
        f"{ray_config.num_cpus:g} CPU each, models in {engine_config.models_dir}) as {ray_config.app_name} ...",
        flush=True,
    )
    ensure_demo_model(engine_config)  # replicas on this machine find it; no model configured or installed
    ray_backend.deploy(engine_config)
    print("\n".join(ray_backend.replica_lines(ray_config)), flush=True)
    if args.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("serving; Ctrl-C removes the replicas", flush=True)
    while not stop.wait(1.0):
        pass
    ray_backend.undeploy(ray_config)
    print(f"removed the application {ray_config.app_name}")
    return 0
