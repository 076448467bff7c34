"""A real Ray cluster of three nodes on this machine, for one test module at a time.

One head node (which runs no trainer) and two worker nodes that carry a ``trainer``
resource, each with 1 CPU, an 80 MB object store and no dashboard, so the machine's two
cores are enough. Health checks are fast (0.5 s x 3), so a crashed node is declared dead
in about 2 s instead of Ray's default 15 s; a drained node (``remove_node``'s default) is
declared dead at once. Start it once per module (``ray_cluster`` in a module fixture):
it takes about 10 s. A test that removes a node leaves one fewer; a test that needs two
worker nodes calls ``ensure_workers(2)`` first, which adds nodes back only when missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MB = 1024 * 1024
NODE = {"num_cpus": 1, "object_store_memory": 80 * MB}
TRAINER = {"trainer": 1.0}
FAST_HEALTH = {
    "health_check_initial_delay_ms": 500,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


class RayCluster:
    """The cluster and the driver connection of this process (namespace ``bastion``)."""

    def __init__(self, workers: int = 2) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={**NODE, "include_dashboard": False, "_system_config": FAST_HEALTH},
        )
        try:
            for _ in range(workers):
                self.cluster.add_node(**NODE, resources=TRAINER)
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, namespace="bastion", log_to_driver=False)
        except BaseException:
            self.shutdown()  # no Ray process outlives a cluster that failed to start
            raise

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node(self, node_id: str) -> Any:
        """The worker node with Ray node id ``node_id``."""
        for n in self.cluster.worker_nodes:
            if n.node_id == node_id:
                return n
        raise LookupError(f"no worker node {node_id} in the cluster")

    def remove(self, node_id: str, *, graceful: bool = True) -> None:
        self.cluster.remove_node(self.node(node_id), allow_graceful=graceful)

    def add_trainer(self) -> None:
        self.cluster.add_node(**NODE, resources=TRAINER)
        self.cluster.wait_for_nodes()

    def ensure_workers(self, count: int) -> None:
        """Add worker nodes until ``count`` are alive (a removed node is gone for good)."""
        while len(self.cluster.worker_nodes) < count:
            self.add_trainer()

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


@contextmanager
def ray_cluster(workers: int = 2) -> Iterator[RayCluster]:
    """A ``RayCluster`` for the ``with`` block (a module fixture's body)."""
    c = RayCluster(workers)
    try:
        yield c
    finally:
        c.shutdown()
