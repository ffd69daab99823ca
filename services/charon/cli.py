"""``charon <command>``: every entry point; the settings flags are generated from :mod:`charon.settings`.

A flag that sets a setting is declared once, in the settings model next to its field, with the
commands that take it (:class:`charon.settings.Flag`); this module turns those declarations into
argparse arguments and parsed values into setting overrides. Arguments that are not settings
(``simulate --events``, ``top --interval``, ...) are declared here with their command.

Flags override ``CHARON_*`` environment variables, which override defaults. A command that ends
with a :class:`charon.errors.CharonError` prints one line and exits with the error's exit status
(2 for a bad setting or value).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from charon import __version__
from charon.errors import CharonError, ConfigError
from charon.settings import ALL_COMMANDS, FlagField, Settings, flags, load_settings

Handler = Callable[[Settings, argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with single-line errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True, slots=True)
class Command:
    """One ``charon`` command: its help, what it runs, and its arguments that are not settings."""

    help: str
    run: Handler
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _flag_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """One argparse argument per flag the settings declare for ``command``."""
    by_name: dict[str, list[FlagField]] = {}
    # The command's own flags first, those every command takes last.
    for declared in sorted(flags(), key=lambda f: len(f.flag.commands) if f.flag.commands != ALL_COMMANDS else 99):
        if declared.flag.applies_to(command):
            by_name.setdefault(declared.flag.name, []).append(declared)
    for name, fields in by_name.items():
        first = fields[0]
        paths = ", ".join(f.path for f in fields)
        default = first.info.default
        shown = "unset" if default is None else default
        kw: dict[str, Any] = {"dest": _dest(name), "default": None,
                              "help": f"{first.info.description} (default {shown}; {paths})"}
        annotation = first.info.annotation
        if annotation is bool:
            kw.update(action="store_const", const=True)
        else:
            kw["metavar"] = first.flag.metavar
            if typing.get_origin(annotation) is typing.Literal:
                kw.update(choices=list(typing.get_args(annotation)), metavar=None)
        parser.add_argument(name, **kw)


def _dest(flag: str) -> str:
    return "setting_" + flag.removeprefix("--").replace("-", "_")


def settings_from_args(command: str, args: argparse.Namespace) -> Settings:
    """Effective settings: environment, then the flags given on the command line."""
    overrides: dict[str, dict[str, Any]] = {}
    for declared in flags():
        if not declared.flag.applies_to(command):
            continue
        value = getattr(args, _dest(declared.flag.name), None)
        if value is not None:
            overrides.setdefault(declared.section, {})[declared.field] = value
    return load_settings(overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="charon", description="Optical-photon simulation as a network service.")
    parser.add_argument("--version", action="version", version=f"charon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        if command.arguments is not None:
            command.arguments(p)
        _flag_arguments(p, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args.command, args)
        from charon.runtime import setup_logging

        setup_logging(settings.log.level)
        return COMMANDS[args.command].run(settings, args)
    except CharonError as exc:
        print(f"charon {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


# ---- commands ------------------------------------------------------------------------------------


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


def _detector(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from charon import detector_commands

    path = None if args.path is None else Path(args.path)
    if args.action == "import":
        if path is None or args.output is None:
            raise ConfigError("charon detector import needs GEOMETRY.gdml and -o/--output DETECTOR.npz")
        return detector_commands.import_detector(path, Path(args.output), settings.engine)
    if args.action == "info":
        return detector_commands.info(path, settings.engine)
    if args.out is None:
        raise ConfigError("charon detector plot needs --out PNG")
    return detector_commands.plot(path, Path(args.out), settings.engine)


def _keys(_settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from charon.curve import generate

    public, secret = generate(Path(args.directory), args.name)
    print(f"wrote {public} (public: give it to the peers that must accept this one)")
    print(f"wrote {secret} (secret, mode 0600: only this service or client may read it)")
    return 0


def _clients(settings: Settings, args: argparse.Namespace) -> int:
    from charon import commands

    return commands.run(args.command, settings, args)


# ---- arguments that are not settings -------------------------------------------------------------


def _simulate_args(p: argparse.ArgumentParser, *, events: int = 10, photons: int = 10_000) -> None:
    p.add_argument("--events", type=int, default=events, metavar="N", help=f"events (default {events})")
    p.add_argument("--photons", type=int, default=photons, metavar="M", help=f"photons per event (default {photons})")
    p.add_argument("--source", default="0,0,0", metavar="X,Y,Z", help="point source position in mm")
    p.add_argument("--wavelength", type=float, default=420.0, metavar="NM", help="photon wavelength in nm")
    p.add_argument("--first-event", type=int, default=0, metavar="ID", help="event id of the first event")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a hit map and hit-time histogram")
    p.add_argument("--photon-seed", type=int, default=12345, metavar="N", help="seed of the photon generator")


def _simulate(p: argparse.ArgumentParser) -> None:
    _simulate_args(p)
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="v1: requests in flight at once (a router spreads them over its workers; default 1)")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1",
                   help="v1: one event per request (default); v2: many events per message within the "
                        "server's credit window, results streamed back (pipelined, no --concurrency needed)")
    p.add_argument("--run-seed", type=int, default=0, metavar="N", dest="run_seed",
                   help="v2: the run's seed sent in HELLO (default 0)")


def _demo(p: argparse.ArgumentParser) -> None:
    _simulate_args(p, events=10, photons=100_000)


def _top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-url", metavar="URL", default="http://127.0.0.1:9100/metrics", help="router /metrics URL")
    p.add_argument("--interval", metavar="SECONDS", type=float, default=1.0, help="refresh interval")
    p.add_argument("--once", action="store_true", default=False, help="print one snapshot and exit")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "status"])
    p.add_argument("--namespace", metavar="NS", default="default", help="release namespace")
    p.add_argument("--release", metavar="NAME", default="charon", help="Helm release name")
    p.add_argument("--values", metavar="FILE", default=None, help="values file the release is (to be) installed with")


def _detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["import", "info", "plot"],
                   help="import: GDML (+ RATDB PMTINFO) -> charon detector file; info: a summary (volumes, "
                   "materials, surfaces, PMTs, triangles, fingerprint); plot: sections and PMT positions")
    p.add_argument("path", nargs="?", default=None, metavar="DETECTOR",
                   help="import: the .gdml; info, plot: a .npz or .gdml (default: the built-in reference)")
    p.add_argument("-o", "--output", default=None, metavar="DETECTOR.npz", help="import: detector file to write")
    p.add_argument("--out", default=None, metavar="PNG", help="plot: image to write")


def _keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["generate"],
                   help="generate: a CURVE key pair as ZeroMQ certificates DIR/NAME.key (public) and "
                   "DIR/NAME.key_secret (secret), as zmq.auth.create_certificates writes them")
    p.add_argument("directory", metavar="DIR", help="directory to write to (created if missing)")
    p.add_argument("name", metavar="NAME", help="certificate name, e.g. router, worker-0 or alice")


COMMANDS: dict[str, Command] = {
    "serve": Command("one process that simulates every request itself", _serve),
    "router": Command("queue requests and balance them over workers", _router),
    "worker": Command("simulate requests given by a router", _worker),
    "ping": Command("check that a server answers", _clients),
    "info": Command("show the detector a server simulates", _clients),
    "simulate": Command("send isotropic point-source events and summarise the hits", _clients, _simulate),
    "demo": Command("start an embedded server, simulate against it, stop it", _clients, _demo),
    "config": Command("print the effective configuration as JSON", _config),
    "top": Command("live view of a router's metrics", _top, _top_args),
    "flukaio-gateway": Command("FlukaIO TCP front end for C/Fortran codes", _gateway),
    "detector": Command("import a Geant4/RAT-PAC GDML detector; summarise or draw a detector", _detector,
                        _detector_args),
    "cluster": Command("Kubernetes preflight and release status", _cluster, _cluster_args),
    "keys": Command("make CURVE certificates for encrypted, authenticated sockets", _keys, _keys_args),
}
