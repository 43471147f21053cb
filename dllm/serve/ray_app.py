"""Scale-out on Ray Serve: N replicas of the same server (each its own model, engine and
scheduler), behind Ray Serve's HTTP proxy and router — no home-made balancer. Each replica builds
the FastAPI app of :mod:`dllm.serve.app` when it starts, so every endpoint, error and guarantee
is the single server's."""

from __future__ import annotations

from omegaconf import OmegaConf


def build_deployment(cfg):
    """A bound Ray Serve application of ``cfg.replicas`` replicas of ``dllm serve``'s app."""
    from ray import serve

    plain = OmegaConf.to_container(cfg, resolve=True)  # picklable: shipped to every replica

    def build_app():
        from dllm.apps.common import build
        from dllm.serve.app import create_app

        node = OmegaConf.create(plain)
        name = node.served_name or str(node.model.get("name_or_path", "dllm"))
        return create_app(node, lambda: (build(node.model), build(node.sampler), name))

    options = {"num_cpus": cfg.replica_cpus}
    if cfg.replica_threads:
        options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(cfg.replica_threads)}}
    deployment = serve.deployment(serve.ingress(build_app)(), name="dllm", num_replicas=cfg.replicas,
                                  ray_actor_options=options, max_ongoing_requests=cfg.max_queue + cfg.max_batch)
    return deployment.bind()
