"""`privacy-vision` command: run the graph, create keys and pins, fit the floor homography."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from privacy_vision.compliance_cli import add_commands
from privacy_vision.core.analyst_tokens import TokenFileError, issue_token, revoke_token
from privacy_vision.core.calibration import calibrate_from_mot
from privacy_vision.core.geometry import ConfigError
from privacy_vision.core.graph import CAPTURE_MODES, parse_overrides
from privacy_vision.core.pki import PkiPaths, create_pki
from privacy_vision.tools_cli import add_commands as add_tool_commands

DEMO_VIDEO_CANDIDATES = (Path("data/vtest.avi"), Path("../shared/data/video/vtest.avi"))


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


def cmd_run(args: argparse.Namespace) -> int:
    from privacy_vision.runner import GraphOptions, GraphRunner  # loads rclpy: only the run command needs it

    overrides = parse_set(args.set, Path(args.config_dir) / "params.yaml")
    if args.fps is not None:
        overrides.setdefault("camera", {})["fps"] = str(float(args.fps))
    if args.max_frames:
        overrides.setdefault("camera", {})["max_frames"] = str(args.max_frames)
    options = GraphOptions(
        source=args.source or _default_source(),
        config_dir=Path(args.config_dir),
        var_dir=Path(args.var_dir),
        overrides=overrides,
        domain_id=args.domain_id,
        duration_s=args.duration,
        quiet=args.quiet,
        capture=args.capture,
        composed=args.composed,
    )
    print(f"privacy_vision: source {options.source}", flush=True)
    return GraphRunner(options).run()


def cmd_pki(args: argparse.Namespace) -> int:
    paths = PkiPaths(Path(args.out))
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


def main(argv: list[str] | None = None) -> int:
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
        "--domain-id", type=int, help="ROS_DOMAIN_ID for the graph (default: random, isolates parallel runs)"
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

    pki = sub.add_parser(
        "pki",
        help="create a CA, ingest certificate, backup key and device key; print SPKI pins; "
        "or (--analyst/--revoke-analyst) issue or revoke analyst tokens for the read API",
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
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
