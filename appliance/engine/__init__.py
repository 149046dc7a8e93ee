"""The delivery engine: sessions, routing, group commit, store and forward (SPEC M4, M5).

Imports downward only: the wire codec's frames and the storage interface.
Never sockets, asyncio transports, or a concrete storage backend.
"""
