"""`privacy-vision` command: run the graph, create keys and pins, fit the floor homography."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from privacy_vision.compliance_cli import add_commands
from privacy_vision.core.analyst_tokens import TokenFileError, issue_token, revoke_token
from privacy_vision.core.calibration import calibrate_from_mot
from privacy_vision.core.geometry import ConfigError
from privacy_vision.core.graph import CAPTURE_MODES, RUN_ANALYST, parse_overrides, state_paths
from privacy_vision.core.pki import PkiPaths, create_device_key, create_pki, revoke_device
from privacy_vision.core.registration import registered_values, write_registration
from privacy_vision.core.sources import SourceError, classify_source
from privacy_vision.tools_cli import add_commands as add_tool_commands

DEMO_VIDEO_CANDIDATES = (Path("data/vtest.avi"), Path("../shared/data/video/vtest.avi"))
MAX_DOMAIN_ID = 232  # the largest ROS_DOMAIN_ID whose ports fit (ROS 2 documentation: domain IDs 0-232)


def parse_set(items: list[str], params_file: Path) -> dict[str, dict[str, str]]:
    """--set NODE.PARAM=VALUE pairs, or exit with the reason."""
    try:
        return parse_overrides(items, params_file)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _default_source() -> str:
    for candidate in DEMO_VIDEO_CANDIDATES:
        if candidate.is_file():
            return str(candidate)
    raise SystemExit(
        "no --source given and the demo video is missing: run 'make setup' (it fetches vtest.avi) or pass --source"
    )


def domain_id(given: int | None) -> int | None:
    """--domain-id, else ROS_DOMAIN_ID when it is set (as every ROS tool honours it), else None (the runner picks
    one at random, so that parallel runs do not meet)."""
    text = str(given) if given is not None else os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 <= int(text) <= MAX_DOMAIN_ID:
        origin = "--domain-id" if given is not None else "ROS_DOMAIN_ID"
        raise SystemExit(f"{origin} must be an integer from 0 to {MAX_DOMAIN_ID}, got {text!r}")
    return int(text)


def cmd_run(args: argparse.Namespace) -> int:
    from privacy_vision.runner import GraphOptions, GraphRunner  # loads rclpy: only the run command needs it

    source = args.source or _default_source()
    try:
        classify_source(source)  # the rest (does it decode?) is the configuration check's, before anything starts
    except SourceError as error:
        raise SystemExit(f"privacy-vision run: {error}") from None
    overrides = parse_set(args.set, Path(args.config_dir) / "params.yaml")
    if args.fps is not None:
        overrides.setdefault("camera", {})["fps"] = str(float(args.fps))
    if args.max_frames:
        overrides.setdefault("camera", {})["max_frames"] = str(args.max_frames)
    options = GraphOptions(
        source=source,
        config_dir=Path(args.config_dir),
        var_dir=Path(args.var_dir),
        overrides=overrides,
        domain_id=domain_id(args.domain_id),
        duration_s=args.duration,
        quiet=args.quiet,
        capture=args.capture,
        composed=args.composed,
    )
    print(f"privacy_vision: source {options.source}", flush=True)
    return GraphRunner(options).run()


def cmd_pki_devices(args: argparse.Namespace, paths: PkiPaths) -> int:
    """--device NAME [--config PARAMS] and --revoke-device NAME: one key per device, and its registration."""
    try:
        for name in args.revoke_device:
            removed = revoke_device(paths, name)
            print(f"device '{name}': {'key and registration removed' if removed else 'had no key'} in {paths.devices}")
        for name in args.device:
            key, created = create_device_key(paths, name)
            state = "new key written to" if created else "key kept (revoke it first to replace it):"
            print(f"device '{name}': {state} {key} (mode 600); copy it to that device only, as the uplink's key_file")
            if args.config:
                values = registered_values(args.config, parse_set(args.set, Path(args.config)))
                source = " ".join([str(args.config), *(f"--set {item}" for item in args.set)])
                write_registration(paths.device_registration(name), name, values, source)
                stated = ", ".join(f"{field} {value}" for field, value in values.items())
                print(f"device '{name}': registered {stated} in {paths.device_registration(name)}")
    except (ValueError, OSError) as error:
        print(f"pki: {error}", file=sys.stderr)
        return 2
    print(f"the ingest admits every device in {paths.devices} with --devices {paths.devices} (re-read when it changes)")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """The dashboard on a run's store: a read-only ingest (no device key, no POST) with the run's analyst token."""
    from privacy_vision.cloud import ingest  # aiohttp: only this command needs it

    state = state_paths(args.var_dir)
    pki = PkiPaths(state["pki"])
    token_file = pki.analyst_token(RUN_ANALYST)
    if not state["ingest"].is_file() or not token_file.is_file():
        print(
            f"dashboard: no run's store in {args.var_dir} ({state['ingest']} and {token_file}): run the graph first "
            "(make demo), or pass --var-dir",
            file=sys.stderr,
        )
        return 2
    print(f"dashboard of {state['ingest']} (read-only); the page asks for the analyst token, which is in {token_file}:")
    print(f"  {token_file.read_text().strip()}")
    print(f"the certificate is signed by this run's own CA ({pki.ca_cert}): import it, or accept the browser's warning")
    print("Ctrl-C stops the dashboard; the run's store is not changed", flush=True)
    command = ["--read-only", "--host", args.host, "--port", str(args.port), "--db", str(state["ingest"])]
    return ingest.main(command + pki.reader_arguments())


def cmd_pki(args: argparse.Namespace) -> int:
    paths = PkiPaths(Path(args.out))
    if args.device or args.revoke_device:  # device keys only: the CA, certificates and tokens stay as they are
        return cmd_pki_devices(args, paths)
    if args.analyst or args.revoke_analyst:  # tokens only: the CA, certificates and device keys stay as they are
        paths.root.mkdir(parents=True, exist_ok=True)
        try:
            for name in args.revoke_analyst:
                removed = revoke_token(paths.analyst_tokens, name)
                print(f"analyst '{name}': {'revoked' if removed else 'had no token'} in {paths.analyst_tokens}")
            for name in args.analyst:
                token = issue_token(paths.analyst_tokens, paths.analyst_token(name), name)
                print(
                    f"analyst '{name}': new token (any earlier one is revoked), written to {paths.analyst_token(name)} (mode 600):"
                )
                print(f"  {token}")
        except (TokenFileError, ValueError) as error:
            print(f"pki: {error}", file=sys.stderr)
            return 2
        print(
            f"the ingest reads the hashes with --analyst-tokens {paths.analyst_tokens}; it re-reads the file when it changes"
        )
        return 0
    hosts = tuple(args.hostname) or ("localhost",)
    primary, backup = create_pki(args.out, hostnames=hosts, ips=tuple(args.ip) or ("127.0.0.1", "::1"))
    print(f"wrote CA, server certificate and key, backup key and device HMAC key to {args.out}")
    print("put these pins in the uplink's 'pins' parameter (primary, backup):")
    print(f'  pins: ["{primary}", "{backup}"]')
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    try:
        report = calibrate_from_mot(args.gt, args.out)
    except ConfigError as error:
        print(f"calibrate: {error}", file=sys.stderr)
        return 2
    print(
        f"homography written to {args.out} from {report['pairs']} foot-point pairs; reprojection error "
        f"median {report['median_error_m']} m, p90 {report['p90_error_m']} m"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and option (test_docs parses the docs' command lines with it)."""
    parser = argparse.ArgumentParser(
        prog="privacy-vision", description="privacy_vision: anonymous spatial analytics on ROS 2"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole graph (six nodes + local ingest) on a video, folder or camera")
    run.add_argument(
        "--source", help="video file, image folder, /dev/videoN, camera index or URL (default: the demo video)"
    )
    run.add_argument("--config-dir", default="config", help="folder with params.yaml, zones.yaml, fastdds.xml")
    run.add_argument(
        "--var-dir", default="var", help="state folder: keys, release store (outbox, ledger), ingest database, logs"
    )
    run.add_argument(
        "--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="override a parameter (repeatable)"
    )
    run.add_argument("--fps", type=float, help="camera rate limit (0 = the file's own rate)")
    run.add_argument("--max-frames", type=int, default=0, help="stop after this many frames")
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = at end of stream)")
    run.add_argument(
        "--domain-id",
        type=int,
        help="ROS_DOMAIN_ID for the graph (default: $ROS_DOMAIN_ID when set, else random, which isolates parallel runs)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument(
        "--capture",
        choices=CAPTURE_MODES,
        default="camera",
        help="camera: a camera node publishes /camera/image_raw to the detection node (default); in_process: the "
        "detection node reads the source itself and no image topic exists (camera.* settings apply to it)",
    )
    run.add_argument(
        "--composed",
        action="store_true",
        help="all nodes as separate ROS nodes in one process on one executor (less memory; one crash stops them all); "
        "default: one process per node",
    )
    run.set_defaults(handler=cmd_run)

    dashboard = sub.add_parser(
        "dashboard",
        help="serve the analyst dashboard on a run's store (var/ by default), read-only, with the run's analyst token",
    )
    dashboard.add_argument("--var-dir", default="var", help="the run's state folder (privacy-vision run --var-dir)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8443, help="port (0 picks a free one, printed at start)")
    dashboard.set_defaults(handler=cmd_dashboard)

    pki = sub.add_parser(
        "pki",
        help="create a CA, ingest certificate, backup key and device key; print SPKI pins; "
        "or (--analyst/--revoke-analyst) issue or revoke analyst tokens for the read API; "
        "or (--device/--revoke-device) create or revoke one device's own key and registration",
    )
    pki.add_argument("--out", default="var/pki", help="output folder")
    pki.add_argument("--hostname", action="append", default=[], help="DNS name of the ingest (repeatable)")
    pki.add_argument("--ip", action="append", default=[], help="IP address of the ingest (repeatable)")
    pki.add_argument(
        "--analyst",
        action="append",
        default=[],
        metavar="NAME",
        help="only issue a read-API token for this analyst (repeatable; replaces the analyst's earlier token)",
    )
    pki.add_argument(
        "--revoke-analyst", action="append", default=[], metavar="NAME", help="only revoke this analyst's token"
    )
    pki.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NAME",
        help="only create this device's own key in OUT/devices/NAME.key (repeatable; an existing key is kept)",
    )
    pki.add_argument(
        "--config",
        metavar="PARAMS",
        help="with --device: register the privacy configuration of this parameters file (its releases must state "
        "it, or the ingest refuses them) in OUT/devices/NAME.json",
    )
    pki.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="with --config: a parameter the device overrides (as 'privacy-vision run --set')",
    )
    pki.add_argument(
        "--revoke-device",
        action="append",
        default=[],
        metavar="NAME",
        help="only remove this device's key and registration (an ingest reading --devices refuses it within a second)",
    )
    pki.set_defaults(handler=cmd_pki)

    calibrate = sub.add_parser(
        "calibrate", help="fit the image->floor homography from MOT ground truth with ground-plane columns"
    )
    calibrate.add_argument(
        "--gt", default="../shared/data/mot15/PETS09-S2L1/gt/gt.txt", help="MOT gt.txt with world x, y columns"
    )
    calibrate.add_argument("--out", default="config/homography_pets.yaml", help="YAML to write")
    calibrate.set_defaults(handler=cmd_calibrate)

    add_commands(sub)
    add_tool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
