"""The skill planner: instruction -> ordered atomic skills, and skill <-> video-segment alignment."""
