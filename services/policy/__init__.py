"""The policy server: a_final = a_base + a_residual over gRPC, with batching and hot weight swap."""
