"""Helpers shared by the tests (test/) and the benchmarks (bench/): a top-level package of the repository, not part of
privacy_vision, so the installed package ships no test code (setup.py packages privacy_vision* only), while both
tests and benchmarks import it the same way, as the repository root is on the path (the .pth that `make setup` writes,
or a run from the root) instead of each putting test/ on sys.path. core.py needs no rclpy; ros.py, graph.py do."""
