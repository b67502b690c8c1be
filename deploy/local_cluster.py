"""`--address local`: a Ray cluster for one run alone, started inside the driver and gone with it.

Private: its files live in a fresh temporary folder, so `ray.init("auto")`, `ray status` or `ray
stop` elsewhere on the machine never find it (nor does it find theirs); `ray.shutdown()` stops its
processes (Ray's own start them bound to the driver: they also die if the driver is killed). Closed:
every port it opens (GCS, raylet, workers, agents) listens on the loopback address only, and Ray
2.60 turns token authentication on for it.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("cxr_rl.driver")

# Ray's switch for single-machine clusters (its name is historical): off, Ray takes 127.0.0.1 as the
# node's address instead of the machine's network address, and every server it starts binds to it.
# `ray start --node-ip-address 127.0.0.1` alone does not do this: Ray swaps a loopback address for
# the network one. Read when Ray is imported; Ray's own processes inherit it from the environment.
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_private_cluster(namespace: str) -> Path:
    """Start the run's own cluster and connect to it; returns its folder (remove it after
    `ray.shutdown()` with `remove_private_cluster_files`)."""
    os.environ[SINGLE_MACHINE_SWITCH] = "0"
    # after the switch above is set: Ray reads it when it is imported
    import ray
    from ray._private import ray_constants  # pinned Ray; no public API for this

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the switch was set
    # Short: Ray's unix sockets live below this folder and their paths must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="cxr-rl-ray-"))
    try:
        ray.init(
            address="local",  # never a cluster that `ray start` left running on this machine
            _temp_dir=str(folder),
            namespace=namespace,
            include_dashboard=False,
            log_to_driver=False,
        )
    except BaseException:
        remove_private_cluster_files(folder)
        raise
    address = ray.get_runtime_context().gcs_address
    log.info(
        "this run's private Ray cluster is at %s (e.g. for `cxr-rl reward swap --address %s`)",
        address,
        address,
    )
    return folder


def remove_private_cluster_files(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
