"""w2a services: world model, planner, policy server, trainer, simulated robots and the CLI."""
