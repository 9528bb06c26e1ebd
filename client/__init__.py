"""The client SDK: verify nodes (evidence + log), pick one at random, encapsulate, stream."""
