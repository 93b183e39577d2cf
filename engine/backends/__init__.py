"""Backends: where and how jobs are queued and rendered, behind one `Backend` Protocol (base.py).

The thread worker (worker.py, with its fair queue, batching and retry policy), the engine child process
(process.py) and Ray replicas (ray_backend.py, ray_replica.py), the bot-side dispatcher they share (dispatch.py)
and their wire format (wire.py); factory.py picks one from the config. May import the engine's top-level modules
and engine.render / engine.models / engine.networks; nothing of `bot`, Discord or SQL. Imports nothing itself.
"""
