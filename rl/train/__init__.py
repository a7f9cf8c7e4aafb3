"""The training loop and its parts: configs, rollout and GAE, the one PPO iteration loop,
its strategies (batch schedule, one process or data-parallel) and hooks, the checkpointed
state, and the launcher. See docs/training-loop.md."""
