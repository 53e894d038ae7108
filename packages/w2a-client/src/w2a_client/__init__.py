"""Robot-side client of the w2a policy server (numpy, grpcio, protobuf; no torch)."""

from w2a_client.client import ActionChunk, AsyncPolicyClient, PolicyClient, image_proto

__all__ = ["ActionChunk", "AsyncPolicyClient", "PolicyClient", "image_proto"]
