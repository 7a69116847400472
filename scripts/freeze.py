"""Print the venv's PyPI distributions as pins, leaving out the egg-info metadata that ROS packages
built from source (the wheels' own and ours) install beside them: those are not on any index."""

import importlib.metadata

pins = {
    f"{dist.metadata['Name']}=={dist.version}"
    for dist in importlib.metadata.distributions()
    if str(getattr(dist, "_path", "")).endswith(".dist-info")
    and dist.metadata["Name"] not in ("pip", "setuptools", "wheel")
}
print("# Generated from requirements.in by 'make lock'. Do not edit by hand.")
print("\n".join(sorted(pins, key=str.lower)))
