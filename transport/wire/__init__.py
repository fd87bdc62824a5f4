"""The wire: msgpack frames, JSON-RPC classification and the envelope scanner. Pure: no zmq, no I/O."""
