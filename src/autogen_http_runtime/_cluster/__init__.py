"""Several hosts acting as one runtime, through a shared engine (Redis): see ``docs/cluster.md``.

Nothing here is imported unless ``HttpAgentService(redis_url=...)`` asks for it: the
engine's client is the optional ``[cluster]`` extra.
"""
