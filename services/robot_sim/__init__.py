"""Simulated robots: Meta-World and LIBERO environments behind one ``simulator.Simulator``
interface, scripted experts, demo collection, sim robots acting through the policy server, and
in-process pilots (``local_eval``)."""
