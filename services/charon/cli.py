"""``charon <command>``: every entry point, with one flag → setting mapping for all commands.

Flags override ``CHARON_*`` environment variables, which override defaults. A bad value ends the
command with exit status 2 and one line naming the setting (or flag), the value and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from charon import __version__
from charon.errors import CharonError, ConfigError, DetectorError
from charon.settings import Settings, load_settings

log = logging.getLogger("charon")

# flag dest -> (section, field); "{role}" is the command's own section (server or router).
_FLAG_SETTINGS: dict[str, tuple[str, str]] = {
    "bind": ("{role}", "bind"),
    "workers_bind": ("router", "workers_bind"),
    "router": ("{router_of}", "router"),
    "backend": ("engine", "backend"),
    "detector": ("engine", "detector"),
    "ratdb": ("engine", "ratdb"),
    "seed": ("engine", "seed"),
    "max_steps": ("engine", "max_steps"),
    "device": ("engine", "device"),
    "cuda_device": ("engine", "cuda_device"),
    "threads": ("engine", "threads"),
    "echo_delay": ("engine", "echo_delay_s"),
    "metrics_addr": ("metrics", "addr"),
    "log_level": ("log", "level"),
    "capacity": ("worker", "capacity"),
    "legacy_pong": ("server", "legacy_pong"),
    "endpoint": ("client", "endpoint"),
    "timeout": ("client", "timeout_s"),
    "retries": ("client", "retries"),
    "listen": ("gateway", "listen"),
    "layout": ("gateway", "layout"),
    "echo": ("gateway", "echo"),
    "pmt_volume": ("engine", "pmt_volume"),
    "world": ("engine", "world"),
    "chord": ("engine", "chord_mm"),
    "detector_cache_dir": ("engine", "detector_cache_dir"),
}
_ROLE = {"serve": "server", "router": "router", "demo": "server"}
_ROUTER_OF = {"worker": "worker", "flukaio-gateway": "gateway"}


class _Parser(argparse.ArgumentParser):
    """argparse with single-line errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag(p: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    kw.setdefault("default", None)
    p.add_argument(name, **kw)


def _common(p: argparse.ArgumentParser) -> None:
    _flag(p, "--log-level", choices=["debug", "info", "warning", "error"], help="log level")


def _gdml(p: argparse.ArgumentParser) -> None:
    _flag(p, "--ratdb", metavar="PATH", help="RATDB file with PMTINFO for a GDML detector (JSON dump or .ratdb)")
    _flag(p, "--pmt-volume", metavar="REGEX", help="GDML without PMTINFO: logical volumes that are PMTs")
    _flag(p, "--world", metavar="NAME", help="GDML: logical volume to use as the world")
    _flag(p, "--chord", metavar="MM", help="GDML: largest distance of a curved surface from its triangles")


def _engine(p: argparse.ArgumentParser) -> None:
    _flag(p, "--backend", choices=["builtin", "numpy", "echo", "chroma"], help="simulation backend")
    _flag(p, "--detector", metavar="PATH",
          help="detector: .npz, or .gdml imported at start-up (default: built-in reference detector)")
    _gdml(p)
    _flag(p, "--seed", metavar="N", help="random seed")
    _flag(p, "--max-steps", metavar="N", help="propagation steps per photon")
    _flag(p, "--device", choices=["cpu", "cuda", "auto"], help="builtin engine device")
    _flag(p, "--cuda-device", metavar="N", help="CUDA device index")
    _flag(p, "--threads", metavar="N", help="CPU threads (0 = all cores)")
    _flag(p, "--echo-delay", metavar="SECONDS", help="echo backend: sleep per request")


def _metrics(p: argparse.ArgumentParser) -> None:
    _flag(p, "--metrics-addr", metavar="HOST:PORT", help="Prometheus metrics and /healthz, /readyz")


def _client(p: argparse.ArgumentParser) -> None:
    _flag(p, "--endpoint", metavar="ENDPOINT", help="server or router endpoint (default tcp://127.0.0.1:5555)")
    _flag(p, "--timeout", metavar="SECONDS", help="reply timeout per try")
    _flag(p, "--retries", metavar="N", help="resends after a timeout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="charon", description="Optical-photon simulation as a network service.")
    parser.add_argument("--version", action="version", version=f"charon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("serve", help="one process that simulates every request itself")
    _flag(p, "--bind", metavar="ENDPOINT", help="client endpoint (default tcp://*:5555)")
    _flag(p, "--legacy-pong", action="store_const", const=True, help="answer PING with PONG (old clients)")
    _engine(p)
    _metrics(p)
    _common(p)

    p = sub.add_parser("router", help="queue requests and balance them over workers")
    _flag(p, "--bind", metavar="ENDPOINT", help="client endpoint (default tcp://*:5555)")
    _flag(p, "--workers-bind", metavar="ENDPOINT", help="worker endpoint (default tcp://*:6667)")
    _metrics(p)
    _common(p)

    p = sub.add_parser("worker", help="simulate requests given by a router")
    _flag(p, "--router", metavar="ENDPOINT", help="router worker endpoint (default tcp://localhost:6667)")
    _flag(p, "--capacity", metavar="N", help="requests taken at once")
    _engine(p)
    _metrics(p)
    _common(p)

    p = sub.add_parser("ping", help="check that a server answers")
    _client(p)
    _common(p)
    p = sub.add_parser("info", help="show the detector a server simulates")
    _client(p)
    _common(p)

    p = sub.add_parser("simulate", help="send isotropic point-source events and summarise the hits")
    _client(p)
    _simulate_args(p)
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="requests in flight at once (a router spreads them over its workers; default 1)")
    _common(p)

    p = sub.add_parser("demo", help="start an embedded server, simulate against it, stop it")
    _simulate_args(p, events=10, photons=100_000)
    _engine(p)
    _common(p)

    p = sub.add_parser("config", help="print the effective configuration as JSON")
    _flag(p, "--bind", metavar="ENDPOINT", help="client endpoint of serve and router")
    _flag(p, "--workers-bind", metavar="ENDPOINT", help="router's worker endpoint")
    _flag(p, "--router", metavar="ENDPOINT", help="router endpoint a worker connects to")
    _engine(p)
    _metrics(p)
    _client(p)
    _common(p)

    p = sub.add_parser("top", help="live view of a router's metrics")
    _flag(p, "--metrics-url", metavar="URL", default="http://127.0.0.1:9100/metrics", help="router /metrics URL")
    _flag(p, "--interval", metavar="SECONDS", type=float, default=1.0, help="refresh interval")
    _flag(p, "--once", action="store_true", default=False, help="print one snapshot and exit")
    _common(p)

    p = sub.add_parser("flukaio-gateway", help="FlukaIO TCP front end for C/Fortran codes")
    _flag(p, "--listen", metavar="ENDPOINT", help="FlukaIO listen address (default tcp://*:14999)")
    _flag(p, "--router", metavar="ENDPOINT", help="v1 endpoint to forward to (default: local engine)")
    _flag(p, "--layout", choices=["auto", "current", "legacy"], help="FlukaIO particle layout")
    _flag(p, "--echo", action="store_const", const=True, help="echo particles like the FlukaIO sample server")
    _engine(p)
    _metrics(p)
    _common(p)

    p = sub.add_parser("detector", help="import a Geant4/RAT-PAC GDML detector; summarise or draw a detector")
    det = p.add_subparsers(dest="action", required=True, parser_class=_Parser, metavar="ACTION")
    q = det.add_parser("import", help="GDML (+ RATDB PMTINFO) -> charon detector file (.npz)")
    q.add_argument("gdml", metavar="GEOMETRY.gdml")
    _gdml(q)
    q.add_argument("-o", "--output", required=True, metavar="DETECTOR.npz", help="detector file to write")
    _common(q)
    q = det.add_parser("info", help="summary: volumes, materials, surfaces, PMTs, triangles, fingerprint")
    q.add_argument("path", nargs="?", default=None, metavar="DETECTOR",
                   help=".npz or .gdml (default: built-in reference detector)")
    _gdml(q)
    _flag(q, "--detector-cache-dir", metavar="DIR", help="import cache for a .gdml")
    _common(q)
    q = det.add_parser("plot", help="draw sections through the detector and its PMT positions")
    q.add_argument("path", nargs="?", default=None, metavar="DETECTOR",
                   help=".npz or .gdml (default: built-in reference detector)")
    q.add_argument("--out", required=True, metavar="PNG", help="image to write")
    _gdml(q)
    _flag(q, "--detector-cache-dir", metavar="DIR", help="import cache for a .gdml")
    _common(q)

    p = sub.add_parser("cluster", help="Kubernetes preflight and release status")
    p.add_argument("action", choices=["check", "status"])
    _flag(p, "--namespace", metavar="NS", default="default", help="release namespace")
    _flag(p, "--release", metavar="NAME", default="charon", help="Helm release name")
    _flag(p, "--values", metavar="FILE", help="values file the release is (to be) installed with")
    _common(p)
    return parser


def _simulate_args(p: argparse.ArgumentParser, *, events: int = 10, photons: int = 10_000) -> None:
    p.add_argument("--events", type=int, default=events, metavar="N", help=f"events (default {events})")
    p.add_argument("--photons", type=int, default=photons, metavar="M", help=f"photons per event (default {photons})")
    p.add_argument("--source", default="0,0,0", metavar="X,Y,Z", help="point source position in mm")
    p.add_argument("--wavelength", type=float, default=420.0, metavar="NM", help="photon wavelength in nm")
    p.add_argument("--first-event", type=int, default=0, metavar="ID", help="event id of the first event")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a hit map and hit-time histogram")
    p.add_argument("--photon-seed", type=int, default=12345, metavar="N", help="seed of the photon generator")


def settings_from_args(command: str, args: argparse.Namespace) -> Settings:
    """Effective settings: environment, then the flags given on the command line."""
    overrides: dict[str, dict[str, Any]] = {}
    flags: dict[str, str] = {}
    for dest, (template, field) in _FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        section = template.format(role=_ROLE.get(command, "server"), router_of=_ROUTER_OF.get(command, "worker"))
        overrides.setdefault(section, {})[field] = value
        flags[f"{section}.{field}"] = "--" + dest.replace("_", "-")
    return load_settings(overrides, flags=flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args.command, args)
        from charon.runtime import setup_logging

        setup_logging(settings.log.level)
        return _COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"charon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DetectorError as exc:
        where = "" if args.command == "detector" else \
            "invalid setting engine.detector (--detector / CHARON_ENGINE__DETECTOR): "
        print(f"charon {args.command}: error: {where}{exc}", file=sys.stderr)
        return 2
    except CharonError as exc:
        print(f"charon {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from charon import server

    return server.main(settings)


def _router(settings: Settings, _args: argparse.Namespace) -> int:
    from charon.router import driver

    return driver.main(settings)


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from charon.worker import driver

    return driver.main(settings)


def _config(settings: Settings, _args: argparse.Namespace) -> int:
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def _top(settings: Settings, args: argparse.Namespace) -> int:
    from charon import top

    return top.main(settings, args.metrics_url, args.interval, args.once)


def _gateway(settings: Settings, _args: argparse.Namespace) -> int:
    from charon.flukaio import gateway

    return gateway.main(settings)


def _detector(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from charon import detector_commands

    if args.action == "import":
        return detector_commands.import_detector(Path(args.gdml), Path(args.output), settings.engine)
    path = None if args.path is None else Path(args.path)
    if args.action == "info":
        return detector_commands.info(path, settings.engine)
    return detector_commands.plot(path, Path(args.out), settings.engine)


def _cluster(_settings: Settings, args: argparse.Namespace) -> int:
    from charon import cluster

    values: dict[str, object] | None = None
    if args.values:
        import yaml

        try:
            with open(args.values, encoding="utf-8") as fh:
                values = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--values {args.values}: {exc}") from None
    return cluster.main(args.action, args.namespace, args.release, values)


def _clients(settings: Settings, args: argparse.Namespace) -> int:
    from charon import commands

    return commands.run(args.command, settings, args)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": _serve,
    "router": _router,
    "worker": _worker,
    "ping": _clients,
    "info": _clients,
    "simulate": _clients,
    "demo": _clients,
    "config": _config,
    "top": _top,
    "flukaio-gateway": _gateway,
    "detector": _detector,
    "cluster": _cluster,
}
